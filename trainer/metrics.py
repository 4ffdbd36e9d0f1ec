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


def trim_metrics(out: str | Path, step: int) -> int:
    """Drop the rows of ``metrics.jsonl`` logged after ``step`` (a resumed run logs them again); returns how
    many went. The file is replaced whole, so a crash leaves the old or the new one."""
    path = Path(out) / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    keep = [line for line in lines if _step(line) <= step]
    if len(keep) < len(lines):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(f"{line}\n" for line in keep))
        tmp.replace(path)
    return len(lines) - len(keep)


def _step(line: str) -> float:
    """A row's step; a line cut short by a crash counts as past every step (it is dropped)."""
    try:
        return float(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return float("inf")


def read_metrics(out: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.jsonl``."""
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def log_step(run: Run, tr: Training, metrics: dict[str, float]) -> None:
    """An optimizer step's scalars with the learning rate, on the first step and every ``run.log_every``; the
    progress line every step."""
    if run.progress is not None:
        run.progress.step(metrics)
    if run.step % run.rcfg.log_every == 0 or run.step == 1:
        log_metrics(run, {**metrics, "train/lr": tr.scheduler.get_last_lr()[0]})
