"""JPEG compressibility: Flow-GRPO's toy reward, minus the image's JPEG size.

Flow-GRPO (``flow_grpo/rewards.py`` ``jpeg_incompressibility`` / ``jpeg_compressibility``) saves each image with
PIL as JPEG at quality 95 (PIL's default chroma subsampling), takes the size in kB (bytes / 1000) and trains on
-size/500. We report the raw value as -size in kB (so higher is better, like every other scorer) and the reward as
-size/500. Prompts are ignored. Pure PIL, no model, CPU only.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from scorers.base import Requirements, Scores
from scorers.images import check_lengths, to_rgb_batch

QUALITY = 95
REWARD_DIVISOR = 500.0


def jpeg_kilobytes(image: Image.Image, quality: int = QUALITY) -> float:
    """Size of the image saved by PIL as JPEG at ``quality``, in kB (1000 bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.tell() / 1000.0


class JpegCompressibility:
    """Flow-GRPO JPEG compressibility: value = -(JPEG q95 size in kB), reward = value / 500."""

    name = "jpeg"
    version = "1"
    requires = Requirements()

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        check_lengths(images, prompts, meta)
        sizes = [jpeg_kilobytes(im) for im in to_rgb_batch(images)]
        return Scores(
            values=[-s for s in sizes],
            rewards=[-s / REWARD_DIVISOR for s in sizes],
            details=[{"jpeg_kb": s, "quality": QUALITY} for s in sizes],
        )
