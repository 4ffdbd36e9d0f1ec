"""Weightless rewards on pixel statistics: mean brightness and closeness to a colour.

They need no model weights, so tests, the tiny-model demo and GRPO learning checks can run anywhere. Nobody
benchmarks on them; they are honest signals an SD3 LoRA can learn to move within a few dozen steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from flowbase.errors import InputError
from scorers.base import Requirements, Scores

# Rec. 709 luma weights on the (gamma-encoded) RGB values
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float64)


def _pixels(images: list[Image.Image], prompts: list[str]) -> list[np.ndarray]:
    """Each image as float RGB in [0, 1], shape [H, W, 3]; checks the inputs line up."""
    if len(images) != len(prompts):
        raise InputError(f"{len(images)} images but {len(prompts)} prompts")
    out = []
    for i, im in enumerate(images):
        if not isinstance(im, Image.Image):
            raise TypeError(f"image {i} is a {type(im).__name__}, not a PIL image")
        if im.width == 0 or im.height == 0:
            raise InputError(f"image {i} is empty ({im.width}x{im.height})")
        out.append(np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0)
    return out


class Brightness:
    """Mean Rec. 709 luma of the image, in [0, 1] (value and reward are the same)."""

    name = "brightness"
    version = "1"
    requires = Requirements()

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        values = [float((px @ _LUMA).mean()) for px in _pixels(images, prompts)]
        return Scores(values=values, rewards=list(values))


class ColourCloseness:
    """``1 - mean_pixels ||rgb - target|| / sqrt(3)``, in [0, 1]: 1 when every pixel is the target colour."""

    name = "colour"
    version = "1"
    requires = Requirements()

    def __init__(self, target: tuple[float, float, float] = (1.0, 0.0, 0.0)) -> None:
        t = np.asarray(target, dtype=np.float64)
        if t.shape != (3,) or (t < 0).any() or (t > 1).any():
            raise InputError(f"target colour must be 3 values in [0, 1], got {target}")
        self.target = t

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        values = [
            float(1.0 - np.linalg.norm(px - self.target, axis=-1).mean() / np.sqrt(3.0))
            for px in _pixels(images, prompts)
        ]
        return Scores(values=values, rewards=list(values))
