"""FLUX.1 (dev, schnell and their fine-tunes) through diffusers, behind the ``FlowModel`` interface.

The same loader as SD3: a hub id (``black-forest-labs/FLUX.1-dev``) or a local folder whose ``model_index.json``
names ``FluxPipeline``. Prompts are encoded as FLUX's pipeline does: CLIP's pooled embedding and T5's tokens (T5
length is the recorded ``t5_length`` setting). Latents stay [B, C, h, w] at this interface, so ``sde_step`` and
``rollout`` work unchanged; the transformer sees them packed in 2 x 2 patches with their position ids, as in
``FluxPipeline``.

Guidance. FLUX.1-dev is guidance-distilled: its transformer has a guidance embedding (``guidance_embeds`` in its
config) and no classifier-free guidance pass. With the embedding, ``cfg`` is the distilled guidance scale (3.5
for FLUX.1-dev) and ``velocity`` runs ONE conditional pass, ignoring the negative prompt, exactly what
``FluxPipeline(guidance_scale=cfg)`` does. Without it (FLUX.1-schnell), ``cfg`` is true CFG
``v_u + cfg (v_c - v_u)`` over the negative prompt (diffusers' ``true_cfg_scale``), and ``cfg = 1`` (schnell's
own setting) is the conditional pass alone.

Schedule. ``sigmas`` is FluxPipeline's: ``linspace(1, 1/N, N)`` shifted by the scheduler, with dynamic shifting
``mu = calculate_shift(image tokens)`` (FLUX.1-dev: 0.5 at 256 image tokens to 1.15 at 4096, linear between),
so it depends on the image size; then a final 0.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowbase.errors import InputError
from flowmodels.backend import Conditioning, guided_velocity

log = logging.getLogger(__name__)

PIPELINE_CLASS = "FluxPipeline"
# The FLUX.1 LoRA targets of Flow-GRPO's scripts/train_flux.py (r 64, alpha 128): the double-stream blocks'
# joint attention and both feed-forwards; "attn.to_q/k/v" also match the single-stream blocks' attention.
FLUX_LORA_TARGETS = (
    "attn.to_k",
    "attn.to_q",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_k_proj",
    "attn.add_q_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
)
# A folder may declare its own sampling settings in this file (the tiny FLUX does: 64 px, 4 steps).
SETTINGS_FILE = "sampling.json"
DEFAULT_SAMPLE_SIZE = (
    128  # FluxPipeline.default_sample_size, in latent pixels (x VAE factor 8 = 1024 px)
)


def calculate_shift(image_tokens: int, config: dict[str, Any]) -> float:
    """FluxPipeline's ``mu``: linear in the packed image sequence length between the scheduler's base and max."""
    base_len = config.get("base_image_seq_len", 256)
    max_len = config.get("max_image_seq_len", 4096)
    base, top = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    m = (top - base) / (max_len - base_len)
    return image_tokens * m + base - m * base_len


def native_settings(
    distilled: bool, dynamic: bool, vae_factor: int = 8, sample_size: int = DEFAULT_SAMPLE_SIZE
) -> dict[str, Any]:
    """What a FLUX.1 model samples at unless told otherwise. Guidance-distilled (dev): diffusers' and BFL's 28
    steps at distilled guidance 3.5; timestep-distilled without dynamic shifting (schnell): 4 steps, no guidance.
    Both at diffusers' default 1024 px (Flow-GRPO trains and evaluates FLUX.1-dev at 512: pass --size 512)."""
    px = sample_size * vae_factor
    steps, cfg = (28, 3.5) if distilled or dynamic else (4, 1.0)
    return {
        "height": px,
        "width": px,
        "steps": steps,
        "cfg": cfg,
        "guidance": "distilled" if distilled else "cfg",
    }


