"""Model outputs as images: the one conversion every caller (scorers' rewards, the harness's PNGs) goes through."""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor


def to_pil(images: Tensor) -> list[Image.Image]:
    """[B, 3, H, W] floats in [0, 1] -> 8-bit RGB PIL images, rounded as diffusers' ``numpy_to_pil`` does (clamped
    first: a value outside [0, 1] must not wrap around in uint8)."""
    # in place after the first op (one temporary, not four), and contiguous before PIL (which copies otherwise)
    arr = (
        images.detach()
        .float()
        .clamp(0, 1)
        .mul_(255)
        .round_()
        .to(torch.uint8)
        .permute(0, 2, 3, 1)
        .contiguous()
        .cpu()
        .numpy()
    )
    return [Image.fromarray(a) for a in arr]
