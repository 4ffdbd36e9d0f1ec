"""Metrics: every logged scalar goes to the tracker (TensorBoard or W&B) and to ``<out>/metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.optim import Training
    from trainer.runs import Run


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


def log_step(run: Run, tr: Training, metrics: dict[str, float]) -> None:
    """An optimizer step's scalars with the learning rate, on the first step and every ``run.log_every``."""
    if run.step % run.rcfg.log_every == 0 or run.step == 1:
        log_metrics(run, {**metrics, "train/lr": tr.scheduler.get_last_lr()[0]})
