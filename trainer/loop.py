"""Loop glue shared by the recipes: accelerate, run folders and manifests, checkpoint/resume, EMA, logging,
rewards and the in-loop evaluation hook.

Only glue lives here; what a recipe *does* reads top to bottom in its own
file. A run folder is the hand-over between stages::

    runs/<name>/config.yaml       resolved config (every field)
    runs/<name>/manifest.json     run id, recipe, git sha, base model, parent run, step, world size, output
    runs/<name>/lora/             the trained adapter (PEFT layout; EMA weights when EMA is on)
    runs/<name>/merged/           (merge with output=merged) a full diffusers model folder
    runs/<name>/checkpoints/step_N/  adapter, optimizer, scheduler, EMA, per-rank RNG, step and epoch
    runs/<name>/logs/             TensorBoard (or W&B) events;  runs/<name>/metrics.jsonl: the same scalars

Distributed: the student's gradient passes go through the DDP-wrapped denoiser (``student_forward``); sampling,
teacher and reference passes use the unwrapped one under ``no_grad`` (so ranks may run different numbers of them).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from flowbase.code import git_sha
from flowmodels import adapters
from flowmodels.adapters import LoraSpec
from flowmodels.backend import FlowModel
from flowmodels.sampling import Rollout, rollout
from trainer import config
from trainer.config import ConfigError, RunConfig, SampleConfig
from trainer.data import PromptItem, SplitAudit, plan_epoch, shard

log = logging.getLogger(__name__)

STUDENT = "student"
TINY = "tiny"  # `model: tiny` builds the offline tiny SD3 on demand (flowmodels.tiny.default_tiny_dir())


# -- run folders -------------------------------------------------------------------------------------------------
def read_manifest(folder: str | Path) -> dict[str, Any]:
    """``manifest.json`` of a run folder or adapter folder ({} when absent)."""
    path = Path(folder) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def resolve_lora(source: str | Path) -> Path:
    """A run folder (its ``lora/``), a PEFT LoRA folder, or a hub id (through the hub cache)."""
    path = Path(source)
    if (path / "lora" / "adapter_config.json").exists():
        return path / "lora"
    if path.exists() and not (path / "adapter_config.json").exists():
        manifest = read_manifest(path)
        what = (
            f"its manifest says output={manifest['output']!r}"
            if "output" in manifest
            else "no lora/"
        )
        raise adapters.AdapterNotFoundError(
            f"{path} is neither a run folder with a lora/ adapter nor a PEFT LoRA folder ({what})"
        )
    return adapters.resolve_adapter_dir(source)


def resolve_model(model: str) -> str:
    """``tiny`` -> the tiny SD3 folder (built on first use); a run folder with ``merged/`` -> that folder."""
    if model == TINY:
        from flowmodels.tiny import default_tiny_dir, save_tiny_sd3

        return str(save_tiny_sd3(default_tiny_dir()))
    from flowmodels.models import BUILTIN_MODELS

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
        folder = resolve_lora(source)
    except adapters.AdapterNotFoundError as e:
        raise ConfigError(f"{role} {source!r}: {e}") from None
    theirs = recorded_base(folder)
    if theirs is not None and not same_base(theirs, base):
        raise ConfigError(
            f"{role} {source!r} is a LoRA for base model {theirs!r}, but this run's base is {base!r}: "
            "adapters only make sense on the base they were trained on"
        )
    return folder


# -- per-GPU numbers from the world size -------------------------------------------------------------------------
class EpochLayout(NamedTuple):
    """Per-process share of an epoch, derived from the global numbers and the world size."""

    images_per_rank: int
    batches_per_rank: int
    accum_batches: int  # batches per optimizer step


def epoch_layout(sample: SampleConfig, world: int) -> EpochLayout:
    """Flow-GRPO's derivation: ``groups * G / world`` images per GPU, in batches, ``steps_per_epoch`` updates."""
    total = sample.groups_per_epoch * sample.group_size
    if total % world:
        raise ConfigError(
            f"{sample.groups_per_epoch} groups x {sample.group_size} images = {total} images per epoch do not "
            f"split over {world} processes; change sample.groups_per_epoch or sample.group_size"
        )
    per_rank = total // world
    if per_rank % sample.batch_size:
        raise ConfigError(
            f"{per_rank} images per process (of {total} per epoch over {world}) are not a multiple of "
            f"sample.batch_size={sample.batch_size}"
        )
    batches = per_rank // sample.batch_size
    if batches % sample.steps_per_epoch:
        raise ConfigError(
            f"{batches} batches per process per epoch do not split into sample.steps_per_epoch="
            f"{sample.steps_per_epoch} optimizer steps"
        )
    return EpochLayout(per_rank, batches, batches // sample.steps_per_epoch)


# -- the run -----------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One process's view of a training run."""

    recipe: str
    cfg: Any  # the recipe's whole config
    rcfg: RunConfig
    acc: Any  # accelerate.Accelerator
    out: Path
    run_id: str
    step: int = 0
    epoch: int = 0
    parent: dict[str, Any] = field(default_factory=dict)
    audit: SplitAudit | None = None  # the training prompts' split audit (trainer.data.audit_split)
    _metrics: Any = None

    @property
    def world(self) -> int:
        return int(self.acc.num_processes)

    @property
    def rank(self) -> int:
        return int(self.acc.process_index)

    @property
    def main(self) -> bool:
        return bool(self.acc.is_main_process)


def _check_tracker(log_with: str) -> None:
    if log_with == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError(
                "run.log_with=tensorboard needs the tensorboard package: pip install 'flow-opd[train]' "
                "(or set run.log_with=none)"
            ) from None
    elif log_with == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError(
                "run.log_with=wandb needs wandb: pip install 'flow-opd[wandb]' (or set run.log_with=tensorboard)"
            ) from None


def check_eval_hook(rcfg: RunConfig) -> None:
    """In-loop evaluation goes through ``harness.evaluate.evaluate``; fail early if it is not there."""
    if not rcfg.eval_every:
        return
    try:
        from harness.evaluate import evaluate  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"run.eval_every={rcfg.eval_every} needs harness.evaluate.evaluate, which cannot be imported "
            f"here ({e}); set run.eval_every=0 to train without in-loop evaluation"
        ) from None
    from harness import benchmarks

    for key in rcfg.keep_best:
        bench, _, scorer = key.partition("/")
        try:
            scorers = benchmarks.get(bench).scorers
        except benchmarks.UnknownBenchmarkError as e:
            raise ConfigError(f"run.keep_best {key!r}: {e}") from None
        if scorer not in scorers:
            raise ConfigError(
                f"run.keep_best {key!r}: {bench} is scored by {', '.join(scorers)}, not {scorer!r}"
            )


