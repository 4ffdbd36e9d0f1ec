"""The mini model: a CPU-sized text-to-image flow model for the mini world, behind the same ``FlowModel`` interface.

A word-level text encoder (the world's vocabulary; quoted text is spelled character by character) feeds a small
diffusion transformer that works directly on 32 x 32 RGB pixels in 4 x 4 patches: image and text tokens share
self-attention, and the noise level plus the pooled text modulate every block (adaLN). Its attention projections
are named ``to_q/to_k/to_v/to_out`` so the same PEFT LoRA adapters (student, teachers, anchor) attach as on SD3.
``decode`` maps [-1, 1] pixels to [0, 1]; the noise schedule comes from diffusers' FlowMatchEulerDiscreteScheduler
like SD3's. Saved as a folder (``model_index.json`` naming ``MiniFlowPipeline``, ``config.json``,
``model.safetensors``) so ``flowmodels.models.load_model(path)`` dispatches to it like any other backend.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowbase.errors import InputError
from flowmodels.backend import Conditioning, guided_velocity
from mini_world import world

MINI_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out")
PIPELINE_CLASS = "MiniFlowPipeline"


def default_vocab() -> list[str]:
    """Every word and glyph the mini world's prompts use, after the specials."""
    words = {"a", "an", "and", "the", "text", '"', "of", "left", "right", "above", "below"}
    words |= set(world.SHAPES) | {s + "s" for s in world.SHAPES} | set(world.COLORS)
    words |= set(world.NUMBERS.values())
    return ["<pad>", "<unk>", *sorted(words), *sorted(world.GLYPHS)]


@dataclass(frozen=True)
class MiniConfig:
    vocab: tuple[str, ...] = field(default_factory=lambda: tuple(default_vocab()))
    image_size: int = 32
    patch: int = 4
    dim: int = 80
    layers: int = 5
    heads: int = 4
    text_layers: int = 2
    text_len: int = 12
    shift: float = 1.0
    # per-pixel features the convolutional head refines (0: a plain linear patch head)
    head_channels: int = 16

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch) ** 2


def native_settings(image_size: int) -> dict[str, Any]:
    """What the mini model samples at unless told otherwise: its one image size, the mini world's 10 Euler steps
    and CFG 4.5 (the settings its benchmarks and recipes use)."""
    return {"height": image_size, "width": image_size, "steps": 10, "cfg": 4.5}


_TOKEN_RE = re.compile(r'"[^"]*"|[^\s"]+')


def tokenize(prompts: list[str], vocab: dict[str, int], length: int) -> Tensor:
    """Word-level ids [B, length]; a quoted span becomes '"', its characters, '"'. Padded with 0."""
    ids = torch.zeros(len(prompts), length, dtype=torch.long)
    for b, p in enumerate(prompts):
        toks: list[str] = []
        for m in _TOKEN_RE.findall(p):
            if m.startswith('"'):
                toks += ['"', *m.strip('"'), '"']
            else:
                toks.append(m.lower())
        row = [vocab.get(t, 1) for t in toks][:length]
        ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids


class TextEncoder(nn.Module):
    """Token embeddings + a small transformer encoder; pooled = mean over non-pad tokens (zeros if none)."""

    def __init__(self, cfg: MiniConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(cfg.vocab), cfg.dim)
        self.pos = nn.Parameter(torch.zeros(1, cfg.text_len, cfg.dim))
        layer = nn.TransformerEncoderLayer(
            cfg.dim, cfg.heads, 2 * cfg.dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        pad = ids == 0
        h = self.embed(ids) + self.pos
        h = self.encoder(h, src_key_padding_mask=pad) if not bool(pad.all()) else h
        h = h.masked_fill(pad[..., None], 0.0)
        keep = (~pad).float()
        pooled = h.sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
        return h, pooled


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = (
            f(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
            for f in (self.to_q, self.to_k, self.to_v)
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-zero modulation from the conditioning vector."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        s1, b1, g1, s2, b2, g2 = self.ada(F.silu(c))[:, None].chunk(6, dim=-1)
        x = x + g1 * self.attn(self.norm1(x) * (1 + s1) + b1)
        return x + g2 * self.mlp(self.norm2(x) * (1 + s2) + b2)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of ``t`` (the SD3 convention: 1000 * sigma). [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MiniDiT(nn.Module):
    """The denoiser: patches of x_s and the text tokens in one sequence; predicts the velocity eps - x0."""

    def __init__(self, cfg: MiniConfig) -> None:
        super().__init__()
        self.cfg = cfg
        pdim = 3 * cfg.patch * cfg.patch
        self.patch_in = nn.Linear(pdim, cfg.dim)
        self.pos = nn.Parameter(torch.randn(1, cfg.tokens, cfg.dim) * 0.02)
        self.text_in = nn.Linear(cfg.dim, cfg.dim)
        self.time = nn.Sequential(
            nn.Linear(cfg.dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim)
        )
        self.pooled_in = nn.Linear(cfg.dim, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(cfg.dim, elementwise_affine=False)
        self.ada_out = nn.Linear(cfg.dim, 2 * cfg.dim)
        nn.init.zeros_(self.ada_out.weight)
        nn.init.zeros_(self.ada_out.bias)
        hc = cfg.head_channels
        # Tokens become per-pixel features, then two 3x3 convolutions mix neighbouring pixels across patch borders
        # (a transformer over 4 x 4 patches alone draws blocky, fragmented shapes at this size).
        self.patch_out = nn.Linear(cfg.dim, (hc or 3) * cfg.patch * cfg.patch)
        self.head = (
            nn.Sequential(
                nn.Conv2d(hc, 2 * hc, 3, padding=1), nn.SiLU(), nn.Conv2d(2 * hc, 3, 3, padding=1)
            )
            if hc
            else nn.Identity()
        )
        last = self.head[-1] if hc else self.patch_out
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: Tensor, timestep: Tensor, text: Tensor, pooled: Tensor) -> Tensor:
        b, _, h, w = x.shape
        p = self.cfg.patch
        patches = x.unfold(2, p, p).unfold(3, p, p)  # [B, 3, h/p, w/p, p, p]
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, 3 * p * p)
        img = self.patch_in(patches) + self.pos
        seq = torch.cat([self.text_in(text), img], dim=1)
        c = self.time(timestep_embedding(timestep, self.cfg.dim)) + self.pooled_in(pooled)
        for block in self.blocks:
            seq = block(seq, c)
        shift, scale = self.ada_out(F.silu(c))[:, None].chunk(2, dim=-1)
        out = self.patch_out(self.norm_out(seq[:, text.shape[1] :]) * (1 + scale) + shift)
        c = self.cfg.head_channels or 3
        out = out.view(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
        return self.head(out)


class MiniFlow:
    """The mini model as a ``FlowModel``: text encoder (frozen) + ``MiniDiT`` denoiser (carries adapters)."""

    def __init__(
        self, cfg: MiniConfig, text_encoder: TextEncoder, denoiser: MiniDiT, model_id: str = "mini"
    ) -> None:
        self.cfg = cfg
        self.text_encoder = text_encoder
        self.denoiser = denoiser
        self.model_id = model_id
        self.device = next(denoiser.parameters()).device
        self.dtype = next(denoiser.parameters()).dtype
        self.vocab = {t: i for i, t in enumerate(cfg.vocab)}
        self._uncond_cache: dict[str, Conditioning] = {}
        self._uncond_encoder: tuple[int, int] | None = (
            None  # the text encoder the cache was filled by
        )

    @classmethod
    def create(cls, cfg: MiniConfig | None = None, seed: int = 0) -> MiniFlow:
        """A freshly initialised model (for pretraining)."""
        cfg = cfg or MiniConfig()
        torch.manual_seed(seed)
        return cls(cfg, TextEncoder(cfg), MiniDiT(cfg))

    @staticmethod
    def folder_settings(folder: str | Path) -> dict[str, Any]:
        """The sampling settings a saved mini model declares (``native_settings``), read from its config.json
        without loading weights."""
        raw = json.loads((Path(folder) / "config.json").read_text())
        return native_settings(int(raw.get("image_size", MiniConfig.image_size)))

    def native_settings(self) -> dict[str, Any]:
        """The sampling settings this model is made for: its image size, 10 steps, CFG 4.5."""
        return native_settings(self.cfg.image_size)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        model_id: str,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        t5_length: int = 128,
    ) -> MiniFlow:
        from safetensors.torch import load_file

        folder = Path(folder)
        raw = json.loads((folder / "config.json").read_text())
        raw["vocab"] = tuple(raw["vocab"])
        raw.setdefault("head_channels", 0)  # checkpoints from before the convolutional head
        cfg = MiniConfig(**raw)
        model = cls(cfg, TextEncoder(cfg), MiniDiT(cfg), model_id)
        state = load_file(str(folder / "model.safetensors"))
        model.text_encoder.load_state_dict(
            {k[5:]: v for k, v in state.items() if k.startswith("text.")}
        )
        model.denoiser.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("dit.")})
        model.to(torch.device(device), dtype)
        model.text_encoder.requires_grad_(False).eval()
        model.denoiser.requires_grad_(False).eval()
        return model

    def save_pretrained(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write model_index.json, config.json and model.safetensors (plus ``extra`` into model_index.json)."""
        from safetensors.torch import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        index = {"_class_name": PIPELINE_CLASS, "backend": "flowmodels.mini", **(extra or {})}
        (out / "model_index.json").write_text(json.dumps(index, indent=2))
        cfg = asdict(self.cfg)
        cfg["vocab"] = list(self.cfg.vocab)
        (out / "config.json").write_text(json.dumps(cfg, indent=2))
        state = {
            f"text.{k}": v.detach().cpu().contiguous()
            for k, v in self.text_encoder.state_dict().items()
        }
        state |= {
            f"dit.{k}": v.detach().cpu().contiguous() for k, v in self.denoiser.state_dict().items()
        }
        save_file(state, str(out / "model.safetensors"))
        return out

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> MiniFlow:
        self.text_encoder.to(device=device, dtype=dtype)
        self.denoiser.to(device=device, dtype=dtype)
        self.device = device
        self.dtype = dtype or self.dtype
        self._uncond_cache.clear()
        return self

    # -- interface ---------------------------------------------------------------------------------------------
    def encode_ids(self, prompts: list[str]) -> Tensor:
        return tokenize(prompts, self.vocab, self.cfg.text_len).to(self.device)

    def encode(self, prompts: list[str]) -> Conditioning:
        with torch.no_grad():
            tokens, pooled = self.text_encoder(self.encode_ids(prompts))
        return Conditioning(tokens, pooled)

    def encode_negative(self, prompt: str) -> Conditioning:
        # pretraining trains (and swaps in an EMA copy of) the text encoder: its identity and the parameters'
        # in-place update counters are part of the key, so a changed encoder never serves a stale embedding
        enc = self.text_encoder
        state = (id(enc), sum(p._version for p in enc.parameters()))
        if state != self._uncond_encoder:
            self._uncond_cache.clear()
            self._uncond_encoder = state
        if prompt not in self._uncond_cache:
            self._uncond_cache[prompt] = self.encode([prompt])
        return self._uncond_cache[prompt]

    def velocity(
        self,
        x: Tensor,
        sigma: float | Tensor,
        cond: Conditioning,
        uncond: Conditioning | None = None,
        cfg: float = 1.0,
    ) -> Tensor:
        return guided_velocity(self._forward, x, sigma, cond, uncond, cfg)

    def _forward(self, x: Tensor, s: Tensor, cond: Conditioning) -> Tensor:
        return self.denoiser(
            x.to(self.dtype),
            (s * 1000).to(self.dtype),
            cond.embeds.to(self.dtype),
            cond.pooled.to(self.dtype),
        ).float()

    def decode(self, latents: Tensor) -> Tensor:
        return ((latents.float().clamp(-1, 1) + 1) / 2).clamp(0, 1)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        n = self.cfg.image_size
        if (height, width) != (n, n):
            raise InputError(
                f"the mini model makes {n} x {n} images only (asked for {height} x {width})"
            )
        return (3, n, n)

    def sigmas(self, steps: int, *, height: int | None = None, width: int | None = None) -> Tensor:
        del height, width  # a fixed shift: the schedule does not depend on the image size
        from diffusers import FlowMatchEulerDiscreteScheduler

        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=self.cfg.shift)
        sched.set_timesteps(steps)
        return sched.sigmas.float().cpu()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "mini",
            "model": self.model_id,
            "dtype": str(self.dtype).removeprefix("torch."),
            "image_size": self.cfg.image_size,
            "params": sum(p.numel() for p in self.denoiser.parameters()),
        }
