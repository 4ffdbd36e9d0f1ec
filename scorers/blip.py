"""The BLIP pieces ImageReward needs, written to load its official checkpoint key for key.

ImageReward (THUDM/ImageReward, ImageReward/ImageReward.py + models/BLIP/*) is BLIP_Pretrain's image encoder (a
timm-style ViT: patch 16, LayerNorm eps 1e-6, qkv bias, exact GELU, final norm, all tokens returned) and its text
encoder (a BERT without token-type embeddings whose layers add cross-attention to the image tokens; BLIP's
``med.py``), plus a 5-layer MLP head with no activations. The upstream code imports helpers that transformers 5
removed and timm functions that moved, so the ``image-reward`` package cannot be a dependency; these modules reproduce its forward pass with the same parameter names:

    blip.visual_encoder.{cls_token, pos_embed, patch_embed.proj, blocks.N.{norm1, attn.qkv, attn.proj, norm2,
                         mlp.fc1, mlp.fc2}, norm}
    blip.text_encoder.embeddings.{word_embeddings, position_embeddings, LayerNorm}
    blip.text_encoder.encoder.layer.N.{attention, crossattention}.{self.{query, key, value}, output.{dense,
                         LayerNorm}}, .intermediate.dense, .output.{dense, LayerNorm}
    mlp.layers.{0, 2, 4, 6, 7}

Attention is written out (scores, softmax, weighted sum) in the reference's order; padding masks use BERT's
additive -10000.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flowbase.errors import InputError

VIT_HEAD_DIM = 64  # BLIP's ViT-B (768/12) and ViT-L (1024/16) both use 64-d heads


@dataclass(frozen=True)
class MedConfig:
    """The fields of BLIP's med_config.json that the text encoder uses."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    vocab_size: int = 30524
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    hidden_act: str = "gelu"
    encoder_width: int = 768

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MedConfig:
        """Keep the known keys of a med_config dict."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json(cls, path: str | Path) -> MedConfig:
        """Read med_config.json."""
        return cls.from_dict(json.loads(Path(path).read_text()))


# --------------------------------------------------------------------------------------------------------------
# vision: BLIP's timm-style ViT


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, C, g, g] -> [B, g*g, C]


class _VitAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.qkv = nn.Linear(width, 3 * width, bias=True)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, N, c/H]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _VitMlp(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _VitBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = _VitAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = _VitMlp(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class BlipViT(nn.Module):
    """BLIP's VisionTransformer: returns all tokens after the final norm, [B, 1 + g*g, width]."""

    def __init__(self, width: int, depth: int, image_size: int, patch: int) -> None:
        super().__init__()
        grid = image_size // patch
        self.patch_embed = _PatchEmbed(patch, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, width))
        self.blocks = nn.ModuleList(
            [_VitBlock(width, width // VIT_HEAD_DIM or 1) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed[:, : x.shape[1], :]
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


# --------------------------------------------------------------------------------------------------------------
# text: BLIP's BERT with cross-attention (med.py, mode="multimodal")


class _BertEmbeddings(nn.Module):
    def __init__(self, cfg: MedConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(
            cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id
        )
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(pos))


class _BertSelfAttention(nn.Module):
    def __init__(self, cfg: MedConfig, kv_width: int) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(
        self, x: torch.Tensor, kv: torch.Tensor, additive_mask: torch.Tensor | None
    ) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(kv)), self._split(self.value(kv))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if additive_mask is not None:
            scores = scores + additive_mask
        ctx = (scores.softmax(dim=-1) @ v).permute(0, 2, 1, 3)
        return ctx.reshape(*ctx.shape[:-2], self.heads * self.head_dim)


class _BertSelfOutput(nn.Module):
    def __init__(self, cfg: MedConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class _BertAttention(nn.Module):
    def __init__(self, cfg: MedConfig, kv_width: int) -> None:
        super().__init__()
        self.self = _BertSelfAttention(cfg, kv_width)
        self.output = _BertSelfOutput(cfg)

    def forward(
        self, x: torch.Tensor, kv: torch.Tensor, additive_mask: torch.Tensor | None
    ) -> torch.Tensor:
        return self.output(self.self(x, kv, additive_mask), x)


class _BertIntermediate(nn.Module):
    def __init__(self, cfg: MedConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        if cfg.hidden_act != "gelu":
            raise InputError(
                f"med_config hidden_act {cfg.hidden_act!r}: only 'gelu' (exact) is supported"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _BertOutput(nn.Module):
    def __init__(self, cfg: MedConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class _BertLayer(nn.Module):
    def __init__(self, cfg: MedConfig) -> None:
        super().__init__()
        self.attention = _BertAttention(cfg, cfg.hidden_size)
        self.crossattention = _BertAttention(cfg, cfg.encoder_width)
        self.intermediate = _BertIntermediate(cfg)
        self.output = _BertOutput(cfg)

    def forward(
        self, x: torch.Tensor, self_mask: torch.Tensor, image: torch.Tensor
    ) -> torch.Tensor:
        x = self.attention(x, x, self_mask)
        x = self.crossattention(x, image, None)  # image mask is all ones upstream: adds 0
        return self.output(self.intermediate(x), x)


class _BertEncoder(nn.Module):
    def __init__(self, cfg: MedConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([_BertLayer(cfg) for _ in range(cfg.num_hidden_layers)])


class MedBert(nn.Module):
    """BLIP's text encoder in multimodal mode: returns last_hidden_state [B, L, hidden]."""

    def __init__(self, cfg: MedConfig) -> None:
        super().__init__()
        self.embeddings = _BertEmbeddings(cfg)
        self.encoder = _BertEncoder(cfg)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image: torch.Tensor
    ) -> torch.Tensor:
        x = self.embeddings(input_ids)
        # BERT's extended mask: 0 where attended, -10000 at padding; [B, 1, 1, L]
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.encoder.layer:
            x = layer(x, mask, image)
        return x


# --------------------------------------------------------------------------------------------------------------
# ImageReward


class RewardHead(nn.Module):
    """ImageReward's MLP: Linear d-1024-128-64-16-1 with dropouts and no activations (keys layers.{0,2,4,6,7})."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(d, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layers(h).squeeze(-1)


class _Blip(nn.Module):
    def __init__(self, cfg: MedConfig, vit_width: int, vit_depth: int, image_size: int, patch: int):
        super().__init__()
        self.visual_encoder = BlipViT(vit_width, vit_depth, image_size, patch)
        self.text_encoder = MedBert(cfg)


class BlipImageReward(nn.Module):
    """BLIP ViT + cross-attention BERT + MLP head: returns the head output y (before z-normalisation)."""

    def __init__(
        self, cfg: MedConfig, vit_width: int, vit_depth: int, image_size: int, patch: int
    ) -> None:
        super().__init__()
        cfg = MedConfig.from_dict(
            {**cfg.__dict__, "encoder_width": vit_width}
        )  # as BLIP_Pretrain does
        self.config = cfg
        self.image_size = image_size
        self.blip = _Blip(cfg, vit_width, vit_depth, image_size, patch)
        self.mlp = RewardHead(cfg.hidden_size)

    def forward(
        self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        image = self.blip.visual_encoder(pixels)
        h = self.blip.text_encoder(input_ids, attention_mask, image)
        return self.mlp(h[:, 0, :].float())

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], cfg: MedConfig) -> BlipImageReward:
        """Build with sizes read off the checkpoint and load it; keys outside the scorer's parts are ignored."""
        try:
            width = int(sd["blip.visual_encoder.cls_token"].shape[-1])
            patch = int(sd["blip.visual_encoder.patch_embed.proj.weight"].shape[-1])
            n_pos = int(sd["blip.visual_encoder.pos_embed"].shape[1])
        except KeyError as e:
            raise InputError(f"not an ImageReward checkpoint (no {e.args[0]!r})") from None
        depth = len({k.split(".")[3] for k in sd if k.startswith("blip.visual_encoder.blocks.")})
        grid = round((n_pos - 1) ** 0.5)
        model = cls(cfg, width, depth, grid * patch, patch)
        ours = ("blip.visual_encoder.", "blip.text_encoder.", "mlp.")
        picked = {
            k: v for k, v in sd.items() if k.startswith(ours) and not k.endswith("position_ids")
        }
        result = model.load_state_dict(picked, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise InputError(
                f"checkpoint does not fit ImageReward: missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
        return model
