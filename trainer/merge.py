"""Cold start by merging teacher LoRAs in weight-delta space, stored as a LoRA (SVD re-factoring) or a full model.

Flow-OPD, https://arxiv.org/abs/2605.08063 (docs/method.md section 4, "Merge"). Teacher ``k`` is a LoRA with delta
``dW_k = (alpha / r) B_k A_k`` on each target module. Methods, named:
- ``linear``: ``sum_k w_k dW_k`` with weights normalised to sum 1 (default ``1/K``);
- ``task_arithmetic``: ``scale * sum_k w_k dW_k`` (weights as given, default 1);
- ``ties``: trim each ``w_k dW_k`` to its top ``density`` fraction by magnitude, elect the sign of the sum, average
  the entries that agree with it (TIES-Merging, Yadav et al. 2023), times ``scale``;
- ``ab_mean``: the authors' ``scripts/merge.py``: average the A and the B matrices key by key. A compatibility mode
  only: ``mean(B) mean(A) != mean(B A)``, so it is not an average of the teachers' deltas.
The merged delta is stored as a LoRA by truncated SVD (``rank: 0`` keeps the exact rank ``sum_k r_k``) or added into
the base weights and saved as a diffusers folder (``output: merged``). Merging one adapter with itself gives it back.

    accelerate launch -m trainer.merge trainer/configs/merge_tiny.yaml
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import Tensor

from flowbase.code import git_sha
from flowbase.errors import MissingError
from flowmodels import adapters
from flowmodels.models import load_model
from harness import splits
from trainer import config, folders, runs
from trainer.config import ConfigError

log = logging.getLogger(__name__)

Method = Literal["linear", "task_arithmetic", "ties", "ab_mean"]
_PREFIX = "base_model.model."


@dataclass(frozen=True)
class Config:
    """Merge the teachers into one LoRA (linear average of the deltas, exact SVD rank)."""

    # under accelerate launch rank 0 merges and the others exit (config.help_text says so)
    ONE_PROCESS: ClassVar[bool] = True
    teachers: dict[str, str] = field(
        default_factory=lambda: {
            "geneval": "jieliu/SD3.5M-FlowGRPO-GenEval",
            "ocr": "jieliu/SD3.5M-FlowGRPO-Text",
            "pickscore": "jieliu/SD3.5M-FlowGRPO-PickScore",
        }
    )  # name -> run folder, PEFT LoRA folder or hub id
    weights: dict[str, float] = field(
        default_factory=dict
    )  # name -> w_k (default 1/K linear, 1 otherwise)
    method: Method = "linear"
    scale: float = 1.0  # task arithmetic / TIES lambda
    density: float = 0.2  # TIES: fraction of each delta kept
    output: Literal["lora", "merged"] = "lora"
    # The output LoRA's shape. rank 0: the exact rank (the sum of the teachers' ranks), else the merged delta's best
    # rank-`rank` approximation (truncated SVD; its relative error goes to the manifest). alpha 0: alpha = rank (a
    # LoRA scale of 1); else the factors are stored for PEFT's scale alpha / rank (the paper's student: 32 / 64).
    rank: int = 0
    alpha: int = 0
    model: str | None = (
        None  # base model; required for output=merged, else taken from the teachers' manifests
    )
    out: str = "runs/merge"
    # merge into a folder that already holds a run (its run files are removed first); else it is refused
    overwrite: bool = False

    def __post_init__(self) -> None:
        if len(self.teachers) < 1:
            raise ConfigError("merge needs at least one teacher")
        unknown = sorted(set(self.weights) - set(self.teachers))
        if unknown:
            raise ConfigError(
                f"weights name {unknown}, which are not teachers ({sorted(self.teachers)})"
            )
        if not 0.0 < self.density <= 1.0:
            raise ConfigError(f"density={self.density} must be in (0, 1]")
        if self.rank < 0:
            raise ConfigError(f"rank={self.rank} must be >= 0 (0: exact)")
        if self.alpha < 0:
            raise ConfigError(f"alpha={self.alpha} must be >= 0 (0: alpha = rank)")
        if self.method == "ab_mean" and (self.rank or self.alpha):
            raise ConfigError(
                "method=ab_mean keeps the teachers' LoRA shape: leave rank and alpha at 0"
            )
        if self.output == "merged" and self.method == "ab_mean":
            raise ConfigError("method=ab_mean writes averaged LoRA factors; use output=lora")
        if self.output == "merged" and self.model is None:
            raise ConfigError("output=merged needs model: the base to merge into")


# -- pure math ---------------------------------------------------------------------------------------------------
class Lora(NamedTuple):
    """A LoRA as loaded: its PEFT config and weights (PEFT key names)."""

    config: dict[str, Any]
    state: dict[str, Tensor]


def _module_path(key: str) -> tuple[str, str]:
    """``base_model.model.<path>.lora_A.weight`` -> (path, 'A')."""
    body = key.removeprefix(_PREFIX)
    for part in ("lora_A", "lora_B"):
        marker = f".{part}."
        if marker in body:
            return body.split(marker)[0], part[-1]
    raise ValueError(f"not a LoRA weight key: {key}")


def lora_scaling(cfg: dict[str, Any]) -> float:
    """PEFT's delta scale: ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA)."""
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ValueError(
            "LoRAs with per-module rank_pattern/alpha_pattern are not supported by merge"
        )
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r


