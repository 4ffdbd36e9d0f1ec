"""Progress on rank 0: one line per optimizer step, and a bar when stderr is a terminal.

    step 3/100  reward 0.512 ± 0.103  loss/total 0.0012  loss/policy 0.0011  kl 0.00032  4.1 s/step

The line goes through logging (``trainer.progress``), so other ranks, whose logging is at ERROR
(``runs.setup_logging``), print nothing; the bar is drawn on rank 0 only, never into a pipe or a log file.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

if TYPE_CHECKING:
    from trainer.runs import Run

log = logging.getLogger(__name__)


class Progress:
    """A run's per-step report: started when the training loop starts, told about every optimizer step."""

    def __init__(self, run: Run, stream: IO[str] | None = None) -> None:
        self.run = run
        self.total = int(run.rcfg.max_steps)
        self.last = time.perf_counter()
        self.bar: Any = None
        self._redirect: Any = None
        stream = sys.stderr if stream is None else stream
        if run.main and _is_terminal(stream):
            self.bar = tqdm(
                total=self.total,
                initial=min(run.step, self.total),
                desc=run.recipe,
                unit="step",
                file=stream,
                dynamic_ncols=True,
                leave=True,
            )
            # every log line (this one's, checkpoints', warnings') printed above the bar, not through it
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()

    def step(self, metrics: dict[str, float]) -> str:
        """Report the optimizer step just taken (``run.step``); returns the line."""
        now = time.perf_counter()
        line = step_line(self.run.step, self.total, metrics, now - self.last)
        self.last = now
        if not self.run.main:
            return line
        log.info("%s", line)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.refresh()  # redrawn now, even within tqdm's minimum interval
        return line

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


def _num(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else str(v)


def step_line(step: int, total: int, metrics: dict[str, float], seconds: float) -> str:
    """``step s/total``, the reward's mean and std where the recipe has rewards, every ``loss/*`` term (the KL
    term as ``kl``), and the step's wall seconds."""
    parts = [f"step {step}/{total}"]
    if "reward/total" in metrics:
        reward = f"reward {_num(float(metrics['reward/total']))}"
        if "reward/std" in metrics:
            reward += f" ± {_num(float(metrics['reward/std']))}"
        parts.append(reward)
    losses = sorted(k for k in metrics if k.startswith("loss/") and k != "loss/kl")
    losses.sort(key=lambda k: k != "loss/total")  # the total first
    parts += [f"{k} {_num(float(metrics[k]))}" for k in losses]
    if "loss/kl" in metrics:
        parts.append(f"kl {_num(float(metrics['loss/kl']))}")
    parts.append(f"{seconds:.1f} s/step")
    return "  ".join(parts)
