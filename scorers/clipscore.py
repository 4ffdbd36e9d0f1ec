"""CLIPScore with OpenAI CLIP ViT-L/14: text-image cosine similarity.

Raw value is the torchmetrics / Hessel et al. convention, max(100 * cos, 0) (typical 25-35). The reward is the plain
cosine, which is Flow-GRPO's later ``clipscore`` reward (CLIP ViT-L/14 logits_per_image / 100 = cosine, because
exp(logit_scale) is 100 for this checkpoint). Preprocessing follows transformers' CLIPProcessor (as torchmetrics):
short side 224 bicubic, centre crop with floor offsets, OpenAI mean/std; prompts truncated at 77 tokens. The CLIP-L
instance is shared with the aesthetic scorer (``scorers.clip``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from PIL import Image

from flowmodels.models import resolve_device, resolve_dtype
from scorers.base import Requirements, Scores
from scorers.clip import load_hf_clip, load_tokenizer, pair_embeds
from scorers.hub import resolve
from scorers.images import to_rgb_batch

log = logging.getLogger(__name__)

WEIGHTS = "openai/clip-vit-large-patch14@32bd64288804d66eefd0ccbe215aa642df71cc41"


def clipscore_from_cosine(cos: torch.Tensor) -> torch.Tensor:
    """The torchmetrics CLIPScore: max(100 * cos, 0)."""
    return (100.0 * cos).clamp(min=0.0)


class CLIPScore:
    """CLIPScore (ViT-L/14): raw = max(100 cos, 0), reward = cos."""

    name = "clipscore"
    version = "1"
    requires = Requirements(weights=(WEIGHTS,), gpu_gb=2.0)

    def __init__(
        self,
        weights: str = WEIGHTS,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 32,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        folder = resolve(weights, self.name)
        self.model = load_hf_clip(folder, self.device, self.dtype)
        self.tokenizer = load_tokenizer(folder)
        self.size = int(self.model.config.vision_config.image_size)

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        """Score each (image, prompt) pair."""
        rgb = to_rgb_batch(images, prompts, meta)
        if not rgb:
            return Scores([], [], [])
        img, txt = pair_embeds(self.model, self.tokenizer, rgb, prompts, self.size, self.batch_size)
        cos = (img * txt).sum(-1)
        return Scores(
            values=clipscore_from_cosine(cos).tolist(),
            rewards=cos.tolist(),
            details=[{"cosine": c} for c in cos.tolist()],
        )
