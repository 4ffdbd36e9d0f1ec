"""HPS v2.1 (Wu et al. 2023): open_clip ViT-H-14 fine-tuned on HPD v2 human preferences.

score = cos(image, text), no logit scale; raw values are about 0.20-0.35 (the HPS tables print 100 x score).
Flow-GRPO's hpsv2 reward is the same raw cosine. The official package (``hpsv2``) is not a dependency: we load ``HPS_v2.1_compressed.pt`` (an open_clip state dict) into transformers' CLIPModel through
``scorers.clip.openclip_to_hf``, and redo its preprocessing: ToTensor, ResizeMaxSize(224) on the tensor (bicubic,
antialiased as torchvision >= 0.17 does; ``antialias=False`` reproduces older torchvision), zero pad, normalise.
The reference runs under fp16 autocast on CUDA; our default is fp32 (pass dtype="float16" to match it on a GPU).
Prompts use the CLIP BPE tokenizer (same vocabulary as open_clip's), truncated at 77 tokens; open_clip also runs
ftfy and HTML unescaping first, which only matters for unusual unicode.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from PIL import Image

from flowbase.errors import MissingError
from flowmodels.models import resolve_device, resolve_dtype
from scorers.base import Requirements, Scores
from scorers.clip import (
    image_embeds,
    load_openclip,
    load_tokenizer,
    resize_max_pad_batch,
    text_embeds_unique,
)
from scorers.hub import resolve
from scorers.images import to_rgb_batch

log = logging.getLogger(__name__)

CHECKPOINT = "HPS_v2.1_compressed.pt"
WEIGHTS = f"xswu/HPSv2@697403c78157020a1ae59d23f111aa58ced35b0a:{CHECKPOINT}"
TOKENIZER = (
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K@1c2b8495b28150b8a4922ee1c8edee224c284c0c:*.json,*.txt"
)
# open_clip ViT-H-14: vision width 1280 with head_width 80 -> 16 heads; text width 1024, 16 heads
VISION_HEADS = 16
TEXT_HEADS = 16


class HPS:
    """HPS v2.1: raw = reward = cosine(image, prompt)."""

    name = "hps"
    version = "2.1"
    requires = Requirements(weights=(WEIGHTS, TOKENIZER), gpu_gb=5.0)

    def __init__(
        self,
        weights: str = WEIGHTS,
        tokenizer: str = TOKENIZER,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 32,
        antialias: bool = True,
        vision_heads: int = VISION_HEADS,
        text_heads: int = TEXT_HEADS,
        allow_pickle: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.antialias = antialias
        ckpt = resolve(weights, self.name)
        if ckpt.is_dir():  # a local copy of the hub repo holds v2.0 and v2.1: take v2.1 by name
            files = [ckpt / CHECKPOINT] if (ckpt / CHECKPOINT).exists() else []
            files = files or sorted(ckpt.glob("*.pt")) + sorted(ckpt.glob("*.safetensors"))
            if len(files) != 1:
                raise MissingError(
                    f"hps: {ckpt} should hold exactly one .pt/.safetensors checkpoint, found {len(files)}"
                )
            ckpt = files[0]
        self.model = load_openclip(
            ckpt, vision_heads, text_heads, self.device, self.dtype, allow_pickle=allow_pickle
        )
        self.tokenizer = load_tokenizer(resolve(tokenizer, self.name, arg="tokenizer"))
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
        txt = text_embeds_unique(self.model, self.tokenizer, prompts, self.batch_size)
        img = torch.cat(
            [
                image_embeds(
                    self.model,
                    resize_max_pad_batch(rgb[i : i + self.batch_size], self.size, self.antialias),
                )
                for i in range(0, len(rgb), self.batch_size)
            ]
        )
        cos = (img * txt).sum(-1).tolist()
        return Scores(values=cos, rewards=list(cos), details=None)
