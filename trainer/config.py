"""Recipe configs: a frozen dataclass is the schema and holds the defaults; YAML and ``a.b=v`` only override.

``parse(Config)`` reads ``[CONFIG.yaml] [key=value ...]`` from the command line. Values are YAML
scalars or flow collections (``rewards={ocr: 1.0}``), checked against the field types; an unknown key is an error
that lists the valid keys. Nested dataclasses merge key by key; ``dict`` fields are replaced by a YAML value and
updated item by item by a dotted override (``teachers.ocr=runs/grpo_ocr``). There is no YAML inheritance and no
derived value in YAML: per-GPU numbers come from the world size at run time.

The shared groups used by the GRPO, SFT and OPD recipes live here too (``RunConfig``, ``OptimConfig``,
``SampleConfig``), so each default has one home.
"""

from __future__ import annotations

import dataclasses
import difflib
import random
import sys
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from flowbase.errors import InputError, UserError, one_line
from flowmodels.adapters import LoraSpec

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "DataConfig",
    "LoraSpec",
    "OptimConfig",
    "RunConfig",
    "SampleConfig",
    "dump",
    "entry_point",
    "from_dict",
    "help_text",
    "parse",
    "to_dict",
]


class ConfigError(InputError):
    """A config that cannot be used: unknown key, wrong type, or a value out of range (a ``UserError``, still a
    ``ValueError``)."""


@dataclass(frozen=True)
class RunConfig:
    """Where a run writes, how long it lasts, and the loop glue (accelerate, checkpoints, EMA, logging, eval)."""

    out: str = "runs/run"  # run folder: config.yaml, manifest.json, lora/, checkpoints/, logs/
    seed: int = 42
    max_steps: int = 1000  # optimizer steps
    mixed_precision: Literal["no", "fp16", "bf16"] = (
        "fp16"  # Flow-GRPO trains SD3.5 in fp16 (LoRA in fp32)
    )
    cpu: bool = False  # force CPU even when CUDA is present
    save_every: int = (
        0  # checkpoint every N optimizer steps (at the end of an epoch); 0: final only
    )
    keep_checkpoints: int = 2
    # A folder that already holds a run (a manifest, a checkpoint or logged steps) is refused unless one of these
    # says what to do with it. resume: "auto" (continue from the latest checkpoint under out/checkpoints; a run
    # finished at run.max_steps does nothing) or a checkpoint folder. overwrite: clear the run's files, then train.
    resume: str | None = None
    overwrite: bool = False
    log_with: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    log_every: int = 1
    ema: bool = True  # Flow-GRPO: EMA of the LoRA, used for eval and the saved adapter
    ema_decay: float = 0.9
    ema_every: int = 8
    # "batch": Flow-GRPO's cadence, after every training batch when (step + 1) % ema_every == 0 (so once per batch
    # of that step's accumulation); "step": once after every optimizer step with step % ema_every == 0
    ema_cadence: Literal["batch", "step"] = "batch"
    eval_every: int = 0  # in-loop evaluation through harness.evaluate every N steps; 0: off
    eval_benchmarks: tuple[str, ...] = ()
    eval_limit: int | None = None  # prompts per benchmark (None: the whole benchmark)
    eval_store: str | None = None  # DuckDB store path (None: the harness default)
    eval_steps: int = (
        40  # Euler ODE steps of the evaluation protocol (the paper: 40); CFG and size: sample.*
    )
    # Checkpoint selection: "benchmark/scorer" keys of the in-loop evaluation (e.g. mini_geneval_val/mini_geneval);
    # the saved lora/ is the evaluated weights whose mean of these scores was highest (the last step is always
    # evaluated). Empty: lora/ is the last step's weights. Use validation benchmarks, never the test ones.
    keep_best: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _positive("run.max_steps", self.max_steps)
        _non_negative("run.save_every", self.save_every)
        _non_negative("run.eval_every", self.eval_every)
        _positive("run.eval_steps", self.eval_steps)
        _positive("run.log_every", self.log_every)
        _positive("run.ema_every", self.ema_every)
        _positive("run.keep_checkpoints", self.keep_checkpoints)
        if self.overwrite and self.resume is not None:
            raise ConfigError(
                f"run.overwrite=true starts the run afresh but run.resume={self.resume!r} continues it: "
                "set one of them"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"run.ema_decay={self.ema_decay} must be in [0, 1)")
        if self.eval_every and not self.eval_benchmarks:
            raise ConfigError("run.eval_every > 0 needs run.eval_benchmarks (e.g. [geneval, ocr])")
        if self.keep_best and not self.eval_every:
            raise ConfigError(
                "run.keep_best chooses among in-loop evaluations: set run.eval_every > 0 and run.eval_benchmarks"
            )
        for key in self.keep_best:
            bench, _, scorer = key.partition("/")
            if not scorer or bench not in self.eval_benchmarks:
                raise ConfigError(
                    f"run.keep_best entry {key!r} must be 'benchmark/scorer' with the benchmark in "
                    f"run.eval_benchmarks ({', '.join(self.eval_benchmarks) or 'none'})"
                )


