"""Named PEFT LoRA adapters on one frozen base network (docs/method.md 5.8).

Student, teachers and the MAR anchor are adapters on the same denoiser: memory is base + K adapters, not K models.
PEFT's own switching marks whichever adapter is active as trainable; here trainability is a property of the adapter
(``trainable=True`` for the student only), restored after every switch. Adapters are saved in the layout that
``peft.PeftModel.save_pretrained`` writes (``adapter_config.json`` + ``adapter_model.safetensors`` with
``base_model.model.`` keys), which is also how Flow-GRPO publishes its LoRA checkpoints, plus our
``manifest.json`` (base model, adapter config, step, git sha).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowbase.errors import InputError, MissingError

log = logging.getLogger(__name__)

# Flow-GRPO's SD3 targets (train_sd3.py): the joint attention's projections, named from "attn." so that PEFT's
# suffix match leaves SD3.5-M's second attention (attn2, in its first 13 blocks) alone, as Flow-GRPO's LoRAs do.
SD3_LORA_TARGETS = (
    "attn.add_k_proj",
    "attn.add_q_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "attn.to_k",
    "attn.to_out.0",
    "attn.to_q",
    "attn.to_v",
)
_PEFT_PREFIX = "base_model.model."
_TRAINABLE_ATTR = "_flow_opd_trainable_adapters"


@dataclass(frozen=True)
class LoraSpec:
    """LoRA hyperparameters; the defaults are Flow-GRPO's SD3.5-M recipe (r 32, alpha 64, gaussian init)."""

    rank: int = 32
    alpha: int = 64
    targets: tuple[str, ...] = SD3_LORA_TARGETS
    init: str = "gaussian"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise InputError(f"LoRA rank must be >= 1, got {self.rank}")

    def peft_config(self) -> Any:
        from peft import LoraConfig

        init: bool | str = True if self.init == "default" else self.init
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            target_modules=list(self.targets),
            init_lora_weights=init,
            lora_dropout=self.dropout,
        )


@dataclass
class AdapterInfo:
    """What is known about a loaded adapter: where from, its PEFT config and our manifest (if any)."""

    name: str
    source: str
    config: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def base_model(self) -> str | None:
        return self.manifest.get("base_model") or self.config.get("base_model_name_or_path")


class AdapterNotFoundError(MissingError):
    """An adapter path or hub id that cannot be found (offline, or a typo)."""


