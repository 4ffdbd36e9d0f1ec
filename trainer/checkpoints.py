"""Checkpoints: what a run needs to continue bit for bit (adapter, optimizer, scheduler, EMA, every rank's RNG, step
and epoch), written at the end of an epoch and read back by ``run.resume``.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from flowmodels import adapters
from trainer.config import ConfigError
from trainer.student import STUDENT

if TYPE_CHECKING:
    from trainer.optim import Training
    from trainer.runs import Run

log = logging.getLogger(__name__)


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
