"""A training run on one process: accelerate, seeds, the run folder and its trackers at the start; the adapter,
manifest and contamination verdict at the end.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flowbase.code import git_sha
from flowmodels import adapters
from harness.dist import shutdown_distributed
from trainer import config
from trainer.checkpoints import find_checkpoint
from trainer.config import ConfigError, RunConfig
from trainer.data import SplitAudit
from trainer.evalhook import best_dir, check_eval_hook, read_best, save_best
from trainer.folders import clear_run, read_manifest
from trainer.metrics import trim_metrics
from trainer.optim import Training, replicas_identical, sharded, student_state
from trainer.progress import Progress
from trainer.student import STUDENT

log = logging.getLogger(__name__)


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
    progress: Progress | None = None  # the per-step line and bar (from ``begin``)
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


def launched_world() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 for a plain ``python -m``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank as the launcher set it (``RANK``; 0 for a plain ``python -m``), known before
    accelerate starts (``Run.rank`` after)."""
    return int(os.environ.get("RANK", "0"))


def launched_fsdp() -> int | None:
    """The FSDP version the accelerate config asked for (``distributed_type: FSDP`` sets ``ACCELERATE_USE_FSDP``),
    or None when it asked for none."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return None
    return int(os.environ.get("FSDP_VERSION", "1"))


def check_fsdp(rcfg: RunConfig) -> None:
    """Refuse, before any work, what the trainer does not do under FSDP: FSDP1 (its wrapper holds flat shards that
    the recipes' passes cannot use), checkpoints and resume (the optimizer state is sharded), in-loop evaluation
    (the harness gives ranks unequal prompt counts, and every pass through the sharded model is a collective)."""
    version = launched_fsdp()
    if version is None:
        return
    if version != 2:
        raise ConfigError(
            f"the accelerate config asks for FSDP version {version}; the trainer shards the student with FSDP2 "
            "only: set fsdp_version: 2 (trainer/configs/accelerate/fsdp.yaml)"
        )
    asked = [
        name
        for name, on in (
            ("run.save_every", bool(rcfg.save_every)),
            ("run.resume", rcfg.resume is not None),
            ("run.eval_every", bool(rcfg.eval_every)),
            ("run.keep_best", bool(rcfg.keep_best)),
        )
        if on
    ]
    if asked:
        raise ConfigError(
            f"{', '.join(asked)} not supported under FSDP (the optimizer state is sharded; in-loop evaluation "
            "would run unequal passes per rank): set run.save_every=0 and leave run.resume, run.eval_every and "
            "run.keep_best unset, then evaluate the saved lora/ with harness eval"
        )


def _cpu_fsdp(acc: Any) -> None:
    """accelerate (1.16) picks FSDP only on accelerators: under ``use_cpu`` it forms a gloo MULTI_CPU world and
    would quietly run DDP. Give that world the FSDP2 state the config asked for, so ``acc.prepare`` shards the
    student through the same path as on GPUs (accelerate's fsdp2_prepare_model, torch's fully_shard over gloo)."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if acc.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin()  # from the launcher's FSDP_* variables
    if acc.mixed_precision != "no":  # as accelerate does on GPUs: compute dtype, fp32 LoRA
        plugin.set_mixed_precision(acc.mixed_precision)
    acc.state.fsdp_plugin = plugin
    acc.state.distributed_type = DistributedType.FSDP


def held_run(out: Path) -> str | None:
    """What of an earlier run the folder ``out`` holds (a manifest, a checkpoint, logged steps), or None."""
    manifest = read_manifest(out)
    if manifest:
        return f"a finished {manifest.get('recipe', '?')} run (step {manifest.get('step', '?')})"
    ckpt = find_checkpoint(out, "auto")
    if ckpt is not None:
        step = json.loads((ckpt / "state.json").read_text()).get("step", "?")
        return f"a run with a checkpoint at step {step}"
    metrics = out / "metrics.jsonl"
    if metrics.exists() and metrics.read_text().strip():
        return "a run's logged steps (metrics.jsonl) and no checkpoint"
    return None


def check_folder(recipe: str, rcfg: RunConfig) -> bool:
    """Whether to train into ``run.out``; call first, before any work. A folder that holds a run is refused
    (``ConfigError``) unless ``run.resume`` continues it or ``run.overwrite`` starts it afresh (``start``
    clears it); False when ``run.resume=auto`` finds the run finished at ``run.max_steps`` (it says so)."""
    out = Path(rcfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"run.out={rcfg.out} is a file; name a folder")
    if rcfg.overwrite:
        return True
    held = held_run(out)
    if held is None:
        return True
    if rcfg.resume is None:
        raise ConfigError(
            f"run.out={rcfg.out} already holds {held}: set run.resume=auto to continue it, "
            "run.overwrite=true to clear it and train again, or another run.out"
        )
    manifest = read_manifest(out)
    if manifest and manifest.get("recipe") != recipe:
        raise ConfigError(
            f"run.out={rcfg.out} holds {held}, not a {recipe} run: run.overwrite=true clears it, "
            "or set another run.out"
        )
    step = int(manifest.get("step", 0)) if manifest else 0
    if rcfg.resume == "auto" and manifest and step >= rcfg.max_steps:
        log.info(
            "%s is finished (step %d of run.max_steps=%d): nothing to do "
            "(raise run.max_steps to continue it, or run.overwrite=true to train it again)",
            out,
            step,
            rcfg.max_steps,
        )
        return False
    return True


def _prepare_folder(out: Path, rcfg: RunConfig, ckpt: Path | None) -> None:
    """Main process, once every check has passed: clear the folder (``run.overwrite``), or drop what was logged
    after the checkpoint being resumed (a fresh start keeps no earlier metrics or TensorBoard events)."""
    if rcfg.overwrite:
        gone = clear_run(out)
        if gone:
            log.info("run.overwrite: removed %s from %s", ", ".join(gone), out)
        return
    if ckpt is not None:
        step = int(json.loads((ckpt / "state.json").read_text())["step"])
        dropped = trim_metrics(out, step)
        if dropped:
            log.info("dropped %d metrics.jsonl row(s) logged after step %d", dropped, step)
        return
    for name in ("metrics.jsonl", "logs"):
        clear = out / name
        if clear.is_dir():
            shutil.rmtree(clear)
        elif clear.exists():
            clear.unlink()


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
    check_fsdp(rcfg)
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
    if launched_fsdp() and use_cpu:
        _cpu_fsdp(acc)
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
        _prepare_folder(out, rcfg, ckpt)
        config.dump(cfg, out / "config.yaml")
        # each step once: _prepare_folder trimmed the rows past the resumed checkpoint
        run._metrics = (out / "metrics.jsonl").open("a")
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


def begin(run: Run) -> Progress:
    """The training loop starts (after any resume): the per-step progress line and bar from here."""
    run.progress = Progress(run)
    return run.progress


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
        # how the student was spread: fsdp2 (sharded), multi_gpu / multi_cpu (DDP), deepspeed, no
        "distributed": "fsdp2" if sharded(tr.ddp) else str(run.acc.distributed_type.value).lower(),
        "replicas_identical": same,
        "output": "lora",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(run.audit.manifest() if run.audit is not None else {}),
        **(extra or {}),
    }
    with tr.eval_weights():  # every rank: under FSDP2 the shards are gathered
        state = student_state(tr)
    if run.main:
        best = read_best(run) if run.rcfg.keep_best else None
        if run.rcfg.keep_best and best is None:
            raise RuntimeError(
                f"run.keep_best is set but {best_dir(run)} holds no evaluation of this run; nothing to save"
            )
        if best is not None:
            manifest["selected"] = {**best, "last_step": run.step}
            save_best(run, manifest)
        else:
            adapters.save_adapter(tr.net, STUDENT, run.out / "lora", manifest, state=state)
        (run.out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    run.acc.wait_for_everyone()
    if run.rcfg.log_with != "none":
        run.acc.end_training()
    if run._metrics is not None:
        run._metrics.close()
    if run.progress is not None:
        run.progress.close()
    if run.world > 1:
        shutdown_distributed()  # gloo's threads must not outlive the interpreter (an abort at exit)
    log.info("%s done: %s (step %d)", run.recipe, run.out, run.step)
    return run.out


def setup_logging() -> None:
    """INFO for our modules when run as a script, on rank 0 only (other ranks: errors only, warnings
    included); third-party chatter quiet."""
    level = logging.DEBUG if os.environ.get("FLOW_OPD_VERBOSE") == "1" else logging.INFO
    if launched_rank() != 0:
        level = logging.ERROR
        logging.captureWarnings(True)  # Python warnings through logging: dropped at ERROR
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
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
