"""ImageReward v1.0 (Xu et al. 2023): BLIP ViT-L/16 + BERT with cross-attention + an affine head, z-normalised.

For a prompt and an image: tokenize the prompt with bert-base-uncased (+ BLIP's [DEC]/[ENC] specials) padded and
truncated to 35 word pieces, [CLS] kept; encode the image (short side 224 bicubic on the PIL image, torchvision's
centre crop, OpenAI mean/std); run the text encoder with cross-attention to all image tokens; take [CLS]; apply the
MLP head (fp32); reward = (y - 0.16717362830052426) / 1.0333394966054072. The value is a z-score (62% of SD1.4
images fall in [-1, 1]). Flow-GRPO trains on this raw value. The README's golden values for its four benchmark
images are checked by a slow test. Upstream scores one pair at a time; we batch (same math, float op order only).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from flowbase.errors import MissingError
from flowmodels.models import resolve_device, resolve_dtype
from scorers.base import Requirements, Scores
from scorers.blip import BlipImageReward, MedConfig
from scorers.clip import center_crop_batch, read_checkpoint
from scorers.hub import resolve
from scorers.images import to_rgb_batch

log = logging.getLogger(__name__)

WEIGHTS = (
    "zai-org/ImageReward@5736be03b2652728fb87788c9797b0570450ab72:ImageReward.pt,med_config.json"
)
TOKENIZER = "google-bert/bert-base-uncased@86b5e0934494bd15c9632b12f734a8a67f723594:*.txt,*.json"
MEAN = 0.16717362830052426
STD = 1.0333394966054072
MAX_LENGTH = 35


def normalize_reward(y: torch.Tensor) -> torch.Tensor:
    """ImageReward's z-normalisation of the head output."""
    return (y - MEAN) / STD


def load_tokenizer(folder: str | Path) -> Any:
    """bert-base-uncased's WordPiece tokenizer plus BLIP's [DEC] (bos) and [ENC] specials."""
    from transformers import BertTokenizer

    tok = BertTokenizer.from_pretrained(str(folder))
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


def tokenize(tokenizer: Any, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask [B, 35]: padded to and truncated at 35 tokens, [CLS] first."""
    t = tokenizer(
        prompts, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    )
    return t["input_ids"], t["attention_mask"]


class ImageReward:
    """ImageReward v1.0: raw = reward = z-scored head output."""

    name = "imagereward"
    version = "1.0"
    requires = Requirements(weights=(WEIGHTS, TOKENIZER), gpu_gb=3.0)

    def __init__(
        self,
        weights: str = WEIGHTS,
        tokenizer: str = TOKENIZER,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 16,
        allow_pickle: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        folder = resolve(weights, self.name)
        ckpt, med = folder / "ImageReward.pt", folder / "med_config.json"
        for f in (ckpt, med):
            if not f.exists():
                raise MissingError(
                    f"imagereward: {f} is missing; a weights folder must hold ImageReward.pt and "
                    "med_config.json (run `harness fetch imagereward`)"
                )
        sd = read_checkpoint(ckpt, allow_pickle=allow_pickle)
        self.model = BlipImageReward.from_state_dict(sd, MedConfig.from_json(med))
        # the head runs in fp32 (upstream casts [CLS] to float); the towers take the declared dtype
        self.model.blip.to(device=self.device, dtype=self.dtype)
        self.model.mlp.to(device=self.device, dtype=torch.float32)
        self.model.eval().requires_grad_(False)
        self.tokenizer = load_tokenizer(resolve(tokenizer, self.name, arg="tokenizer"))
        self.size = self.model.image_size

    @torch.no_grad()
    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        """Score each (image, prompt) pair."""
        rgb = to_rgb_batch(images, prompts, meta)
        if not rgb:
            return Scores([], [], None)
        out = []
        for i in range(0, len(rgb), self.batch_size):
            pixels = center_crop_batch(rgb[i : i + self.batch_size], self.size, rounding="round")
            ids, mask = tokenize(self.tokenizer, prompts[i : i + self.batch_size])
            y = self.model(
                pixels.to(self.device, self.dtype), ids.to(self.device), mask.to(self.device)
            )
            out.append(normalize_reward(y.float().cpu()))
        raw = torch.cat(out).tolist()
        return Scores(values=raw, rewards=list(raw), details=None)