def launched_world() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 for a plain ``python -m``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def start(recipe: str, cfg: Any, rcfg: RunConfig, audit: SplitAudit | None = None) -> Run:
    """Set up accelerate, seeds, the run folder (config.yaml), trackers; all checks before any heavy work.

    ``audit``: the recipe's split audit of its training prompts, recorded in the manifest."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed

    if rcfg.mixed_precision == "fp16" and (rcfg.cpu or not torch.cuda.is_available()):
        raise ConfigError(
            "run.mixed_precision=fp16 needs a CUDA GPU; on CPU set run.mixed_precision=no (or bf16)"
        )
    _check_tracker(rcfg.log_with)
    check_eval_hook(rcfg)
    out = Path(rcfg.out)
    launched = launched_world()
    # Without CUDA, Accelerator(cpu=False) under a multi-process launch gives every process world size 1 (each
    # would train alone and overwrite the others' files); cpu=True makes it a gloo MULTI_CPU run.
    use_cpu = rcfg.cpu or (launched > 1 and not torch.cuda.is_available())
    acc = Accelerator(
        cpu=use_cpu,
        mixed_precision=rcfg.mixed_precision,
        log_with=None if rcfg.log_with == "none" else rcfg.log_with,
        project_dir=str(out),
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )
    if acc.num_processes != launched:
        raise RuntimeError(
            f"launched {launched} processes but accelerate formed a world of {acc.num_processes}; "
            "check the accelerate config (on CPU: accelerate launch --multi_gpu --num_processes N)"
        )
    set_seed(rcfg.seed)  # identical on every rank: adapters start identical
    ckpt = find_checkpoint(out, rcfg.resume)
    run_id = [json.loads((ckpt / "state.json").read_text())["run_id"] if ckpt else None]
    if run_id[0] is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        run_id = [f"{recipe}-{out.name}-{stamp}-{random.Random().randrange(16**4):04x}"]
    if acc.num_processes > 1:
        broadcast_object_list(run_id)
    run = Run(
        recipe=recipe, cfg=cfg, rcfg=rcfg, acc=acc, out=out, run_id=str(run_id[0]), audit=audit
    )
    if run.main:
        out.mkdir(parents=True, exist_ok=True)
        config.dump(cfg, out / "config.yaml")
        run._metrics = (out / "metrics.jsonl").open(
            "a" if ckpt else "w"
        )  # a fresh run starts a fresh log
        if rcfg.log_with != "none":
            acc.init_trackers("logs", config=_flat_scalars(config.to_dict(cfg)))
    acc.wait_for_everyone()
    log.info("%s: run %s, %d process(es) on %s", recipe, run.run_id, acc.num_processes, acc.device)
    if audit is not None and audit.contaminated:
        for reason in audit.contaminated:
            log.warning("trained on evaluation prompts: %s", reason)
    elif audit is not None:
        log.info("split audit: no training prompt is a prompt of %s", ", ".join(audit.audited))
    return run


def _flat_scalars(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat_scalars(v, f"{prefix}{k}."))
        elif isinstance(v, bool | int | float | str):
            out[f"{prefix}{k}"] = v
        else:
            out[f"{prefix}{k}"] = json.dumps(v)
    return out


def weight_dtype(rcfg: RunConfig) -> torch.dtype:
    """Base weights in the mixed-precision dtype (Flow-GRPO: fp16), LoRA weights always float32."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(rcfg.mixed_precision, torch.float32)


