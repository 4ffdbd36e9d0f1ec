"""Load a text-to-image model by hub id or local path, picking the backend from its ``model_index.json``.

Users call ``load_model("stabilityai/stable-diffusion-3.5-medium")`` or ``load_model("/path/to/copy")``; tests
call the same function on a tiny model saved to disk. A model that is neither a folder nor in the Hugging Face
cache (offline) raises ``ModelNotFoundError`` with one line that says how to get it.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from flowbase.errors import InputError, MissingError
from flowmodels.backend import FlowModel

log = logging.getLogger(__name__)

# pipeline class in model_index.json -> backend class ("module:Class")
BACKENDS = {
    "StableDiffusion3Pipeline": "flowmodels.sd3:SD3",
    "FluxPipeline": "flowmodels.flux:Flux",
    "MiniFlowPipeline": "flowmodels.mini:MiniFlow",
}


# Models that ship inside the package, by name (each also loads by its folder path).
BUILTIN_MODELS = {
    "mini": Path(__file__).parent
    / "assets"
    / "mini-base",  # the mini world's base (`python -m trainer.pretrain`)
}


class ModelNotFoundError(MissingError):
    """The model is neither a local folder nor available from the hub (cache)."""


DEVICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU; a device this machine does not have is an ``InputError``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device {device!r}; use one of {DEVICES}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch is a CPU build"
                if torch.version.cuda is None
                else "no CUDA GPU is visible"
            )
            raise InputError(f"device {device!r} is not available here ({why}); use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device {device!r} is not available here ({torch.cuda.device_count()} CUDA GPUs: "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} is not available here (no Apple MPS); use cpu or auto")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {device!r} is not supported; use one of {DEVICES}")
    return dev


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA and float32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in table:
        raise InputError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(table)}")
    return table[dtype]


def _missing(model: str, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model {model!r} is not available here ({why}): download it on a machine with hub access "
        f"(`hf download {model}`, after accepting its licence) and copy the Hugging Face cache, "
        "or pass --model /path/to/a/local/copy"
    )


def resolve_model_dir(model: str | Path) -> Path:
    """The folder holding ``model_index.json``: the path itself, or the hub snapshot (cached or downloaded)."""
    path = Path(model)
    if str(model) in BUILTIN_MODELS and not path.exists():
        path = BUILTIN_MODELS[str(model)]
        if not (path / "model_index.json").exists():
            raise ModelNotFoundError(
                f"the built-in {model!r} model is missing from {path}; rebuild it with "
                f"`python -m trainer.pretrain --out {path}`"
            )
        return path
    if path.exists():
        if not (path / "model_index.json").exists():
            raise ModelNotFoundError(
                f"{path} is not a diffusers model folder (no model_index.json); "
                "save one with `pipeline.save_pretrained(dir)`"
            )
        return path
    name = str(model)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise _missing(name, "no such folder, and not a hub id of the form org/name")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            name,
            allow_patterns=[
                "model_index.json",
                "*/*.json",
                "*/*.safetensors",
                "*/*.txt",
                "*/*.model",
            ],
        )
    except (
        Exception
    ) as e:  # LocalEntryNotFoundError, OfflineModeIsEnabled, GatedRepoError, HTTP errors
        raise _missing(name, f"{type(e).__name__}") from None
    return Path(folder)


def _backend(folder: Path, model: str | Path) -> Any:
    """The backend class named by ``folder/model_index.json``."""
    try:
        spec = json.loads((folder / "model_index.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{folder / 'model_index.json'} is not valid JSON ({e})") from None
    cls_name = spec.get("_class_name", "") if isinstance(spec, dict) else ""
    if cls_name not in BACKENDS:
        raise InputError(
            f"{model}: pipeline {cls_name!r} has no backend yet; supported: {sorted(BACKENDS)}"
        )
    module, attr = BACKENDS[cls_name].split(":")
    return getattr(importlib.import_module(module), attr)


def native_settings(model: str | Path | FlowModel) -> dict[str, Any]:
    """The sampling settings a model declares as its own (``height``, ``width``, ``steps``, ``cfg``; the mini
    model: 32 px, 10 steps), {} when it declares none (SD3: the paper's protocol applies). A name or folder is read
    from its config files without loading weights; a loaded model answers for itself. Every entry point (``harness
    generate``, ``harness eval``, ``harness.evaluate``) fills what the user left unset from here."""
    if not isinstance(model, (str, Path)):
        own = getattr(model, "native_settings", None)
        return dict(own()) if callable(own) else {}
    folder = resolve_model_dir(model)
    declared = getattr(_backend(folder, model), "folder_settings", None)
    return dict(declared(folder)) if callable(declared) else {}


def load_model(
    model: str | Path,
    *,
    dtype: str | torch.dtype = "auto",
    device: str = "auto",
    t5_length: int = 128,
) -> FlowModel:
    """Load any supported model by hub id or local folder."""
    folder = resolve_model_dir(model)
    backend = _backend(folder, model)
    dev = resolve_device(device)
    loaded: FlowModel = backend.from_pretrained(
        folder, str(model), dtype=resolve_dtype(dtype, dev), device=dev, t5_length=t5_length
    )
    log.info("loaded %s (%s) on %s", model, backend.__name__, dev)
    return loaded
