"""LAION aesthetic predictor v2 ("improved", sac+logos+ava1-l14-linearMSE) on OpenAI CLIP ViT-L/14.

e = L2-normalised CLIP ViT-L/14 image embedding (768-d, after projection; a zero vector is divided by 1), then an
MLP 768-1024-128-64-16-1 whose ReLUs are commented out upstream, so at eval time it is one affine map w.e + b
(``collapse_head`` computes it). Output is on the AVA 1-10 scale; SD-class images score about 5-6.5. Flow-GRPO's
aesthetic reward is this raw value, computed with transformers' CLIPModel + CLIPProcessor in fp32, which is what we
follow (short side 224 bicubic, centre crop with floor offsets). The reference script used the ``clip`` package in
fp16 on CUDA; expect about 1e-3 differences from it. The ReLU variant (ava+logos-l14-reluMSE) has the same keys but
needs activations: do not load it here. The CLIP-L instance is shared with clipscore (``scorers.clip``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from PIL import Image
from torch import nn

from flowmodels.models import resolve_device, resolve_dtype
from scorers.base import Requirements, Scores
from scorers.clip import (
    CheckpointFormatError,
    center_crop_batch,
    image_embeds,
    load_hf_clip,
    read_checkpoint,
)
from scorers.hub import resolve
from scorers.images import to_rgb_batch

log = logging.getLogger(__name__)

CLIP_WEIGHTS = "openai/clip-vit-large-patch14@32bd64288804d66eefd0ccbe215aa642df71cc41"
# A hub mirror of christophschuhmann/improved-aesthetic-predictor's file (also vendored in flow_grpo/assets);
# no pinned revision was found for it, so this follows the mirror's main branch.
HEAD_FILE = "sac+logos+ava1-l14-linearMSE.pth"
HEAD_WEIGHTS = f"camenduru/improved-aesthetic-predictor:{HEAD_FILE}"
HEAD_KEYS = tuple(f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias"))


class AestheticHead(nn.Module):
    """Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear: keys layers.{0,2,4,6,7}."""

    def __init__(self, dims: tuple[int, int, int, int, int, int] = (768, 1024, 128, 64, 16, 1)):
        super().__init__()
        d = dims
        self.layers = nn.Sequential(
            nn.Linear(d[0], d[1]),
            nn.Dropout(0.2),
            nn.Linear(d[1], d[2]),
            nn.Dropout(0.2),
            nn.Linear(d[2], d[3]),
            nn.Dropout(0.1),
            nn.Linear(d[3], d[4]),
            nn.Linear(d[4], d[5]),
        )

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """e: [B, D] unit embeddings -> [B] scores."""
        return self.layers(e).squeeze(-1)


def load_head(path: str, allow_pickle: bool = False) -> AestheticHead:
    """The MLP head from a state dict with keys layers.{0,2,4,6,7}.{weight,bias}; sizes read off the weights."""
    sd = read_checkpoint(path, allow_pickle=allow_pickle)
    if set(sd) != set(HEAD_KEYS):
        raise CheckpointFormatError(
            f"{path}: expected keys {list(HEAD_KEYS)}, got {sorted(sd)[:12]}"
        )
    w = [sd[f"layers.{i}.weight"] for i in (0, 2, 4, 6, 7)]
    dims = (int(w[0].shape[1]), *(int(x.shape[0]) for x in w))
    head = AestheticHead(dims)  # type: ignore[arg-type]
    head.load_state_dict(sd)
    return head.eval().requires_grad_(False)


@torch.no_grad()
def collapse_head(head: AestheticHead) -> tuple[torch.Tensor, float]:
    """The eval-time head as one affine map: returns (w [D], b) with head(e) == e @ w + b."""
    head = head.eval()
    d, dt = head.layers[0].in_features, head.layers[0].weight.dtype
    b = head(torch.zeros(1, d, dtype=dt))  # [1]
    return head(torch.eye(d, dtype=dt)) - b, float(b)


class Aesthetic:
    """LAION aesthetic v2 on CLIP ViT-L/14: raw = reward = AVA-scale score (about 1-10)."""

    name = "aesthetic"
    version = "2"
    requires = Requirements(weights=(CLIP_WEIGHTS, HEAD_WEIGHTS), gpu_gb=2.0)

    def __init__(
        self,
        weights: str = CLIP_WEIGHTS,
        head: str = HEAD_WEIGHTS,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 32,
        allow_pickle: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.clip = load_hf_clip(resolve(weights, self.name), self.device, self.dtype)
        head_path = resolve(head, self.name, arg="head")
        if head_path.is_dir():
            head_path = head_path / HEAD_FILE
        self.head = load_head(str(head_path), allow_pickle=allow_pickle).to(self.device)
        if self.head.layers[0].in_features != self.clip.config.projection_dim:
            raise CheckpointFormatError(
                f"aesthetic: head takes {self.head.layers[0].in_features}-d embeddings but the CLIP "
                f"projects to {self.clip.config.projection_dim}"
            )
        self.size = int(self.clip.config.vision_config.image_size)

    @torch.no_grad()
    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str] | None = None,
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        """Score each image; prompts are accepted for the protocol and ignored."""
        rgb = to_rgb_batch(images, prompts, meta)
        if not rgb:
            return Scores([], [], None)
        emb = torch.cat(
            [
                image_embeds(self.clip, center_crop_batch(rgb[i : i + self.batch_size], self.size))
                for i in range(0, len(rgb), self.batch_size)
            ]
        )  # [B, D] unit, float32; the head runs in fp32 as in both references
        raw = self.head(emb.to(self.device)).float().cpu().tolist()
        return Scores(values=raw, rewards=list(raw), details=None)