def load_base(run: Run, model: str, t5_length: int = 128) -> FlowModel:
    """Load the base model on this process's device (the main process builds the tiny model first)."""
    from flowmodels.models import load_model

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


# -- optimisation state ------------------------------------------------------------------------------------------
class EMA:
    """An EMA of the trainable weights with Flow-GRPO's decay ``min((1 + s) / (10 + s), decay)`` at optimizer step
    ``s`` (its flow_grpo/ema.py), used for evaluation and the saved adapter.

    Cadence ``batch`` (Flow-GRPO's train_sd3.py): ``after_batch(s)`` after every training batch, applied when
    ``(s + 1) % every == 0``, so on such a step once per batch of its accumulation (twice a step at 32 GPUs).
    Cadence ``step``: ``after_step(s)`` once after optimizer step ``s`` (1-based) when ``s % every == 0``.
    """

    def __init__(
        self, params: list[nn.Parameter], decay: float, every: int, cadence: str = "batch"
    ) -> None:
        self.params = params
        self.decay = decay
        self.every = every
        self.cadence = cadence
        self.shadow = [p.detach().clone().float() for p in params]

    def after_batch(self, step: int) -> None:
        """Call after each training batch, with the optimizer steps taken so far."""
        if self.cadence == "batch" and (step + 1) % self.every == 0:
            self._apply(step)

    def after_step(self, step: int) -> None:
        """Call after optimizer step ``step`` (1-based)."""
        if self.cadence == "step" and step % self.every == 0:
            self._apply(step)

    @torch.no_grad()
    def _apply(self, step: int) -> None:
        d = min((1 + step) / (10 + step), self.decay)
        for s, p in zip(self.shadow, self.params, strict=True):
            s.mul_(d).add_(p.detach().float(), alpha=1 - d)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Use the EMA weights inside the block (eval, saving), then restore the trained ones."""
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for s, p in zip(self.shadow, self.params, strict=True):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for b, p in zip(backup, self.params, strict=True):
                    p.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": [s.cpu() for s in self.shadow]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for s, saved in zip(self.shadow, state["shadow"], strict=True):
            s.copy_(saved)


@dataclass
class Training:
    """The student's optimisation state on one process."""

    net: nn.Module  # unwrapped denoiser (adapter switching, saving)
    ddp: nn.Module  # what accelerate.prepare returned (DDP on several processes)
    params: list[nn.Parameter]
    optimizer: Any
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: EMA | None

    @contextmanager
    def eval_weights(self) -> Iterator[None]:
        """EMA weights when EMA is on, else the trained ones."""
        if self.ema is None:
            yield
        else:
            with self.ema.swapped():
                yield


def prepare(run: Run, net: nn.Module, ocfg: config.OptimConfig) -> Training:
    """AdamW on the trainable (student) weights, a warmup schedule, accelerate's wrapping, EMA."""
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError("no trainable parameters: the student adapter is missing")
    opt = torch.optim.AdamW(
        params, lr=ocfg.lr, betas=ocfg.betas, eps=ocfg.eps, weight_decay=ocfg.weight_decay
    )
    warm = ocfg.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0
    )
    ddp, opt = run.acc.prepare(net, opt)
    rc = run.rcfg
    ema = EMA(params, rc.ema_decay, rc.ema_every, rc.ema_cadence) if rc.ema else None
    n = sum(p.numel() for p in params)
    log.info("training %d parameters (%d tensors)", n, len(params))
    return Training(net=net, ddp=ddp, params=params, optimizer=opt, scheduler=sched, ema=ema)


@contextmanager
def student_forward(model: FlowModel, tr: Training) -> Iterator[None]:
    """Route the model's forward through the DDP wrapper (gradient sync) for the student's gradient pass."""
    plain = model.denoiser
    model.denoiser = tr.ddp
    try:
        yield
    finally:
        model.denoiser = plain