@dataclass(frozen=True)
class DataConfig:
    """What a recipe may train on (its prompt files are the recipe's ``datasets``)."""

    # Before any work every recipe audits its training prompts against the evaluation benchmarks (harness.splits):
    # a training prompt that is an evaluation prompt stops the run with one line. True trains on them anyway; the
    # manifest records it and every table, leaderboard row and page that shows the model marks it.
    allow_eval_prompts: bool = False


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with grad-norm clipping and a linear warmup (Flow-GRPO: lr 3e-4, wd 1e-4, clip 1.0)."""

    lr: float = 3e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0  # max grad norm; 0 disables
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr={self.lr} must be > 0")
        _non_negative("optim.warmup_steps", self.warmup_steps)
        if self.grad_clip < 0:
            raise ConfigError(f"optim.grad_clip={self.grad_clip} must be >= 0")


@dataclass(frozen=True)
class SampleConfig:
    """On-policy SDE rollouts (Flow-GRPO's SD3.5-M recipe, 32 GPUs: 48 groups of 24 images, 2 steps an epoch).

    ``groups_per_epoch`` and ``group_size`` are global; the per-GPU share, the number of batches per GPU and the
    gradient accumulation are derived from the world size (``trainer.epoch.epoch_layout``).
    """

    steps: int = 10  # SDE steps per trajectory (N)
    cfg: float = 4.5
    noise_level: float = 0.7  # a
    size: int = 512
    negative_prompt: str = ""
    t5_length: int = 128
    group_size: int = 24  # images per prompt (G)
    groups_per_epoch: int = 48  # prompts per epoch, over all GPUs
    batch_size: int = 9  # images per forward pass per GPU (sampling and training use the same size)
    steps_per_epoch: int = 2  # optimizer steps per epoch
    timestep_fraction: float = 0.99  # train the first int(fraction * N) steps (9 of 10)
    # How an epoch's samples are batched for training (Flow-GRPO: "samples", one permutation of every sample on the
    # process, cut into the epoch's batches again); "batches": the sampled batches as they are, in a shuffled order
    shuffle: Literal["samples", "batches"] = "samples"
    # Flow-GRPO-Fast / MixGRPO: SDE noise (and training) on only `sde_window_size` consecutive steps, whose start
    # is drawn each epoch from `sde_window_range` = [lo, hi) (default [0, N // 2)); the other steps are the ODE.
    # 0 = the SDE on every step and `timestep_fraction` decides what is trained.
    sde_window_size: int = 0
    sde_window_range: tuple[int, int] | None = None
    logprob: Literal["mean", "sum"] = (
        "mean"  # Flow-GRPO averages the log-density over latent elements
    )

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "size",
            "group_size",
            "groups_per_epoch",
            "batch_size",
            "steps_per_epoch",
        ):
            _positive(f"sample.{name}", getattr(self, name))
        if self.noise_level < 0:
            raise ConfigError(f"sample.noise_level={self.noise_level} must be >= 0")
        if self.sde_window_size < 0:
            raise ConfigError(f"sample.sde_window_size={self.sde_window_size} must be >= 0")
        if not 0.0 < self.timestep_fraction <= 1.0:
            raise ConfigError(
                f"sample.timestep_fraction={self.timestep_fraction} must be in (0, 1]"
            )
        if self.train_timesteps < 1:
            raise ConfigError(
                f"sample.timestep_fraction={self.timestep_fraction} x sample.steps={self.steps} "
                "trains no step; raise one of them"
            )
        if self.sde_window_size:
            lo, hi = self.window_range
            if not 0 <= lo < hi <= self.steps or self.sde_window_size > hi - lo:
                raise ConfigError(
                    f"sample.sde_window_range={[lo, hi]} must satisfy 0 <= lo < hi <= sample.steps={self.steps} "
                    f"and hold sample.sde_window_size={self.sde_window_size} steps"
                )

    @property
    def window_range(self) -> tuple[int, int]:
        """Where an SDE window may lie: ``sde_window_range`` or Flow-GRPO-Fast's default, the first half."""
        if self.sde_window_range is not None:
            lo, hi = self.sde_window_range
            return int(lo), int(hi)
        return 0, max(1, self.steps // 2)

    def sde_window(self, seed: int, epoch: int) -> tuple[int, int] | None:
        """This epoch's SDE window ``(start, stop)``: the same on every process (drawn from seed and epoch)."""
        if not self.sde_window_size:
            return None
        lo, hi = self.window_range
        start = random.Random(f"sde-window-{seed}-{epoch}").randint(lo, hi - self.sde_window_size)
        return start, start + self.sde_window_size

    def trained_steps(self, window: tuple[int, int] | None) -> list[int]:
        """The sampling steps an epoch trains on: the SDE window, or the first ``train_timesteps``."""
        return list(range(*window)) if window is not None else list(range(self.train_timesteps))

    @property
    def train_timesteps(self) -> int:
        """How many sampling steps an epoch trains: the window's size, else ``int(fraction * N)``."""
        return self.sde_window_size or int(self.timestep_fraction * self.steps)


def _positive(name: str, value: int | float) -> None:
    if value < 1:
        raise ConfigError(f"{name}={value} must be >= 1")


def _non_negative(name: str, value: int | float) -> None:
    if value < 0:
        raise ConfigError(f"{name}={value} must be >= 0")


# -- building a dataclass from plain data ------------------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    module = sys.modules.get(cls.__module__)
    ns = dict(vars(module)) if module else {}
    ns.update({"LoraSpec": LoraSpec, "Literal": Literal})
    return typing.get_type_hints(cls, globalns=ns)


def _valid_keys(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _unknown(key: str, cls: type, where: str) -> ConfigError:
    valid = _valid_keys(cls)
    hint = difflib.get_close_matches(key, valid, n=1)
    maybe = f" (did you mean {where}{hint[0]}?)" if hint else ""
    return ConfigError(f"unknown config key {where}{key!r}{maybe}; valid keys: {', '.join(valid)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (converting where YAML is loose, e.g. '3e-4' -> float)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}={value!r} fits none of {tp}")
    if origin is Literal:
        allowed = get_args(tp)
        if isinstance(
            value, bool
        ):  # YAML 1.1 reads no/off/yes/on as booleans: `mixed_precision=no`
            words = ("yes", "on", "true") if value else ("no", "off", "false")
            value = next((w for w in words if w in allowed), value)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} must be one of {', '.join(map(repr, allowed))}")
        return value
    if origin is tuple:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key} must have {len(args)} items, got {value!r}")
        return tuple(
            _coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        kt, vt = get_args(tp)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads '3e-4' as a string
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type[T], data: dict[str, Any], *, prefix: str = "") -> T:
    """Build ``cls`` from ``data`` on top of its defaults; unknown keys and wrong types are errors."""
    hints = _hints(cls)
    names = set(_valid_keys(cls))
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown(key, cls, prefix)
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or 'config'}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data (tuples as lists), suitable for YAML and JSON."""

    def plain(v: Any) -> Any:
        if is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def dump(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (every field, defaults included)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


# -- merging YAML and overrides ----------------------------------------------------------------------------------
def _field_type(cls: type, key: str, where: str) -> Any:
    hints = _hints(cls)
    if key not in hints or key not in _valid_keys(cls):
        raise _unknown(key, cls, where)
    return hints[key]


def _merge(
    cls: type, base: dict[str, Any], update: dict[str, Any], where: str = ""
) -> dict[str, Any]:
    """``update`` onto ``base``: nested dataclasses merge key by key, everything else is replaced."""
    if not isinstance(update, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {update!r}")
    out = dict(base)
    for key, value in update.items():
        tp = _field_type(cls, key, where)
        if _is_dataclass_type(tp) and isinstance(value, dict):
            out[key] = _merge(tp, out.get(key) or {}, value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and is_dataclass(tp)


def _set_dotted(cls: type, data: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply ``a.b.c=value``: walk nested dataclasses, then at most one level into a dict field."""
    parts = dotted.split(".")
    node, tp, where = data, cls, ""
    for i, part in enumerate(parts):
        ftype = _field_type(tp, part, where)
        last = i == len(parts) - 1
        if last:
            if _is_dataclass_type(ftype) and isinstance(value, dict):
                node[part] = _merge(ftype, node.get(part) or {}, value, f"{where}{part}.")
            else:
                node[part] = value
            return
        if _is_dataclass_type(ftype):
            node = node.setdefault(part, {})
            tp, where = ftype, f"{where}{part}."
            continue
        if get_origin(_strip_optional(ftype)) is dict and i == len(parts) - 2:
            current = node.get(part)
            node[part] = {**(current or {}), parts[-1]: value}
            return
        raise ConfigError(f"{where}{part} is not a group; cannot set {dotted}")


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _defaults(cls: type) -> dict[str, Any]:
    """Only the keys that need merging: nested dataclass defaults as dicts (the rest come from the class)."""
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
            if is_dataclass(value):
                out[f.name] = to_dict(value)
    return out


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def load(
    cls: type[T], yaml_path: str | Path | None = None, overrides: list[str] | None = None
) -> T:
    """Defaults, then the YAML file, then ``key=value`` overrides, checked and frozen."""
    data = _defaults(cls)
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        data = _merge(cls, data, loaded)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. run.max_steps=2)")
        _set_dotted(cls, data, key.strip(), _parse_value(text))
    return from_dict(cls, data)


