"""Stable Diffusion 3 / 3.5 through diffusers, behind the ``FlowModel`` interface.

Loads from a hub id or a local folder (the same call either way), encodes prompts with all three text encoders
(T5 token length is a recorded setting: 128 in Flow-GRPO training and evaluation, 256 in diffusers' default),
predicts velocities with classifier-free guidance under the active LoRA adapter, and decodes with the VAE in
float32 (as Flow-GRPO does). The transformer is fed ``timestep = 1000 * sigma``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowbase.errors import InputError
from flowmodels.backend import Conditioning, guided_velocity

log = logging.getLogger(__name__)


class SD3:
    """A loaded SD3/SD3.5 pipeline seen as a ``FlowModel``. ``denoiser`` is the MMDiT transformer."""

    def __init__(self, pipe: Any, model_id: str, t5_length: int = 128) -> None:
        self.pipe = pipe
        self.model_id = model_id
        self.t5_length = t5_length
        self.denoiser = pipe.transformer
        self.device = pipe.transformer.device
        self.dtype = pipe.transformer.dtype
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
    ) -> SD3:
        from diffusers import StableDiffusion3Pipeline

        folder = Path(folder)
        kwargs: dict[str, Any] = {"torch_dtype": dtype}
        index = folder / "model_index.json"
        if index.exists():
            import json

            spec = json.loads(index.read_text())
            if spec.get("text_encoder_3", [None])[0] is None:
                kwargs.update(text_encoder_3=None, tokenizer_3=None)
        pipe = StableDiffusion3Pipeline.from_pretrained(str(folder), **kwargs)
        pipe.set_progress_bar_config(disable=True)
        pipe.vae.to(dtype=torch.float32)
        pipe.to(device)
        pipe.vae.to(dtype=torch.float32)
        for m in (
            pipe.transformer,
            pipe.vae,
            pipe.text_encoder,
            pipe.text_encoder_2,
            pipe.text_encoder_3,
        ):
            if m is not None:
                m.requires_grad_(False)
                m.eval()
        return cls(pipe, model_id, t5_length)

    # -- interface -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Conditioning:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            max_sequence_length=self.t5_length,
        )
        return Conditioning(embeds.to(self.dtype), pooled.to(self.dtype))

    def encode_negative(self, prompt: str) -> Conditioning:
        # the text encoders are frozen and the device and dtype fixed at load: the prompt alone is the key
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
        out = self.denoiser(
            hidden_states=x.to(self.dtype),
            timestep=(s * 1000).to(self.dtype),
            encoder_hidden_states=cond.embeds.to(self.dtype),
            pooled_projections=cond.pooled.to(self.dtype),
            return_dict=False,
        )[0]
        return out.float()

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        vae = self.pipe.vae
        z = latents.float() / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        img = vae.decode(z.to(vae.dtype), return_dict=False)[0]
        return (img.float() / 2 + 0.5).clamp(0, 1)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        vsf = self.pipe.vae_scale_factor
        patch = self.denoiser.config.patch_size
        unit = vsf * patch
        for name, size in (("height", height), ("width", width)):
            if size <= 0 or size % unit:
                raise InputError(
                    f"{name} {size} must be a positive multiple of {unit} "
                    f"(VAE factor {vsf} x patch size {patch})"
                )
        limit = self.denoiser.config.pos_embed_max_size * unit
        if max(height, width) > limit:
            raise InputError(f"size {height}x{width} exceeds this model's maximum of {limit} px")
        return (self.denoiser.config.in_channels, height // vsf, width // vsf)

    def sigmas(self, steps: int, *, height: int | None = None, width: int | None = None) -> Tensor:
        del height, width  # a fixed shift: the schedule does not depend on the image size
        from diffusers import FlowMatchEulerDiscreteScheduler

        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        sched = FlowMatchEulerDiscreteScheduler.from_config(self.pipe.scheduler.config)
        sched.set_timesteps(steps)
        return sched.sigmas.float().cpu()

    def describe(self) -> dict[str, Any]:
        """Settings that change numbers (recorded in manifests and protocols)."""
        return {
            "backend": "sd3",
            "model": self.model_id,
            "dtype": str(self.dtype).removeprefix("torch."),
            "t5_length": self.t5_length,
            "t5": self.pipe.text_encoder_3 is not None,
            "shift": self.pipe.scheduler.config.get("shift"),
        }