def no_sync(run: Run, tr: Training, sync: bool) -> Any:
    """Skip DDP's gradient all-reduce on accumulation micro-steps (``sync=False``)."""
    from contextlib import nullcontext

    return nullcontext() if sync or run.world == 1 else run.acc.no_sync(tr.ddp)


def optimizer_step(run: Run, tr: Training, ocfg: config.OptimConfig) -> float:
    """Clip, step, schedule, zero, count, EMA; returns the gradient norm before clipping."""
    if ocfg.grad_clip > 0:
        norm = run.acc.clip_grad_norm_(tr.params, ocfg.grad_clip)
    else:
        norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in tr.params if p.grad is not None])
        )
    tr.optimizer.step()
    tr.scheduler.step()
    tr.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    if tr.ema is not None:
        tr.ema.after_step(run.step)
    return float(norm)


def after_batch(run: Run, tr: Training) -> None:
    """The end of a training batch (all its trained steps): the EMA's ``batch`` cadence (Flow-GRPO's)."""
    if tr.ema is not None:
        tr.ema.after_batch(run.step)


# -- checkpoints -------------------------------------------------------------------------------------------------
def _ckpt_root(run: Run) -> Path:
    return run.out / "checkpoints"


def save_checkpoint(run: Run, tr: Training) -> Path:
    """Adapter, optimizer, scheduler, EMA, step/epoch (main process) and every rank's RNG state."""
    from safetensors.torch import save_file

    folder = _ckpt_root(run) / f"step_{run.step:06d}"
    if run.main:
        folder.mkdir(parents=True, exist_ok=True)
        state = adapters.adapter_state(tr.net, STUDENT)
        save_file(
            {k: v.contiguous().cpu() for k, v in state.items()}, str(folder / "student.safetensors")
        )
        torch.save(tr.optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(tr.scheduler.state_dict(), folder / "scheduler.pt")
        if tr.ema is not None:
            torch.save(tr.ema.state_dict(), folder / "ema.pt")
    run.acc.wait_for_everyone()
    rng = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    torch.save(rng, folder / f"rng_rank{run.rank}.pt")
    run.acc.wait_for_everyone()
    if run.main:
        meta = {"step": run.step, "epoch": run.epoch, "run_id": run.run_id, "world_size": run.world}
        (folder / "state.json").write_text(
            json.dumps(meta)
        )  # written last: marks the checkpoint complete
        done = sorted(p for p in _ckpt_root(run).glob("step_*") if (p / "state.json").exists())
        for old in done[: -run.rcfg.keep_checkpoints]:
            import shutil

            shutil.rmtree(old, ignore_errors=True)
    run.acc.wait_for_everyone()
    log.info("checkpoint %s", folder)
    return folder


def checkpoint_due(run: Run, step_before: int) -> bool:
    """Checkpoint at the end of an epoch in which the step count crossed a multiple of ``run.save_every``."""
    every = run.rcfg.save_every
    return bool(every) and run.step // every > step_before // every


def find_checkpoint(out: Path, target: str | None) -> Path | None:
    """The checkpoint ``run.resume`` names: ``auto`` -> the latest complete one under ``out`` (None if none)."""
    if target is None:
        return None
    if target == "auto":
        done = sorted(
            p for p in (out / "checkpoints").glob("step_*") if (p / "state.json").exists()
        )
        return done[-1] if done else None
    folder = Path(target)
    if not (folder / "state.json").exists():
        raise ConfigError(f"run.resume={target!r} is not a complete checkpoint (no state.json)")
    return folder


def resume(run: Run, tr: Training) -> bool:
    """Restore a checkpoint if ``run.resume`` asks for one; returns whether it did."""
    from safetensors.torch import load_file

    folder = find_checkpoint(run.out, run.rcfg.resume)
    if folder is None:
        if run.rcfg.resume == "auto":
            log.info("run.resume=auto: no checkpoint under %s, starting fresh", _ckpt_root(run))
        return False
    meta = json.loads((folder / "state.json").read_text())
    adapters.load_adapter_state(tr.net, STUDENT, load_file(str(folder / "student.safetensors")))
    tr.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=False))
    tr.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
    if tr.ema is not None:
        if not (folder / "ema.pt").exists():
            raise ConfigError(f"{folder} has no EMA state but run.ema is on")
        tr.ema.load_state_dict(torch.load(folder / "ema.pt", weights_only=False))
    rng_file = folder / f"rng_rank{run.rank}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    run.step, run.epoch = int(meta["step"]), int(meta["epoch"])
    log.info("resumed from %s (step %d, epoch %d)", folder, run.step, run.epoch)
    return True


