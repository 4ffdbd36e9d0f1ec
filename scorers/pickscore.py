"""PickScore (Kirstain et al. 2023): a CLIP-H fine-tuned on Pick-a-Pic human preferences.

score = exp(logit_scale) * cos(text, image), with the checkpoint's own logit_scale (exp is about 100), so SD-class
images land around 20-23. Flow-GRPO trains on score / 26 (flow_grpo/pickscore_scorer.py; the maintainer confirmed
in flow_grpo issue #100 that the division is only for the reward). Images go through the CLIP-H processor of
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (short side 224 bicubic, centre crop with transformers' floor offsets,
OpenAI mean/std); prompts are truncated at 77 tokens. fp32 by default, as Flow-GRPO.
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

WEIGHTS = "yuvalkirstain/PickScore_v1@a4e4367c6dfa7288a00c550414478f865b875800"
PROCESSOR = (
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K@1c2b8495b28150b8a4922ee1c8edee224c284c0c:*.json,*.txt"
)
REWARD_SCALE = 26.0  # Flow-GRPO: reward = PickScore / 26


def pickscore_from_embeddings(
    image: torch.Tensor, text: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """exp(logit_scale) * <image, text> for unit rows. image, text: [B, D] -> [B]."""
    return torch.tensor(logit_scale, dtype=torch.float64).exp().item() * (image * text).sum(-1)


class PickScore:
    """PickScore v1: raw value ~21, reward = raw / 26."""

    name = "pickscore"
    version = "1"
    requires = Requirements(weights=(WEIGHTS, PROCESSOR), gpu_gb=5.0)

    def __init__(
        self,
        weights: str = WEIGHTS,
        processor: str = PROCESSOR,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 32,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.model = load_hf_clip(resolve(weights, self.name), self.device, self.dtype)
        self.tokenizer = load_tokenizer(resolve(processor, self.name, arg="processor"))
        self.size = int(self.model.config.vision_config.image_size)
        self.logit_scale = float(self.model.logit_scale.detach().float().cpu())

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
        raw = pickscore_from_embeddings(img, txt, self.logit_scale).tolist()
        cos = (img * txt).sum(-1).tolist()
        return Scores(
            values=raw,
            rewards=[v / REWARD_SCALE for v in raw],
            details=[{"cosine": c} for c in cos],
        )