def lora_deltas(lora: Lora) -> dict[str, Tensor]:
    """``{module path: (alpha / r) B A}`` in float32. B: [out, r], A: [r, in] -> [out, in]."""
    factors: dict[str, dict[str, Tensor]] = {}
    for key, value in lora.state.items():
        if "lora_" not in key:
            continue
        path, which = _module_path(key)
        factors.setdefault(path, {})[which] = value.float()
    scale = lora_scaling(lora.config)
    out = {}
    for path, ab in factors.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"{path}: LoRA has {sorted(ab)} but needs both A and B")
        out[path] = scale * ab["B"] @ ab["A"]
    return out


def merge_deltas(
    deltas: list[dict[str, Tensor]],
    weights: list[float],
    method: Method,
    *,
    scale: float = 1.0,
    density: float = 0.2,
) -> dict[str, Tensor]:
    """Merge per-module deltas; a module missing from a teacher counts as a zero delta there."""
    if len(deltas) != len(weights) or not deltas:
        raise ValueError(f"{len(deltas)} deltas but {len(weights)} weights")
    if method == "linear":
        total = sum(weights)
        if total <= 0:
            raise ValueError("linear merge weights must sum to > 0")
        weights = [w / total for w in weights]
    paths = sorted({p for d in deltas for p in d})
    out: dict[str, Tensor] = {}
    for path in paths:
        shape = next(d[path].shape for d in deltas if path in d)
        parts = [
            w * d[path] if path in d else torch.zeros(shape)
            for d, w in zip(deltas, weights, strict=True)
        ]
        stack = torch.stack(parts)  # [K, out, in]
        if method in ("linear", "task_arithmetic"):
            merged = stack.sum(0) * (scale if method == "task_arithmetic" else 1.0)
        elif method == "ties":
            merged = scale * ties(stack, density)
        else:
            raise ValueError(
                f"merge_deltas does not do {method!r} (ab_mean merges factors: use ab_mean())"
            )
        out[path] = merged
    return out


def ties(stack: Tensor, density: float) -> Tensor:
    """TIES: trim each [out, in] slice to its top ``density`` by |value|, elect signs, disjoint mean. [K, ...] -> [...]."""
    k = stack.shape[0]
    flat = stack.reshape(k, -1)
    keep = max(1, int(round(density * flat.shape[1])))
    trimmed = torch.zeros_like(flat)
    top = flat.abs().topk(keep, dim=1).indices
    trimmed.scatter_(1, top, flat.gather(1, top))
    sign = torch.sign(trimmed.sum(0))  # elected sign per entry
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    count = agree.sum(0).clamp(min=1)
    merged = (trimmed * agree).sum(0) / count
    return merged.reshape(stack.shape[1:])


def ab_mean(loras: list[Lora], weights: list[float]) -> dict[str, Tensor]:
    """The authors' key-wise average of the LoRA factors (compatibility mode; not a delta average)."""
    keys = set(loras[0].state)
    for lora in loras[1:]:
        if set(lora.state) != keys:
            raise ValueError("ab_mean needs LoRAs with identical keys (same targets and ranks)")
        for k in ("r", "lora_alpha"):
            if lora.config.get(k) != loras[0].config.get(k):
                raise ValueError(f"ab_mean needs equal {k} across LoRAs")
    total = sum(weights)
    return {
        key: sum(
            w / total * lora.state[key].float() for lora, w in zip(loras, weights, strict=True)
        )
        for key in sorted(keys)
    }