# -- logging -----------------------------------------------------------------------------------------------------
def finish_step(
    run: Run,
    tr: Training,
    model: FlowModel,
    ocfg: config.OptimConfig,
    metrics: dict[str, float],
) -> None:
    """The end of the batch that ends an optimizer step: step, the EMA, log ``metrics`` with the gradient norm and
    learning rate (on the first step and every ``run.log_every``), and evaluate when ``run.eval_every`` says so
    (with the EMA as a run stopped here would save it)."""
    norm = optimizer_step(run, tr, ocfg)
    after_batch(run, tr)
    if run.step % run.rcfg.log_every == 0 or run.step == 1:
        log_metrics(
            run, {**metrics, "train/grad_norm": norm, "train/lr": tr.scheduler.get_last_lr()[0]}
        )
    maybe_evaluate(run, model, tr)


def log_metrics(run: Run, metrics: dict[str, float]) -> None:
    """To the tracker (TensorBoard / W&B) and ``metrics.jsonl``, main process only."""
    clean = {k: float(v) for k, v in metrics.items()}
    if run.rcfg.log_with != "none":
        run.acc.log(clean, step=run.step)
    if run.main and run._metrics is not None:
        run._metrics.write(json.dumps({"step": run.step, "epoch": run.epoch, **clean}) + "\n")
        run._metrics.flush()