class Flux:
    """A loaded FLUX.1 pipeline seen as a ``FlowModel``. ``denoiser`` is the FluxTransformer2DModel."""

    def __init__(self, pipe: Any, model_id: str, t5_length: int = 128, folder: Path | None = None):
        self.pipe = pipe
        self.model_id = model_id
        self.t5_length = t5_length
        self.folder = folder
        self.denoiser = pipe.transformer
        self.device = pipe.transformer.device
        self.dtype = pipe.transformer.dtype
        self.distilled = bool(pipe.transformer.config.guidance_embeds)
        self._uncond_cache: dict[str, Conditioning] = {}

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        model_id: str,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        t5_length: int = 128,
    ) -> Flux:
        from diffusers import FluxPipeline

        pipe = FluxPipeline.from_pretrained(str(folder), torch_dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        pipe.to(device)
        pipe.vae.to(dtype=torch.float32)  # decoded in float32, as Flow-GRPO's train_flux.py does
        for m in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
            m.requires_grad_(False)
            m.eval()
        return cls(pipe, model_id, t5_length, Path(folder))

    @staticmethod
    def folder_settings(folder: str | Path) -> dict[str, Any]:
        """The sampling settings a saved FLUX declares, read from its config files without loading weights:
        ``sampling.json`` when the folder has one, else FLUX.1's own by its transformer and scheduler configs."""
        folder = Path(folder)
        own = folder / SETTINGS_FILE
        if own.exists():
            return dict(json.loads(own.read_text()))
        transformer = _read_json(folder / "transformer" / "config.json")
        scheduler = _read_json(folder / "scheduler" / "scheduler_config.json")
        vae = _read_json(folder / "vae" / "config.json")
        factor = 2 ** (len(vae.get("block_out_channels", (0,) * 4)) - 1)
        return native_settings(
            bool(transformer.get("guidance_embeds")),
            bool(scheduler.get("use_dynamic_shifting")),
            factor,
        )

    def native_settings(self) -> dict[str, Any]:
        """This model's own sampling settings (``folder_settings`` of the folder it was loaded from)."""
        if self.folder is not None:
            return self.folder_settings(self.folder)
        dynamic = bool(self.pipe.scheduler.config.get("use_dynamic_shifting"))
        return native_settings(self.distilled, dynamic, self.pipe.vae_scale_factor)

    # -- interface -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Conditioning:
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            device=self.device,
            num_images_per_prompt=1,
            max_sequence_length=self.t5_length,
        )
        return Conditioning(embeds.to(self.dtype), pooled.to(self.dtype))

    def encode_negative(self, prompt: str) -> Conditioning:
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
        """Guidance-distilled: one pass with the guidance embedding at ``cfg`` (``uncond`` unused); otherwise
        true CFG over ``uncond`` (``backend.guided_velocity``)."""
        if self.distilled:
            s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
            s = s.expand(x.shape[0]) if s.ndim == 0 else s
            return self._forward(x, s, cond, cfg)
        return guided_velocity(self._forward, x, sigma, cond, uncond, cfg)

    def _forward(
        self, x: Tensor, s: Tensor, cond: Conditioning, guidance: float | None = None
    ) -> Tensor:
        b, c, h, w = x.shape
        packed = self.pipe._pack_latents(x.to(self.dtype), b, c, h, w)
        img_ids = self.pipe._prepare_latent_image_ids(b, h // 2, w // 2, x.device, self.dtype)
        txt_ids = torch.zeros(cond.embeds.shape[1], 3, device=x.device, dtype=self.dtype)
        g = None
        if self.distilled:
            g = torch.full(
                (b,),
                float(1.0 if guidance is None else guidance),
                device=x.device,
                dtype=torch.float32,
            )
        out = self.denoiser(
            hidden_states=packed,
            # FluxPipeline feeds timestep (= 1000 sigma) / 1000; the transformer multiplies by 1000 again
            timestep=(s.float() * 1000 / 1000).to(self.dtype),
            guidance=g,
            pooled_projections=cond.pooled.to(self.dtype),
            encoder_hidden_states=cond.embeds.to(self.dtype),
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return _unpack(out.float(), c, h, w)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        vae = self.pipe.vae
        z = latents.float() / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        img = vae.decode(z.to(vae.dtype), return_dict=False)[0]
        return (img.float() / 2 + 0.5).clamp(0, 1)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        vsf = self.pipe.vae_scale_factor
        unit = 2 * vsf  # VAE factor x the 2 x 2 packing
        for name, size in (("height", height), ("width", width)):
            if size <= 0 or size % unit:
                raise InputError(
                    f"{name} {size} must be a positive multiple of {unit} (VAE factor {vsf} x 2 x 2 packing)"
                )
        return (self.denoiser.config.in_channels // 4, height // vsf, width // vsf)

    def image_tokens(self, height: int, width: int) -> int:
        """The packed image sequence length at this size (what ``mu`` is computed from)."""
        _, h, w = self.latent_shape(height, width)
        return (h // 2) * (w // 2)

    def sigmas(self, steps: int, *, height: int | None = None, width: int | None = None) -> Tensor:
        """FluxPipeline's schedule for ``steps`` steps at this image size (default: the model's native size)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if height is None or width is None:
            native = self.native_settings()
            height, width = height or native["height"], width or native["width"]
        config = dict(self.pipe.scheduler.config)
        sched = FlowMatchEulerDiscreteScheduler.from_config(config)
        mu = calculate_shift(self.image_tokens(height, width), config)
        sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        return sched.sigmas.float().cpu()

    def describe(self) -> dict[str, Any]:
        """Settings that change numbers (recorded in manifests and protocols)."""
        return {
            "backend": "flux",
            "model": self.model_id,
            "dtype": str(self.dtype).removeprefix("torch."),
            "t5_length": self.t5_length,
            "guidance": "distilled" if self.distilled else "cfg",
            "dynamic_shift": bool(self.pipe.scheduler.config.get("use_dynamic_shifting")),
        }


def _unpack(packed: Tensor, c: int, h: int, w: int) -> Tensor:
    """[B, (h/2)(w/2), 4C] -> [B, C, h, w], the inverse of FluxPipeline._pack_latents."""
    b = packed.shape[0]
    x = packed.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def _read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.exists() else {}
