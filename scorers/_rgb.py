"""Turn whatever a caller hands a scorer into 8-bit RGB PIL images, or fail with a clear message.

Private stop-gap for the ocr/jpeg/deqa/judge/remote scorers until the shared ``scorers/images.py`` lands; the
rules are meant to be the same: grayscale and palette images are expanded to RGB, alpha is composited over
white (a transparent pixel's colour is undefined, white is what a viewer shows), 16-bit data is scaled by 1/257
(not clipped, which is what ``Image.convert`` does), float data must lie in [0, 1], and empty, undecodable or
absurdly large images are refused with the index of the offending image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

MAX_PIXELS = (
    8192 * 8192
)  # ~67 MP: far above any generation size, below what eats the RAM of a worker


class BadImageError(ValueError):
    """An input image that no scorer can use."""


def _from_array(a: np.ndarray, i: int) -> Image.Image:
    """HW / HWC array of uint8, uint16, bool or float in [0, 1] -> RGB image."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise BadImageError(f"image {i}: array of shape {a.shape}; expected HxW, HxWx3 or HxWx4")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = np.round(a / 257.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and (not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0):
            raise BadImageError(f"image {i}: float pixels must lie in [0, 1]")
        a = np.round(a * 255.0).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise BadImageError(
            f"image {i}: pixel type {a.dtype} is not supported (use uint8 or uint16)"
        )
    return Image.fromarray(np.ascontiguousarray(a))  # uint8 HW / HWx3 / HWx4 -> L / RGB / RGBA


def _wide_to_8bit(img: Image.Image, i: int) -> Image.Image:
    """16-bit ('I;16*', 'I') or float ('F') single-channel image -> 'L'."""
    a = np.asarray(img)
    if img.mode == "F":
        return _from_array(a.astype(np.float32), i)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise BadImageError(
            f"image {i}: 32-bit pixel values outside 0..65535 cannot be read as 16-bit"
        )
    return _from_array(a.astype(np.uint16), i)


def to_rgb(image: Any, index: int = 0) -> Image.Image:
    """One image (PIL or numpy array) -> a loaded 8-bit RGB PIL image."""
    if isinstance(image, np.ndarray):
        image = _from_array(image, index)
    if not isinstance(image, Image.Image):
        raise BadImageError(
            f"image {index}: expected a PIL image or numpy array, got {type(image).__name__}"
        )
    w, h = image.size
    if w == 0 or h == 0:
        raise BadImageError(f"image {index}: empty image ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise BadImageError(
            f"image {index}: {w}x{h} is {w * h / 1e6:.0f} MP, over the {MAX_PIXELS / 1e6:.0f} MP limit; "
            "downscale it first"
        )
    try:
        image.load()
    except Exception as e:  # truncated or corrupt file behind a lazily decoded image
        raise BadImageError(f"image {index}: cannot be decoded ({e})") from None
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _wide_to_8bit(image, index)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBa", "La"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def to_rgb_batch(images: Sequence[Any]) -> list[Image.Image]:
    """A list of images -> 8-bit RGB PIL images; raises BadImageError naming the first bad one."""
    return [to_rgb(im, i) for i, im in enumerate(images)]


def check_lengths(
    images: Sequence[Any], prompts: Sequence[str], meta: Sequence[Any] | None
) -> None:
    """Raise ValueError unless images, prompts and (optional) meta are aligned."""
    if len(prompts) != len(images):
        raise ValueError(
            f"got {len(images)} images but {len(prompts)} prompts; they must be aligned"
        )
    if meta is not None and len(meta) != len(images):
        raise ValueError(
            f"got {len(images)} images but {len(meta)} meta entries; they must be aligned"
        )