def read_metrics(out: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.jsonl``."""
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- rewards -----------------------------------------------------------------------------------------------------
# The rehearsal (trainer.rehearse) sets this to stand in for scorers whose weights cannot be on a CPU machine; it is
# None in every real run.
stand_in_scorers: Callable[[str], Any] | None = None


def load_scorers(names: set[str], servers: dict[str, str]) -> dict[str, Any]:
    """Reward scorers by registry name, in process or through ``RemoteScorer`` when a server URL is given."""
    import scorers

    if stand_in_scorers is not None:
        return {name: stand_in_scorers(name) for name in sorted(names)}
    out: dict[str, Any] = {}
    for name in sorted(names):
        if name in servers:
            try:
                from scorers.remote import RemoteScorer
            except ImportError as e:
                raise ConfigError(
                    f"reward_servers.{name}: scorers.remote is not available ({e})"
                ) from None
            out[name] = RemoteScorer(servers[name], name)
        else:
            out[name] = scorers.load(name)
    return out


def check_scorer_names(names: set[str], servers: dict[str, str]) -> None:
    """Unknown reward names fail before any work, with suggestions."""
    import scorers

    for name in sorted(names):
        if name not in scorers.SCORERS and name not in servers:
            try:
                scorers.load(name)
            except scorers.UnknownScorerError as e:
                raise ConfigError(f"unknown reward: {e}") from None


def to_pil(images: Tensor) -> list[Image.Image]:
    """[B, 3, H, W] floats in [0, 1] -> 8-bit RGB PIL images (what scorers receive)."""
    arr = (
        (images.detach().float().clamp(0, 1) * 255)
        .round()
        .to(torch.uint8)
        .permute(0, 2, 3, 1)
        .cpu()
        .numpy()
    )
    return [Image.fromarray(a) for a in arr]


class Rewards(NamedTuple):
    """Per-sample rewards: the weighted total that is trained on and each scorer's part (NaN where not used)."""

    total: Tensor  # [B]
    parts: dict[str, Tensor]  # scorer -> [B]


def score(
    scorers: dict[str, Any],
    weights_for: Callable[[str], dict[str, float]],
    images: list[Image.Image],
    items: list[PromptItem],
    use_values: Collection[str] = (),
) -> Rewards:
    """Each sample's reward is the weighted sum of its task's scorers (Flow-GRPO's ``multi_score`` 'avg').

    A scorer gives each image a ``value`` (its official metric, e.g. GenEval's 0/1 verdict) and a ``reward``
    (Flow-GRPO's training scale, e.g. GenEval's partial credit); the scorers named in ``use_values`` are read on
    their value, the others on their reward."""
    n = len(items)
    total = torch.zeros(n, dtype=torch.float64)
    parts: dict[str, Tensor] = {}
    for name, scorer in scorers.items():
        rows = [i for i, it in enumerate(items) if weights_for(it.task).get(name, 0.0) != 0.0]
        if not rows:
            continue
        got = scorer(
            [images[i] for i in rows],
            [items[i].prompt for i in rows],
            [items[i].meta for i in rows],
        )
        kind = "values" if name in use_values else "rewards"
        got_rows = getattr(got, kind)
        if len(got_rows) != len(rows):
            raise RuntimeError(
                f"scorer {name!r} returned {len(got_rows)} {kind} for {len(rows)} images"
            )
        part = torch.full((n,), float("nan"), dtype=torch.float64)
        part[rows] = torch.tensor(got_rows, dtype=torch.float64)
        if not torch.isfinite(part[rows]).all():
            raise RuntimeError(f"scorer {name!r} returned a NaN or infinite reward")
        parts[name] = part
        for i in rows:
            total[i] += weights_for(items[i].task)[name] * part[i]
    return Rewards(total, parts)


# -- sampling ----------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """One sampled batch on this process: the rollout and the prompt items behind it."""

    ro: Rollout
    items: list[PromptItem]
    rewards: Tensor | None = None  # [b] totals (filled by recipes that score)
    advantages: Tensor | None = None  # [b]


class EpochRollouts(NamedTuple):
    """One epoch's sampling: this process's share (``mine`` of the plan's images), its batches and the SDE window."""

    mine: slice
    batches: list[Batch]
    window: tuple[int, int] | None


def sample_epoch(
    run: Run,
    model: FlowModel,
    pools: dict[str, list[PromptItem]],
    s: SampleConfig,
    **mixing: dict[str, int] | None,
) -> EpochRollouts:
    """Plan the epoch (the same on every process; ``mixing``: ``partitions`` or ``task_mix``), take this process's
    share of it and roll it out with the epoch's SDE window."""
    plan = plan_epoch(
        pools,
        run.epoch,
        groups=s.groups_per_epoch,
        group_size=s.group_size,
        seed=run.rcfg.seed,
        **mixing,
    )
    mine = shard(len(plan.items), run.rank, run.world)
    window = s.sde_window(run.rcfg.seed, run.epoch)
    return EpochRollouts(
        mine, sample(run, model, plan.items[mine], plan.seeds[mine], s, window), window
    )


def sample(
    run: Run,
    model: FlowModel,
    items: list[PromptItem],
    seeds: list[int],
    scfg: SampleConfig,
    sde_window: tuple[int, int] | None = None,
) -> list[Batch]:
    """SDE rollouts of this process's items with the student, in ``batch_size`` chunks (no gradient).

    ``sde_window``: this epoch's ``scfg.sde_window(...)`` (SDE only on those steps), None for the SDE throughout.
    """
    batches = []
    was_training = model.denoiser.training
    model.denoiser.eval()
    with run.acc.autocast():
        for lo in range(0, len(items), scfg.batch_size):
            chunk = items[lo : lo + scfg.batch_size]
            ro = rollout(
                model,
                [it.prompt for it in chunk],
                seeds[lo : lo + scfg.batch_size],
                steps=scfg.steps,
                cfg=scfg.cfg,
                noise_level=scfg.noise_level,
                height=scfg.size,
                width=scfg.size,
                negative_prompt=scfg.negative_prompt,
                logprob=scfg.logprob,
                sde_window=sde_window,
            )
            batches.append(Batch(ro=ro, items=chunk))
    model.denoiser.train(was_training)
    return batches


class Regrouped(NamedTuple):
    """This process's epoch, ready to train: its batches in training order and how many samples they keep."""

    batches: list[Batch]
    kept: int  # samples trained on (all of them without the tied-group filter)
    total: int  # samples rolled out


def regroup(
    run: Run, batches: list[Batch], *, drop_tied: bool = False, shuffle: str = "samples"
) -> Regrouped:
    """Order this process's epoch for training, as Flow-GRPO's train_sd3.py does before its inner epoch.

    ``drop_tied`` (Flow-GRPO's filter): samples whose advantage is exactly 0 (every reward of their group equal)
    are dropped from the loss, policy and KL term alike; randomly chosen dropped ones come back until the kept
    count divides the number of batches, and at least one per batch (where Flow-GRPO would fail on an empty one).
    ``shuffle="samples"``: one permutation of the kept samples, cut into as many equal batches as were rolled
    out (smaller ones when samples were dropped); ``"batches"``: the rolled-out batches in a shuffled order.
    The draws come from the run seed, the epoch and the rank, so a resumed run repeats them.
    """
    n_batches = len(batches)
    sizes = [len(b.items) for b in batches]
    total = sum(sizes)
    if shuffle == "batches" and not drop_tied:
        order = torch.randperm(
            n_batches, generator=torch.Generator().manual_seed(run.rcfg.seed + run.epoch)
        )
        return Regrouped([batches[i] for i in order.tolist()], total, total)
    seed = np.random.SeedSequence([run.rcfg.seed, run.epoch, run.rank]).generate_state(1)[0]
    g = torch.Generator().manual_seed(int(seed))
    keep = torch.ones(total, dtype=torch.bool)
    if drop_tied:
        if any(b.advantages is None for b in batches):
            raise RuntimeError("regroup(drop_tied=True) needs every batch's advantages")
        keep = torch.cat([b.advantages for b in batches]) != 0  # type: ignore[misc]
        kept = int(keep.sum())
        need = n_batches - kept if kept < n_batches else (-kept) % n_batches
        dropped = torch.nonzero(~keep).flatten()
        keep[dropped[torch.randperm(len(dropped), generator=g)[:need]]] = True
    rows = torch.nonzero(keep).flatten()
    if shuffle == "samples":
        rows = rows[torch.randperm(len(rows), generator=g)]
    chunks = list(rows.view(n_batches, -1))
    if shuffle == "batches":
        chunks = [chunks[i] for i in torch.randperm(n_batches, generator=g).tolist()]
    ro = Rollout.cat([b.ro for b in batches])
    ro.images = None  # scored already; training needs the trajectory only
    items = [it for b in batches for it in b.items]
    rewards = (
        torch.cat([b.rewards for b in batches])
        if all(b.rewards is not None for b in batches)
        else None
    )
    adv = (
        torch.cat([b.advantages for b in batches])
        if all(b.advantages is not None for b in batches)
        else None
    )
    out = [
        Batch(
            ro=ro.select(c),
            items=[items[i] for i in c.tolist()],
            rewards=None if rewards is None else rewards[c],
            advantages=None if adv is None else adv[c],
        )
        for c in chunks
    ]
    return Regrouped(out, len(rows), total)


def gather_cat(run: Run, local: Tensor) -> Tensor:
    """All ranks' [n] tensors concatenated in rank order (the epoch plan's order)."""
    if run.world == 1:
        return local
    return run.acc.gather(local.to(run.acc.device)).cpu()


# -- evaluation hook ---------------------------------------------------------------------------------------------
def maybe_evaluate(run: Run, model: FlowModel, tr: Training, *, final: bool = False) -> None:
    """Every ``run.eval_every`` steps: ``harness.evaluate`` with the EMA weights, rows tagged with the run id
    and step, written to the same store the CLI uses; the headline numbers are logged as ``eval/<bench>/<scorer>``.

    Every rank calls it (the harness shards the prompts over the processes accelerate launched). The protocol is
    the paper's (Euler ODE, ``run.eval_steps`` steps) at the recipe's CFG, size and T5 length. With
    ``run.keep_best`` the last step is evaluated too and ``keep_if_best`` decides whether these weights are kept.
    """
    every = run.rcfg.eval_every
    # the checkpoint choice must see the last weights too, whatever eval_every
    last = bool(run.rcfg.keep_best) and run.step == run.rcfg.max_steps
    if not every or (run.step % every and not final and not last):
        return
    from harness.evaluate import evaluate
    from harness.protocol import EvalProtocol
    from results.store import Store

    sample = getattr(run.cfg, "sample", None)
    protocol = EvalProtocol(
        steps=run.rcfg.eval_steps,
        cfg=getattr(sample, "cfg", 4.5),
        height=getattr(sample, "size", 512),
        width=getattr(sample, "size", 512),
        t5_length=getattr(sample, "t5_length", 128),
    )
    with tr.eval_weights():
        result = evaluate(
            model,
            list(run.rcfg.eval_benchmarks),
            run_id=run.run_id,
            step=run.step,
            limit=run.rcfg.eval_limit,
            store=run.rcfg.eval_store,
            protocol=protocol,
            progress=False,
            contaminated=run.audit.contaminated if run.audit is not None else None,
        )
        if not run.main:
            return
        rows = Store(result.store, read_only=True).benchmark_scores(
            run_ids=[run.run_id], latest=False
        )
        flat = {
            f"eval/{r['benchmark']}/{r['scorer']}": float(r["score"])
            for r in rows
            if r["step"] == run.step and r.get("score") is not None
        }
        if run.rcfg.keep_best:
            flat["eval/keep_best"] = keep_if_best(run, tr, flat)
    if flat:
        log_metrics(run, flat)


def _best_dir(run: Run) -> Path:
    return run.out / "best"


def read_best(run: Run) -> dict[str, Any] | None:
    """This run's best evaluation so far (``best/best.json``), or None; another run's record does not count."""
    path = _best_dir(run) / "best.json"
    if not path.exists():
        return None
    best = json.loads(path.read_text())
    return best if best.get("run_id") == run.run_id else None


def keep_if_best(run: Run, tr: Training, flat: dict[str, float]) -> float:
    """``run.keep_best``: the mean of the named in-loop scores; when it beats this run's best so far (ties keep the
    earlier step), save the weights being evaluated to ``best/`` with ``best.json`` written last (a resumed run
    reads it back). Main process, inside ``tr.eval_weights()``. Returns the score."""
    keys = [f"eval/{k}" for k in run.rcfg.keep_best]
    missing = [k for k in keys if k not in flat]
    if missing:
        have = ", ".join(k.removeprefix("eval/") for k in sorted(flat)) or "none"
        raise ConfigError(
            f"run.keep_best names {', '.join(k.removeprefix('eval/') for k in missing)}, which the in-loop "
            f"evaluation did not score (it scored: {have})"
        )
    score = float(np.mean([flat[k] for k in keys]))
    best = read_best(run)
    if best is None or score > best["score"]:
        folder = _best_dir(run)
        (folder / "best.json").unlink(missing_ok=True)
        adapters.save_adapter(tr.net, STUDENT, folder)
        record = {
            "run_id": run.run_id,
            "step": run.step,
            "score": score,
            "by": list(run.rcfg.keep_best),
        }
        (folder / "best.json").write_text(json.dumps(record))
        log.info("keep_best: step %d scores %.4f, the best so far", run.step, score)
    else:
        log.info(
            "keep_best: step %d scores %.4f, below step %d's %.4f",
            run.step,
            score,
            best["step"],
            best["score"],
        )
    return score


# -- the end -----------------------------------------------------------------------------------------------------
def replicas_identical(run: Run, tr: Training) -> bool:
    """Whether every rank holds the same trainable weights (DDP must keep them so)."""
    flat = torch.cat([p.detach().float().flatten() for p in tr.params])
    if run.world == 1:
        return True
    rows = run.acc.gather(flat[None].to(run.acc.device)).cpu()
    return bool((rows == rows[0:1]).all())


def finish(run: Run, tr: Training, base: str, extra: dict[str, Any] | None = None) -> Path:
    """Save ``lora/`` (EMA weights when on) and ``manifest.json``; close trackers. Returns the run folder."""
    same = replicas_identical(run, tr)
    if not same:
        log.error("DDP replicas diverged: the ranks hold different student weights")
    manifest = {
        "run_id": run.run_id,
        "recipe": run.recipe,
        "git_sha": git_sha(),
        "base_model": base,
        "parent": run.parent or None,
        "step": run.step,
        "epoch": run.epoch,
        "world_size": run.world,
        "replicas_identical": same,
        "output": "lora",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(run.audit.manifest() if run.audit is not None else {}),
        **(extra or {}),
    }
    if run.main:
        best = read_best(run) if run.rcfg.keep_best else None
        if run.rcfg.keep_best and best is None:
            raise RuntimeError(
                f"run.keep_best is set but {_best_dir(run)} holds no evaluation of this run; nothing to save"
            )
        if best is not None:
            manifest["selected"] = {**best, "last_step": run.step}
            _save_best(run, manifest)
        else:
            with tr.eval_weights():
                adapters.save_adapter(tr.net, STUDENT, run.out / "lora", manifest)
        (run.out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    run.acc.wait_for_everyone()
    if run.rcfg.log_with != "none":
        run.acc.end_training()
    if run._metrics is not None:
        run._metrics.close()
    if run.world > 1:
        from harness.evaluate import shutdown_distributed

        shutdown_distributed()  # gloo's threads must not outlive the interpreter (an abort at exit)
    log.info("%s done: %s (step %d)", run.recipe, run.out, run.step)
    return run.out


def _save_best(run: Run, manifest: dict[str, Any]) -> None:
    """``lora/`` = the adapter ``keep_if_best`` saved, with the run's manifest (its ``selected`` says which step)."""
    import shutil

    src, dst = _best_dir(run), run.out / "lora"
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "adapter_model.safetensors", dst / "adapter_model.safetensors")
    cfg = json.loads((src / "adapter_config.json").read_text())
    if manifest.get("base_model"):
        cfg["base_model_name_or_path"] = manifest["base_model"]
    (dst / "adapter_config.json").write_text(json.dumps(cfg, indent=2, default=str))
    full = {"adapter": STUDENT, "adapter_config": cfg, **manifest}
    (dst / "manifest.json").write_text(json.dumps(full, indent=2, default=str))


def setup_logging() -> None:
    """INFO for our modules when run as a script; third-party chatter quiet."""
    level = logging.DEBUG if os.environ.get("FLOW_OPD_VERBOSE") == "1" else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if os.environ.get("FLOW_OPD_VERBOSE") == "1":
        return
    for noisy in ("accelerate", "peft", "PIL", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # prompt truncation at 77 CLIP tokens and pipeline progress bars are expected; keep real errors
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    for lib in (dlog, tlog):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
