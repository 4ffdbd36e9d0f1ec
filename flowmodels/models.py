"""Load a text-to-image model by hub id or local path, picking the backend from its ``model_index.json``.

A pipeline class in ``BACKENDS`` has a ``FlowModel`` backend (trained and evaluated); one in
``flowmodels.pipelines.FAMILIES`` is evaluated through its own diffusers pipeline (``load_for_sampling``); any other
is one line naming what is supported.

Users call ``load_model("stabilityai/stable-diffusion-3.5-medium")`` or ``load_model("/path/to/copy")``; tests
call the same function on a tiny model saved to disk. A model that is neither a folder nor in the Hugging Face
cache (offline) raises ``ModelNotFoundError`` with one line that says how to get it.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flowbase.errors import InputError, MissingError
from flowmodels.backend import FlowModel
from flowmodels.pipelines import (
    FAMILIES,
    Family,
    PipelineModel,
    family_record,
    family_settings,
    missing_components,
    read_json,
)

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
        _check_complete(path, model, hub_id=False)
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
    _check_complete(Path(folder), name, hub_id=True)
    return Path(folder)


def _check_complete(folder: Path, model: str | Path, hub_id: bool) -> None:
    """Every component ``model_index.json`` names has its weights here, else one line listing all missing."""
    missing = missing_components(folder)
    if not missing:
        return
    how = (
        f"`hf download {model}` on a machine with hub access and copy the Hugging Face cache"
        if hub_id
        else "copy them from the original or save the whole pipeline again (save_pretrained)"
    )
    raise ModelNotFoundError(
        f"model {str(model)!r} lacks the weights of {', '.join(missing)} (in {folder}): {how}"
    )


def supported_line() -> str:
    """What can be loaded, for the error on any other pipeline class."""
    train = ", ".join(sorted(BACKENDS))
    evaluate = ", ".join(sorted(c for c in FAMILIES if c not in BACKENDS))
    return f"train + evaluate: {train}; evaluate only: {evaluate} (harness ls models)"


def pipeline_class(folder: Path) -> str:
    """The pipeline class ``folder/model_index.json`` names (``""`` if none)."""
    return str(read_json(folder / "model_index.json").get("_class_name", ""))


def _kind(folder: Path, model: str | Path) -> tuple[str, Any, Family | None]:
    """(pipeline class, backend class or None, family or None) for a model folder; an unsupported pipeline is an
    ``InputError`` naming what is supported."""
    cls_name = pipeline_class(folder)
    if cls_name in BACKENDS:
        module, attr = BACKENDS[cls_name].split(":")
        return cls_name, getattr(importlib.import_module(module), attr), None
    if cls_name in FAMILIES:
        return cls_name, None, FAMILIES[cls_name]
    raise InputError(f"{model}: pipeline {cls_name!r} is not supported; {supported_line()}")


def _backend(folder: Path, model: str | Path) -> Any:
    """The ``FlowModel`` backend class named by ``folder/model_index.json``; a pipeline that can only be
    evaluated, or an unknown one, is an ``InputError``."""
    cls_name, backend, _ = _kind(folder, model)
    if backend is None:
        raise InputError(
            f"{model}: {cls_name} can be evaluated but has no FlowModel backend "
            f"(training, LoRA, SDE sampling); backends: {', '.join(sorted(BACKENDS))}"
        )
    return backend


def check_sampling(model: str | Path, *, lora: str | None = None, noise_level: float = 0.0) -> None:
    """Refuse, before any work, what an evaluation-only pipeline cannot do: a LoRA or SDE sampling."""
    folder = resolve_model_dir(model)
    cls_name, backend, _ = _kind(folder, model)
    if backend is not None:
        return
    if lora is not None:
        raise InputError(f"{model}: {cls_name} is evaluated through its own pipeline; no LoRA")
    if noise_level != 0:
        raise InputError(
            f"{model}: {cls_name} samples with its own scheduler; noise level must be 0 (ODE)"
        )


def model_record(model: str | Path) -> dict[str, Any]:
    """What a run's protocol records about the model family (``flowmodels.pipelines.family_record``): pipeline,
    guidance kind, scheduler and its shift, text-encoder lengths; read from config files."""
    folder = resolve_model_dir(model)
    _, backend, family = _kind(folder, model)
    name = None if backend is None else f"{backend.__module__}:{backend.__name__}"
    return family_record(folder, family, name)


def native_settings(model: str | Path | FlowModel) -> dict[str, Any]:
    """The sampling settings a model declares as its own (``height``, ``width``, ``steps``, ``cfg``; the mini
    model: 32 px, 10 steps), {} when it declares none (SD3: the paper's protocol applies). A name or folder is read
    from its config files without loading weights; a loaded model answers for itself. Every entry point (``harness
    generate``, ``harness eval``, ``harness.evaluate``) fills what the user left unset from here."""
    if not isinstance(model, (str, Path)):
        own = getattr(model, "native_settings", None)
        return dict(own()) if callable(own) else {}
    folder = resolve_model_dir(model)
    _, backend, family = _kind(folder, model)
    if family is not None:
        return family_settings(folder, family)
    declared = getattr(backend, "folder_settings", None)
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


def load_for_sampling(
    model: str | Path,
    *,
    dtype: str | torch.dtype = "auto",
    device: str = "auto",
    t5_length: int = 128,
) -> FlowModel | PipelineModel:
    """What ``harness eval`` and ``harness generate`` sample from: the ``FlowModel`` backend where the pipeline
    has one (``load_model``), else the diffusers pipeline itself (``flowmodels.pipelines.PipelineModel``)."""
    folder = resolve_model_dir(model)
    cls_name, backend, family = _kind(folder, model)
    if family is None:
        return load_model(model, dtype=dtype, device=device, t5_length=t5_length)
    dev = resolve_device(device)
    loaded = PipelineModel.from_pretrained(
        folder, str(model), family, dtype=resolve_dtype(dtype, dev), device=dev
    )
    log.info("loaded %s (%s, evaluation only) on %s", model, cls_name, dev)
    return loaded


@dataclass(frozen=True)
class ModelInfo:
    """One supported pipeline class as ``harness ls models`` shows it."""

    family: str
    pipeline: str  # the _class_name in model_index.json
    trains: bool  # a FlowModel backend: training, LoRA, SDE rollouts; else evaluation only
    loader: str  # the backend class ("module:Class") or "diffusers <pipeline class>"
    # the defaults it declares whatever the folder (steps, cfg, height, width, guidance; {}: none, the paper's
    # protocol applies); None: each model folder declares its own
    settings: dict[str, Any] | None
    size_own: bool = (
        False  # the size is each model's own (its denoiser's sample_size x the VAE's scale)
    )


def _backend_settings(cls_name: str, backend: Any) -> dict[str, Any] | None:
    """A backend's defaults when they do not depend on the folder: a built-in model's own, {} for a backend
    that declares none (the paper's protocol applies), else None (each folder's own)."""
    for name, folder in BUILTIN_MODELS.items():
        if (folder / "model_index.json").exists() and pipeline_class(folder) == cls_name:
            return native_settings(name)
    if getattr(backend, "folder_settings", None) is None:
        return {}
    return None


def model_infos() -> list[ModelInfo]:
    """Every supported pipeline class: the ``FlowModel`` backends (``BACKENDS``), then the evaluation-only
    families (``flowmodels.pipelines.FAMILIES``)."""
    out = []
    for cls_name, spec in BACKENDS.items():
        module, attr = spec.split(":")
        backend = getattr(importlib.import_module(module), attr)
        settings = _backend_settings(cls_name, backend)
        out.append(ModelInfo(attr, cls_name, True, spec, settings))
    for cls_name, fam in FAMILIES.items():
        if cls_name in BACKENDS:
            continue
        settings = {"steps": fam.steps, "cfg": fam.guidance, "guidance": fam.guidance_kind}
        out.append(ModelInfo(fam.name, cls_name, False, f"diffusers {cls_name}", settings, True))
    return out