def refactor(delta: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Best rank-``rank`` factors of ``delta`` [out, in]: B [out, rank], A [rank, in] with B A ~ delta (SVD).

    Ranks above ``min(out, in)`` are padded with zero rows/columns (the product is unchanged).
    """
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    r = min(rank, s.shape[0])
    root = s[:r].sqrt()
    b = u[:, :r] * root
    a = root[:, None] * vh[:r]
    if rank > r:
        b = torch.cat([b, b.new_zeros(b.shape[0], rank - r)], dim=1)
        a = torch.cat([a, a.new_zeros(rank - r, a.shape[1])], dim=0)
    return b.float(), a.float()


class SvdError(NamedTuple):
    """How far the re-factored LoRA is from the merged delta (relative Frobenius errors; 0 at the exact rank)."""

    worst: float  # the worst module's ||B A - dW|| / ||dW||
    total: float  # over every module at once: sqrt(sum ||B A - dW||^2 / sum ||dW||^2)


def deltas_to_lora(
    deltas: dict[str, Tensor],
    rank: int,
    targets: list[str],
    base: str | None,
    alpha: int | None = None,
) -> tuple[Lora, SvdError]:
    """Re-factor merged deltas as a PEFT LoRA of rank ``rank`` and ``lora_alpha = alpha`` (default ``rank``): the
    factors carry ``sqrt(rank / alpha)`` each, so PEFT's ``(alpha / rank) B A`` is the best rank-``rank``
    approximation of each delta. Returns the LoRA and the truncation's relative errors."""
    alpha = alpha or rank
    unscale = math.sqrt(rank / alpha)
    state: dict[str, Tensor] = {}
    worst = err_sq = norm_sq = 0.0
    for path, delta in sorted(deltas.items()):
        b, a = refactor(delta, rank)
        state[f"{_PREFIX}{path}.lora_A.weight"] = (a * unscale).contiguous()
        state[f"{_PREFIX}{path}.lora_B.weight"] = (b * unscale).contiguous()
        norm, err = float(delta.norm()), float((b @ a - delta).norm())
        err_sq, norm_sq = err_sq + err**2, norm_sq + norm**2
        if norm > 0:
            worst = max(worst, err / norm)
    cfg = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": sorted(targets),
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": False,
        "init_lora_weights": True,
        "base_model_name_or_path": base,
    }
    return Lora(cfg, state), SvdError(worst, math.sqrt(err_sq / norm_sq) if norm_sq > 0 else 0.0)


# -- I/O ---------------------------------------------------------------------------------------------------------
def read_lora(folder: Path) -> Lora:
    """A PEFT LoRA folder's config and weights."""
    from safetensors.torch import load_file

    cfg = json.loads((folder / "adapter_config.json").read_text())
    weights = folder / "adapter_model.safetensors"
    if weights.exists():
        state = load_file(str(weights))
    elif (folder / "adapter_model.bin").exists():
        state = torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise MissingError(f"{folder}: no adapter_model.safetensors (a PEFT LoRA folder holds one)")
    return Lora(cfg, state)


