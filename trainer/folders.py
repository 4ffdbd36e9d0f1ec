"""Run folders, the hand-over between stages, and what they say: manifests, the adapter or model a folder holds,
the base model a LoRA belongs to.

    runs/<name>/config.yaml       resolved config (every field)
    runs/<name>/manifest.json     run id, recipe, git sha, base model, parent run, step, world size, output,
                                  split audit and contamination verdict
    runs/<name>/lora/             the trained adapter (PEFT layout; EMA weights when EMA is on)
    runs/<name>/merged/           (merge with output=merged) a full diffusers model folder
    runs/<name>/checkpoints/step_N/  adapter, optimizer, scheduler, EMA, per-rank RNG, step and epoch
    runs/<name>/best/             (run.keep_best) the best evaluated step's adapter and best.json
    runs/<name>/logs/             TensorBoard (or W&B) events;  runs/<name>/metrics.jsonl: the same scalars
    runs/<name>/teacher_samples/  (SFT) the teachers' samples, cached per rank
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from flowmodels import adapters
from flowmodels.models import BUILTIN_MODELS
from flowmodels.tiny import default_tiny_dir, save_tiny_sd3
from trainer.config import ConfigError

TINY = "tiny"  # `model: tiny` builds the offline tiny SD3 on demand (flowmodels.tiny.default_tiny_dir())
# what the recipes write into a run folder (run.overwrite clears these and leaves anything else alone)
RUN_ENTRIES = (
    "config.yaml",
    "manifest.json",
    "metrics.jsonl",
    "lora",
    "merged",
    "checkpoints",
    "best",
    "logs",
    "teacher_samples",
)


def clear_run(folder: str | Path) -> list[str]:
    """Remove a run's own files from ``folder`` (``RUN_ENTRIES``); returns the names removed."""
    gone = []
    for name in RUN_ENTRIES:
        path = Path(folder) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        gone.append(name)
    return gone


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """``manifest.json`` of a run folder or adapter folder ({} when absent)."""
    path = Path(folder) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def resolve_model(model: str) -> str:
    """``tiny`` -> the tiny SD3 folder (built on first use); a run folder with ``merged/`` -> that folder."""
    if model == TINY:
        return str(save_tiny_sd3(default_tiny_dir()))

    if model in BUILTIN_MODELS and not Path(model).exists():
        return str(BUILTIN_MODELS[model])
    path = Path(model)
    if (path / "merged" / "model_index.json").exists():
        return str(path / "merged")
    return model


def recorded_base(folder: str | Path) -> str | None:
    """The base model a LoRA was trained on, as our manifests record it (None when unknown)."""
    lora = Path(folder)
    for candidate in (lora, lora.parent):
        manifest = read_manifest(candidate)
        if manifest.get("base_model"):
            return str(manifest["base_model"])
    return None


def same_base(a: str, b: str) -> bool:
    """Whether two base-model names denote the same model (equal names, or the same local folder)."""
    if a == b:
        return True
    ra, rb = (resolve_model(x) for x in (a, b))
    pa, pb = Path(ra), Path(rb)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return False


def check_adapter_base(role: str, source: str, base: str) -> Path:
    """Resolve an adapter and fail (before any work) if our manifest says it belongs to another base."""
    try:
        folder = adapters.resolve_adapter_dir(source)
    except adapters.AdapterNotFoundError as e:
        raise ConfigError(f"{role} {source!r}: {e}") from None
    theirs = recorded_base(folder)
    if theirs is not None and not same_base(theirs, base):
        raise ConfigError(
            f"{role} {source!r} is a LoRA for base model {theirs!r}, but this run's base is {base!r}: "
            "adapters only make sense on the base they were trained on"
        )
    return folder
