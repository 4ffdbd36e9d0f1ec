"""Input checks shared by every scorer: batch lengths, and any PIL image -> 8-bit RGB.

Scorers receive whatever users hand them: grayscale, palette, RGBA, 16-bit PNGs, truncated files, 0 x 0 images.
The reference scorers all call ``image.convert("RGB")``; that is right for 8-bit modes but clips 16-bit grayscale
to 255, so 16-bit modes are rescaled here first. Alpha is dropped the way ``convert("RGB")`` drops it (no
compositing), which keeps parity with the reference preprocessors. EXIF orientation is not applied, for the same
reason. Errors are ``ValueError`` / ``TypeError`` naming the index of the bad item, so a user can find it.

Use ``to_rgb_batch(images, prompts, meta)`` at the top of a scorer's ``__call__``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from flowbase.errors import InputError

log = logging.getLogger(__name__)

# Pillow's own decompression-bomb limit (about 89.5 MP); above it we refuse rather than run out of memory.
MAX_PIXELS = 89_478_485

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def check_lengths(
    images: Sequence[Any], prompts: Sequence[str] | None = None, meta: Sequence[Any] | None = None
) -> None:
    """Raise ValueError unless images, prompts and meta (when given) have the same length."""
    n = len(images)
    if prompts is not None and len(prompts) != n:
        raise InputError(f"got {n} images but {len(prompts)} prompts; pass one prompt per image")
    if meta is not None and len(meta) != n:
        raise InputError(f"got {n} images but {len(meta)} metadata entries; pass one per image")


def _rescale_to_uint8(a: np.ndarray, top: float) -> Image.Image:
    """Map [0, top] linearly onto [0, 255] and return a mode-L image."""
    return Image.fromarray(
        np.clip(np.round(a.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    )


def from_array(a: np.ndarray, index: int = 0) -> Image.Image:
    """An HxW / HxWx3 / HxWx4 array (uint8, uint16, bool, or float in [0, 1]) as a PIL image."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InputError(f"image {index}: array of shape {a.shape}; expected HxW, HxWx3 or HxWx4")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        return (
            _rescale_to_uint8(a, 65535.0)
            if a.ndim == 2
            else Image.fromarray(np.round(a / 257.0).astype(np.uint8))
        )
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and (not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0):
            raise InputError(f"image {index}: float pixels must be finite and lie in [0, 1]")
        a = np.round(a * 255.0).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise InputError(
            f"image {index}: pixel type {a.dtype} is not supported (use uint8 or uint16)"
        )
    return Image.fromarray(np.ascontiguousarray(a))


def to_rgb(image: Image.Image | np.ndarray, index: int = 0) -> Image.Image:
    """Return ``image`` (PIL or a numpy array) as a decoded 8-bit RGB PIL image; errors name ``index``."""
    if isinstance(image, np.ndarray):
        image = from_array(image, index)
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"image {index}: expected a PIL.Image.Image or numpy array, got {type(image).__name__}"
        )
    try:
        image.load()  # PIL decodes lazily: a truncated or corrupt file fails here, not at open()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise InputError(f"image {index}: cannot be decoded ({type(e).__name__}: {e})") from None
    w, h = image.size
    if w < 1 or h < 1:
        raise InputError(f"image {index}: has zero size ({w} x {h})")
    if w * h > MAX_PIXELS:
        raise InputError(
            f"image {index}: {w} x {h} is over {MAX_PIXELS} pixels; downscale it before scoring"
        )
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT:
        image = _rescale_to_uint8(np.asarray(image), 65535.0)
    elif mode == "I":  # 32-bit ints: what Pillow gives for many 16-bit grayscale PNGs
        a = np.asarray(image)
        if a.min() < 0 or a.max() > 65535:
            raise InputError(
                f"image {index}: 32-bit integer values span [{a.min()}, {a.max()}], outside 16-bit range"
            )
        image = _rescale_to_uint8(a, 65535.0)
    elif mode == "F":
        a = np.asarray(image)
        if not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0:
            raise InputError(f"image {index}: float image must hold finite values in [0, 1]")
        image = _rescale_to_uint8(a, 1.0)
    if mode == "La":  # premultiplied grey+alpha has no direct path to RGB in Pillow
        image = image.convert("LA")
    try:
        return image.convert("RGB")
    except ValueError as e:
        raise InputError(f"image {index}: mode {mode!r} cannot be converted to RGB ({e})") from None


def to_rgb_batch(
    images: Sequence[Image.Image],
    prompts: Sequence[str] | None = None,
    meta: Sequence[Any] | None = None,
) -> list[Image.Image]:
    """Check lengths, then return every image as 8-bit RGB (see ``to_rgb``)."""
    if isinstance(images, Image.Image):
        raise TypeError("images must be a list of PIL images, not a single image")
    check_lengths(images, prompts, meta)
    if prompts is not None:
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompt {i}: expected str, got {type(p).__name__}")
    return [to_rgb(im, i) for i, im in enumerate(images)]