def usage(cfg: Any, prefix: str = "") -> str:
    """Every key of a config instance with its value (nested groups as ``group.key``), for ``--help``."""
    lines = []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            lines.append(usage(value, f"{prefix}{f.name}."))
        else:
            lines.append(f"  {prefix}{f.name} = {to_dict(value)!r}")
    return "\n".join(lines)


def entry_point(cls: type) -> str:
    """The module a user runs for a config class (``trainer.grpo``; run with ``-m`` its module is ``__main__``)."""
    module = sys.modules.get(cls.__module__)
    spec = getattr(module, "__spec__", None)
    return spec.name if spec is not None else cls.__module__


def help_text(cls: type) -> str:
    """A recipe's ``--help``: how to launch it, its first docstring paragraph, every key with its default."""
    prog = entry_point(cls)
    module = sys.modules.get(cls.__module__)
    about = ((getattr(module, "__doc__", None) or "").strip().split("\n\n")[0]).strip()
    # a recipe that runs on rank 0 only under accelerate (merge)
    one = bool(getattr(cls, "ONE_PROCESS", False))
    launch = (
        ""
        if one
        else f"       accelerate launch [ACCELERATE OPTIONS] -m {prog} [CONFIG.yaml] [key=value ...]\n"
    )
    how = (
        "It runs on one process; under `accelerate launch` rank 0 does the work and the others exit.\n"
        if one
        else "`python -m` trains on one process (one GPU, or the CPU); `accelerate launch` runs the same\n"
        "command on several GPUs (DDP; per-GPU numbers follow from the world size). Only rank 0 prints\n"
        "progress. A run folder that already holds a run is refused unless run.resume=auto (continue from\n"
        "its last checkpoint) or run.overwrite=true (clear it and train again).\n"
    )
    return (
        f"usage: python -m {prog} [CONFIG.yaml] [key=value ...]\n{launch}"
        f"       python -m {prog} CONFIG.yaml [key=value ...] --rehearse [--world-size N[,N...]]\n\n"
        f"{about}\n\n{how}"
        "\n--rehearse builds the preset as written, prints its layout at each world size, task shares, adapters,\n"
        "split audit and loss terms, and runs one optimizer step on the CPU with stand-ins for hub weights.\n\n"
        f"keys and defaults:\n{usage(cls())}\n"
    )


def parse(cls: type[T], argv: list[str] | None = None) -> T:
    """Command-line entry: ``[CONFIG.yaml] [key=value ...]``; errors exit with one line (code 2)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(help_text(cls))
        raise SystemExit(0)
    yaml_path = None
    if args and "=" not in args[0]:
        yaml_path = args.pop(0)
    bad = [a for a in args if "=" not in a]
    _install_user_error_hook()
    try:
        if bad:
            raise ConfigError(f"expected key=value overrides after the config file, got {bad}")
        return load(cls, yaml_path, args)
    except ConfigError as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(2) from None


def _install_user_error_hook() -> None:
    """Errors a user can fix (the ``flowbase.errors.UserError`` family: bad config, a missing model, adapter,
    weights or extra, bad input) print one line instead of a traceback; anything else keeps its traceback.

    The exit status stays 1: ``sys.excepthook`` cannot set it (the recipes' ``trainer.rehearse.cli`` would have to
    catch ``UserError`` and exit 2, as ``parse`` does for config errors)."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if issubclass(kind, UserError):
            sys.stderr.write(f"error: {one_line(value)}\n")
            sys.stderr.flush()
            return
        previous(kind, value, tb)

    sys.excepthook = hook
