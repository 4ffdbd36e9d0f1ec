"""The small model interface that the trainer and the harness talk to.

A backend encodes prompts, predicts the velocity under classifier-free guidance with whichever LoRA adapter is
active, decodes latents and knows its latent shape and noise schedule. SD3/SD3.5 (``flowmodels.sd3``) is the first
backend, FLUX.1 (``flowmodels.flux``) the second; recipes never reach past this interface, so SANA or a CPU-sized
backend slot in without forks.
Only the Protocol, its conditioning dataclass and the guidance rule every backend shares live here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@dataclass
class Conditioning:
    """Encoded prompts: token embeddings [B, L, D] and pooled embeddings [B, P]."""

    embeds: Tensor
    pooled: Tensor

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def select(self, index: slice | Tensor | list[int]) -> Conditioning:
        """Rows ``index`` of the batch."""
        return Conditioning(self.embeds[index], self.pooled[index])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Conditioning:
        return Conditioning(
            self.embeds.to(device=device, dtype=dtype), self.pooled.to(device=device, dtype=dtype)
        )

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        return Conditioning(
            torch.cat([p.embeds for p in parts]), torch.cat([p.pooled for p in parts])
        )


@runtime_checkable
class FlowModel(Protocol):
    """What recipes and the harness need from a text-to-image flow-matching model."""

    model_id: str  # hub id or local path it was loaded from
    denoiser: nn.Module  # the network that carries the LoRA adapters
    device: torch.device
    dtype: torch.dtype

    def encode(self, prompts: list[str]) -> Conditioning:
        """Encode prompts (no gradient)."""
        ...

    def encode_negative(self, prompt: str) -> Conditioning:
        """``encode([prompt])``, computed once per model and prompt (the negative prompt of every batch)."""
        ...

    def velocity(
        self,
        x: Tensor,
        sigma: float | Tensor,
        cond: Conditioning,
        uncond: Conditioning | None = None,
        cfg: float = 1.0,
    ) -> Tensor:
        """``v = v_u + cfg (v_c - v_u)`` at noise level ``sigma`` (scalar or [B]); float32 [B, C, h, w]."""
        ...

    def decode(self, latents: Tensor) -> Tensor:
        """Latents [B, C, h, w] -> images [B, 3, H, W] in [0, 1], float32."""
        ...

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) for an image of this size; raises ValueError if the size does not fit the model."""
        ...

    def sigmas(self, steps: int, *, height: int | None = None, width: int | None = None) -> Tensor:
        """The scheduler's noise levels for ``steps`` steps: [steps + 1], from 1 down to 0. The image size matters
        to a backend whose shift depends on it (FLUX's dynamic shifting; None: its native size); others ignore it."""
        ...


def guided_velocity(
    forward: Callable[[Tensor, Tensor, Conditioning], Tensor],
    x: Tensor,
    sigma: float | Tensor,
    cond: Conditioning,
    uncond: Conditioning | None,
    cfg: float,
) -> Tensor:
    """Classifier-free guidance ``v_u + cfg (v_c - v_u)`` with one batched pass over [uncond; cond].

    ``forward(x, sigma[B], cond)`` is the backend's network call. Without ``uncond``, or at ``cfg = 1``, only the
    conditional pass runs (so CFG 1 is exactly the conditional velocity).
    """
    batch = x.shape[0]
    s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    s = s.expand(batch) if s.ndim == 0 else s
    if uncond is None or cfg == 1.0:
        return forward(x, s, cond)
    v_u, v_c = forward(
        torch.cat([x, x]), torch.cat([s, s]), Conditioning.cat([uncond, cond])
    ).chunk(2)
    return v_u + cfg * (v_c - v_u)


def encode_prompts(model: FlowModel, prompts: list[str]) -> Conditioning:
    """One row per prompt, each distinct prompt encoded once and on its own: a group's K images share one
    encoding, and a row depends only on its prompt, never on the rest of the batch (a text encoder's batched
    matmuls can round a row differently at another batch size)."""
    unique = list(dict.fromkeys(prompts))
    position = {p: i for i, p in enumerate(unique)}
    parts = Conditioning.cat([model.encode([p]) for p in unique])
    return parts.select(torch.tensor([position[p] for p in prompts], device=parts.embeds.device))


def repeat_rows(cond: Conditioning, n: int) -> Conditioning:
    """A one-row conditioning repeated for ``n`` images (a copy, like encoding the prompt ``n`` times)."""
    return cond.select(torch.zeros(n, dtype=torch.long, device=cond.embeds.device))