def _tuner_layers(module: nn.Module) -> Iterator[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for m in module.modules():
        if isinstance(m, BaseTunerLayer):
            yield m


def adapter_names(module: nn.Module) -> list[str]:
    """Names of the adapters attached to ``module``, in insertion order."""
    return list(getattr(module, "peft_config", {}).keys())


def _sync_grads(module: nn.Module) -> None:
    """Trainable adapters require grad, every other adapter and the base stay frozen."""
    trainable: set[str] = getattr(module, _TRAINABLE_ATTR, set())
    for pname, p in module.named_parameters():
        if "lora_" not in pname:
            continue
        p.requires_grad_(any(f".{name}." in pname for name in trainable))


def add_lora(module: nn.Module, name: str, spec: LoraSpec, *, trainable: bool = False) -> None:
    """Attach a new LoRA adapter ``name`` (zero delta: B starts at 0) and make it the active one."""
    if name in adapter_names(module):
        raise ValueError(f"adapter {name!r} already exists on this model: {adapter_names(module)}")
    for p in module.parameters():
        p.requires_grad_(False)
    _inject(spec.peft_config(), module, name)
    if trainable:
        _mark_trainable(module, name, True)
    activate(module, name)


def _inject(config: Any, module: nn.Module, name: str) -> None:
    """PEFT's injection, without its warning that several adapters share a model (that is the design)."""
    import warnings

    from peft import inject_adapter_in_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*multiple adapters.*")
        inject_adapter_in_model(config, module, adapter_name=name)


def activate(module: nn.Module, name: str) -> None:
    """Make adapter ``name`` the one the forward pass uses (and re-enable adapters if they were disabled)."""
    names = adapter_names(module)
    if name not in names:
        raise KeyError(f"no adapter {name!r} on this model; attached: {names}")
    for layer in _tuner_layers(module):
        layer.set_adapter(name, inference_mode=True)
        layer._disable_adapters = False
    _sync_grads(module)


def active_adapter(module: nn.Module) -> str | None:
    """The active adapter's name, or None when adapters are disabled or absent."""
    for layer in _tuner_layers(module):
        if layer.disable_adapters:
            return None
        return layer.active_adapters[0]
    return None


@contextmanager
def using(module: nn.Module, name: str | None) -> Iterator[None]:
    """Run with adapter ``name`` active (``None``: the base, adapters disabled); restores the previous state."""
    previous = active_adapter(module)
    if name is None:
        _set_enabled(module, False)
    else:
        activate(module, name)
    try:
        yield
    finally:
        if previous is None:
            _set_enabled(module, False)
        else:
            activate(module, previous)


@contextmanager
def per_row(module: nn.Module, names: list[str]) -> Iterator[None]:
    """Run row ``i`` of each batch under adapter ``names[i]`` (PEFT's mixed-adapter batch): one pass over every row
    of the base plus each adapter's LoRA on its own rows, the same numbers as one pass per adapter and no adapter
    switch. A batch that repeats its rows (classifier-free guidance's [uncond; cond]) repeats the names. Only where
    ``mixable`` says so."""
    missing = sorted(set(names) - set(adapter_names(module)))
    if missing:
        raise KeyError(f"no adapter {missing} on this model; attached: {adapter_names(module)}")

    def inject(layer: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        rows = (args[0] if args else kwargs["x"]).shape[0]
        if rows % len(names):
            raise ValueError(f"{len(names)} adapter names for a batch of {rows} rows")
        return args, {**kwargs, "adapter_names": names * (rows // len(names))}

    handles = [
        layer.register_forward_pre_hook(inject, with_kwargs=True) for layer in _tuner_layers(module)
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def mixable(module: nn.Module) -> bool:
    """Whether ``per_row`` can run this module's adapters: plain LoRA on linear layers only, enabled, none merged,
    no DoRA (what PEFT's mixed-adapter batch takes)."""
    from peft.tuners.lora import Linear

    layers = list(_tuner_layers(module))
    return bool(layers) and all(
        type(m) is Linear
        and not m.disable_adapters
        and not m.merged
        and not any(m.use_dora.values())
        for m in layers
    )


def disabled(module: nn.Module) -> Any:
    """Context: run the base network with every adapter off (the KL reference in GRPO)."""
    return using(module, None)


def _set_enabled(module: nn.Module, enabled: bool) -> None:
    for layer in _tuner_layers(module):
        layer._disable_adapters = not enabled
    _sync_grads(module)


def set_trainable(module: nn.Module, name: str, trainable: bool) -> None:
    """Mark adapter ``name`` trainable or frozen."""
    if name not in adapter_names(module):
        raise KeyError(f"no adapter {name!r} on this model; attached: {adapter_names(module)}")
    _mark_trainable(module, name, trainable)
    _sync_grads(module)


def _mark_trainable(module: nn.Module, name: str, trainable: bool) -> None:
    names: set[str] = getattr(module, _TRAINABLE_ATTR, set())
    (names.add if trainable else names.discard)(name)
    setattr(module, _TRAINABLE_ATTR, names)


def adapter_state(module: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The adapter's weights with PEFT's saved key names (``base_model.model.<path>.lora_A.weight``)."""
    from peft import get_peft_model_state_dict

    sd = get_peft_model_state_dict(module, adapter_name=name, save_embedding_layers=False)
    return {_PEFT_PREFIX + k: v.detach().clone() for k, v in sd.items()}


def load_adapter_state(module: nn.Module, name: str, state: dict[str, torch.Tensor]) -> None:
    """Load weights in PEFT's saved key format into the existing adapter ``name``; every key must match."""
    from peft import set_peft_model_state_dict

    stripped = {k.removeprefix(_PEFT_PREFIX): v for k, v in state.items()}
    result = set_peft_model_state_dict(module, stripped, adapter_name=name)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise InputError(
            f"adapter {name!r}: {len(unexpected)} weights do not fit this model, e.g. {unexpected[:3]} "
            "(is it a LoRA for another base model?)"
        )
    expected = {k for k in adapter_state(module, name)}
    missing = expected - {_PEFT_PREFIX + k for k in stripped}
    if missing:
        raise InputError(
            f"adapter {name!r}: {len(missing)} LoRA weights missing from the checkpoint, e.g. "
            f"{sorted(missing)[:3]}"
        )


def save_adapter(
    module: nn.Module,
    name: str,
    out_dir: str | Path,
    manifest: dict[str, Any] | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write adapter ``name`` as a PEFT folder plus ``manifest.json``; returns the folder. ``state``: its weights
    as ``adapter_state`` gives them, when the caller already holds them whole (a sharded module's are gathered)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = module.peft_config[name]  # type: ignore[index]
    cfg = config.to_dict()
    cfg["target_modules"] = sorted(cfg["target_modules"]) if cfg.get("target_modules") else None
    if manifest and manifest.get("base_model"):
        cfg["base_model_name_or_path"] = manifest["base_model"]
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2, default=str))
    weights = adapter_state(module, name) if state is None else state
    save_file(
        {k: v.contiguous().cpu() for k, v in weights.items()},
        str(out / "adapter_model.safetensors"),
    )
    full = {"adapter": name, "adapter_config": cfg, **(manifest or {})}
    (out / "manifest.json").write_text(json.dumps(full, indent=2, default=str))
    return out


def resolve_adapter_dir(source: str | Path) -> Path:
    """A trainer run folder (its ``lora/``), a local PEFT folder, or a hub id resolved through the Hugging Face
    cache (downloaded when online). Every ``--lora`` and every recipe's adapter path goes through here."""
    path = Path(source)
    if (path / "lora" / "adapter_config.json").exists():
        return path / "lora"
    if path.exists():
        if not (path / "adapter_config.json").exists():
            manifest = path / "manifest.json"
            output = json.loads(manifest.read_text()).get("output") if manifest.is_file() else None
            what = f"its manifest says output={output!r}" if output else "no lora/"
            raise AdapterNotFoundError(
                f"{path} is neither a run folder with a lora/ adapter nor a PEFT LoRA folder ({what})"
            )
        return path
    repo, _, sub = str(source).partition("::")
    try:
        from huggingface_hub import snapshot_download

        patterns = ["adapter_config.json", "adapter_model.safetensors", "manifest.json"]
        if sub:
            patterns = [f"{sub}/{p}" for p in patterns]
        snap = Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as e:  # the hub raises several types for "not there / offline"
        raise AdapterNotFoundError(
            f"LoRA {str(source)!r} is neither a local folder nor available from the hub cache "
            f"({type(e).__name__}); download it where the hub is reachable "
            f"(`hf download {repo}`) or pass the folder's path"
        ) from None
    found = snap / sub if sub else snap
    if not (found / "adapter_config.json").exists():
        raise AdapterNotFoundError(f"{source}: no adapter_config.json in {found}")
    return found


def load_adapter(
    module: nn.Module, source: str | Path, name: str, *, trainable: bool = False
) -> AdapterInfo:
    """Attach the PEFT LoRA at ``source`` (folder or hub id, Flow-GRPO checkpoints as published) as ``name``."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    folder = resolve_adapter_dir(source)
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{folder / 'adapter_config.json'} is not valid JSON ({e})") from None
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    known = set(LoraConfig.__dataclass_fields__)
    lora_cfg = LoraConfig(**{k: v for k, v in config.items() if k in known and k != "peft_type"})
    lora_cfg.inference_mode = False
    weights = folder / "adapter_model.safetensors"
    if weights.exists():
        state = load_file(str(weights))
    elif (folder / "adapter_model.bin").exists():
        state = torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise AdapterNotFoundError(f"{folder}: no adapter_model.safetensors")

    if name in adapter_names(module):
        raise ValueError(f"adapter {name!r} already exists on this model: {adapter_names(module)}")
    for p in module.parameters():
        p.requires_grad_(False)
    _inject(lora_cfg, module, name)
    if trainable:
        _mark_trainable(module, name, True)
    load_adapter_state(module, name, state)
    activate(module, name)
    log.info("loaded adapter %s from %s", name, folder)
    return AdapterInfo(name=name, source=str(source), config=config, manifest=manifest)


def fuse(module: nn.Module) -> str | None:
    """Fold the active adapter into the base weights and drop every adapter (inference only; diffusers calls
    this ``fuse_lora``). A forward pass then costs what the base's does: in the mini model a rank-48 LoRA more
    than doubles each linear layer's work. Returns the fused adapter's name (None: nothing to fuse)."""
    name = active_adapter(module)
    tuners = set(_tuner_layers(module))
    layers = [(n, m) for n, m in module.named_modules() if m in tuners]
    if name is not None:
        for _, layer in layers:
            layer.merge(adapter_names=[name])  # type: ignore[attr-defined]
    for path, layer in layers:
        parent_path, _, child = path.rpartition(".")
        parent = module.get_submodule(parent_path) if parent_path else module
        setattr(parent, child, layer.get_base_layer())  # type: ignore[attr-defined]
    for attr in ("peft_config", _TRAINABLE_ATTR):
        if hasattr(module, attr):
            delattr(module, attr)
    return name


def spec_dict(spec: LoraSpec) -> dict[str, Any]:
    """The spec as plain data (for manifests and configs)."""
    return asdict(spec)
