"""Rendered-text test images (Pillow's bundled FreeType font, so no system fonts are needed)."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont


def render_text(
    text: str,
    size: tuple[int, int] = (320, 128),
    background: tuple[int, ...] = (235, 228, 210),
    ink: tuple[int, ...] = (20, 20, 60),
    mode: str = "RGB",
    font_size: int = 36,
) -> Image.Image:
    """An image with ``text`` written in one line near the middle."""
    image = Image.new(mode, size, background if mode != "L" else background[0])
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=font_size)
    draw.text(
        (16, size[1] // 2 - font_size // 2), text, fill=ink if mode != "L" else ink[0], font=font
    )
    return image
