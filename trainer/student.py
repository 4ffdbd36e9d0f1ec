"""The base model and the adapters a recipe trains or consults: the student (trainable), teachers and anchor
(frozen), all LoRAs on one base network.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from flowmodels import adapters
from flowmodels.adapters import LoraSpec
from flowmodels.backend import FlowModel
from flowmodels.models import load_model
from trainer.config import RunConfig
from trainer.folders import check_adapter_base, read_manifest, resolve_model

if TYPE_CHECKING:
    from trainer.runs import Run

log = logging.getLogger(__name__)


STUDENT = "student"


def weight_dtype(rcfg: RunConfig) -> torch.dtype:
    """Base weights in the mixed-precision dtype (Flow-GRPO: fp16), LoRA weights always float32."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(rcfg.mixed_precision, torch.float32)


def load_base(run: Run, model: str, t5_length: int = 128) -> FlowModel:
    """Load the base model on this process's device (the main process builds the tiny model first)."""

    with run.acc.main_process_first():
        return load_model(
            resolve_model(model),
            dtype=weight_dtype(run.rcfg),
            device=str(run.acc.device),
            t5_length=t5_length,
        )


def attach_student(
    run: Run, net: nn.Module, spec: LoraSpec, init: str | None, base: str
) -> LoraSpec:
    """The trainable ``student`` adapter: fresh (``spec``) or loaded from ``init`` (a run folder or LoRA)."""
    if init is None:
        adapters.add_lora(net, STUDENT, spec, trainable=True)
        used = spec
    else:
        folder = check_adapter_base("init", init, base)
        info = adapters.load_adapter(net, folder, STUDENT, trainable=True)
        used = LoraSpec(
            rank=int(info.config.get("r", spec.rank)),
            alpha=int(info.config.get("lora_alpha", spec.alpha)),
            targets=tuple(sorted(info.config.get("target_modules") or spec.targets)),
            init=spec.init,
        )
        parent_dir = folder.parent if (folder.parent / "manifest.json").exists() else folder
        manifest = read_manifest(parent_dir)
        run.parent = {
            "path": str(init),
            "run_id": manifest.get("run_id"),
            "step": manifest.get("step"),
        }
        log.info("student initialised from %s", folder)
    for p in net.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    adapters.activate(net, STUDENT)
    return used


def attach_frozen(net: nn.Module, name: str, folder: Path) -> None:
    """A frozen adapter (teacher or anchor) on the same base; the student stays the active adapter."""
    adapters.load_adapter(net, folder, name, trainable=False)
    adapters.activate(net, STUDENT)
