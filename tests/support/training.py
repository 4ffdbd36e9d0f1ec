"""Overrides and stand-in adapters the recipe tests share."""

from __future__ import annotations

from pathlib import Path

import torch

from flowmodels.adapters import LoraSpec, add_lora, save_adapter
from flowmodels.models import load_model
from flowmodels.tiny import default_tiny_dir

QUIET = ["run.log_with=none"]  # no TensorBoard files in test runs


def synthetic_lora(
    folder: Path, seed: int, scale: float, base: str = "tiny", rank: int = 4
) -> Path:
    """A LoRA on the tiny model with random A and B (a stand-in teacher that differs from the base)."""
    model = load_model(default_tiny_dir())
    torch.manual_seed(seed)  # A's gaussian init draws from the global generator
    add_lora(model.denoiser, "t", LoraSpec(rank=rank, alpha=2 * rank))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.denoiser.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return save_adapter(model.denoiser, "t", folder, {"base_model": base})