def write_lora(lora: Lora, folder: Path, manifest: dict[str, Any]) -> Path:
    """Save in PEFT's layout (``adapter_config.json`` + ``adapter_model.safetensors``) plus our manifest."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(lora.config, indent=2))
    save_file(
        {k: v.contiguous() for k, v in lora.state.items()},
        str(folder / "adapter_model.safetensors"),
    )
    (folder / "manifest.json").write_text(
        json.dumps({"adapter_config": lora.config, **manifest}, indent=2)
    )
    return folder


def _base_of(cfg: Config, dirs: dict[str, Path]) -> str | None:
    """The one base model the teachers share (fails on a mix) and that ``cfg.model`` names, if given."""
    bases = {name: folders.recorded_base(f) for name, f in dirs.items()}
    known = {name: b for name, b in bases.items() if b is not None}
    ref = cfg.model or next(iter(known.values()), None)
    for name, b in known.items():
        if ref is not None and not folders.same_base(b, ref):
            raise ConfigError(
                f"teacher {name!r} is a LoRA for {b!r} but the merge base is {ref!r}: merge teachers of one base"
            )
    return ref


def main(cfg: Config) -> Path:
    """Merge the teachers and write ``out/{config.yaml, manifest.json, lora/ | merged/}``."""
    runs.setup_logging()
    if (
        int(os.environ.get("RANK", "0")) != 0
    ):  # launched with several processes: one merge is enough
        return Path(cfg.out)
    out = Path(cfg.out)
    held = runs.held_run(out) if out.is_dir() else None
    if held is not None and not cfg.overwrite:
        raise ConfigError(
            f"out={cfg.out} already holds {held}: set overwrite=true to merge into it again, or another out"
        )
    dirs: dict[str, Path] = {}
    for name, src in cfg.teachers.items():
        try:
            dirs[name] = adapters.resolve_adapter_dir(src)
        except FileNotFoundError as e:
            raise ConfigError(f"teachers.{name}: {e}") from None
    base = _base_of(cfg, dirs)
    names = sorted(dirs)
    loras = [read_lora(dirs[n]) for n in names]
    default = 1.0 / len(names) if cfg.method in ("linear", "ab_mean") else 1.0
    weights = [cfg.weights.get(n, default) for n in names]
    if cfg.overwrite:
        folders.clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    config.dump(cfg, out / "config.yaml")
    manifest: dict[str, Any] = {
        "run_id": f"merge-{out.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}",
        "recipe": "merge",
        "git_sha": git_sha(),
        "base_model": base,
        "parent": {n: str(cfg.teachers[n]) for n in names},
        # a merge of teachers trained on evaluation prompts is too (harness.splits)
        "contaminated": [
            f"teachers.{n} {cfg.teachers[n]}: {reason}"
            for n in names
            for reason in splits.recorded_contamination(dirs[n])
        ],
        "method": cfg.method,
        "weights": dict(zip(names, weights, strict=True)),
        "step": 0,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if cfg.method == "ab_mean":
        merged = Lora({**loras[0].config, "base_model_name_or_path": base}, ab_mean(loras, weights))
        manifest.update(output="lora", rank=int(loras[0].config["r"]), svd_rel_error=None)
        write_lora(merged, out / "lora", manifest)
    else:
        deltas = merge_deltas(
            [lora_deltas(lo) for lo in loras],
            weights,
            cfg.method,
            scale=cfg.scale,
            density=cfg.density,
        )
        if cfg.output == "lora":
            rank = cfg.rank or sum(int(lo.config["r"]) for lo in loras)
            alpha = cfg.alpha or rank
            targets = sorted({t for lo in loras for t in (lo.config.get("target_modules") or [])})
            lora, err = deltas_to_lora(deltas, rank, targets, base, alpha)
            manifest.update(
                output="lora",
                rank=rank,
                alpha=alpha,
                svd_rel_error=err.worst,
                svd_rel_error_total=err.total,
            )
            write_lora(lora, out / "lora", manifest)
            log.info(
                "merged %d teachers (%s) into a LoRA of r %d / alpha %d (relative SVD error: worst "
                "module %.3g, all modules %.3g)",
                len(names),
                cfg.method,
                rank,
                alpha,
                err.worst,
                err.total,
            )
        else:
            _merge_into_base(str(cfg.model), deltas, out / "merged")
            manifest.update(output="merged")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    return out


def _merge_into_base(model_name: str, deltas: dict[str, Tensor], folder: Path) -> None:
    """Add the merged deltas into the base weights and save a full diffusers folder."""
    model = load_model(folders.resolve_model(model_name), dtype="float32", device="cpu")
    net = model.denoiser
    with torch.no_grad():
        for path, delta in deltas.items():
            layer = net.get_submodule(path)
            if layer.weight.shape != delta.shape:
                raise ValueError(
                    f"{path}: delta {tuple(delta.shape)} does not fit weight {tuple(layer.weight.shape)}"
                )
            layer.weight += delta.to(layer.weight.dtype)
    pipe = getattr(model, "pipe", None)
    if pipe is None:
        raise ValueError(f"backend {type(model).__name__} cannot save a merged model")
    pipe.save_pretrained(str(folder))
    log.info("merged deltas into %s -> %s", model_name, folder)


if __name__ == "__main__":
    # the recipes' entry point; trainer.rehearse imports the recipes, so only the script imports it
    from trainer import rehearse

    rehearse.cli(Config, main)
