"""Training progress: one line per optimizer step on rank 0, a bar only on a terminal, other ranks quiet."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.training import QUIET
from trainer import grpo, runs
from trainer.config import load
from trainer.progress import Progress, step_line

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "trainer" / "configs"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(main: bool = True, step: int = 0) -> SimpleNamespace:
    return SimpleNamespace(main=main, step=step, recipe="grpo", rcfg=SimpleNamespace(max_steps=2))


GRPO = {
    "reward/total": 0.5,
    "reward/std": 0.1,
    "loss/policy": 0.25,
    "loss/kl": 0.01,
    "loss/total": 0.3,
}


def test_grpo_prints_one_line_per_optimizer_step(tiny_home, tmp_path, caplog):
    caplog.set_level("INFO", logger="trainer.progress")
    out = tmp_path / "run"
    grpo.main(load(grpo.Config, CONFIGS / "grpo_tiny.yaml", [*QUIET, f"run.out={out}"]))
    lines = [r.getMessage() for r in caplog.records if r.name == "trainer.progress"]
    assert len(lines) == 2, lines
    number = r"-?[\d.e+-]+"
    for step, line in enumerate(lines, 1):
        assert re.fullmatch(
            rf"step {step}/2  reward {number} ± {number}  loss/total {number}  "
            rf"loss/policy {number}  kl {number}  \d+\.\d s/step",
            line,
        ), line


def test_step_line_shows_what_the_recipe_has():
    assert step_line(3, 10, GRPO, 4.06) == (
        "step 3/10  reward 0.5 ± 0.1  loss/total 0.3  loss/policy 0.25  kl 0.01  4.1 s/step"
    )
    sft = {"loss/flow_matching": 0.125, "train/grad_norm": 2.0}
    assert step_line(1, 2, sft, 0.5) == "step 1/2  loss/flow_matching 0.125  0.5 s/step"
    opd = {"loss/total": 1.0, "loss/opd": 0.75, "loss/mar": 0.25, "reward/total": 0.5}
    assert step_line(2, 2, opd, 1.0) == (
        "step 2/2  reward 0.5  loss/total 1  loss/mar 0.25  loss/opd 0.75  1.0 s/step"
    )


def test_bar_only_on_a_terminal_and_only_on_rank_0(caplog):
    caplog.set_level("INFO", logger="trainer.progress")
    tty = Terminal()
    run = _run()
    progress = Progress(run, tty)
    for step in (1, 2):
        run.step = step
        progress.step(GRPO)
    progress.close()
    assert "2/2" in tty.getvalue()  # the bar, drawn on the terminal
    assert len([r for r in caplog.records if r.name == "trainer.progress"]) == 2

    pipe = io.StringIO()
    piped = Progress(_run(step=1), pipe)
    piped.step(GRPO)
    piped.close()
    assert piped.bar is None and pipe.getvalue() == ""  # no bar in a pipe or a log file

    caplog.clear()
    tty = Terminal()
    other = Progress(_run(main=False, step=1), tty)
    other.step(GRPO)
    other.close()
    assert other.bar is None and tty.getvalue() == ""
    assert not [r for r in caplog.records if r.name == "trainer.progress"]


@pytest.fixture()
def restore_logging():
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)
    logging.captureWarnings(False)


def test_other_ranks_log_errors_only(monkeypatch, restore_logging):
    """The rank as the launcher sets it (``RANK``, ``runs.launched_rank``): rank 1 keeps errors, drops the rest."""
    monkeypatch.setenv("RANK", "1")
    runs.setup_logging()
    for name in ("trainer.progress", "trainer.runs", "trainer.checkpoints"):
        logger = logging.getLogger(name)
        assert not logger.isEnabledFor(logging.INFO) and not logger.isEnabledFor(logging.WARNING)
        assert logger.isEnabledFor(logging.ERROR)
    monkeypatch.setenv("RANK", "0")
    runs.setup_logging()
    assert logging.getLogger("trainer.progress").isEnabledFor(logging.INFO)


ENTRY_POINTS = ["grpo", "sft", "opd", "merge", "pretrain", "paper", "presets"]
HELP = """
import contextlib, io, json, runpy, sys
out = {}
for name in sys.argv[1:]:
    sys.argv = [name, "--help"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        runpy.run_module(f"trainer.{name}", run_name="__main__", alter_sys=True)
    out[name] = buf.getvalue()
print(json.dumps(out))
"""


def test_help_usage_lines_show_how_to_launch_each_entry_point():
    """Each ``python -m trainer.X --help`` as run with ``-m`` (the module is ``__main__``)."""
    proc = subprocess.run(
        [sys.executable, "-c", HELP, *ENTRY_POINTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    helps = json.loads(proc.stdout.splitlines()[-1])
    for name in ENTRY_POINTS:
        text = helps[name]
        assert text.startswith(f"usage: python -m trainer.{name} "), text[:200]
        assert "__main__" not in text and ".py " not in text.splitlines()[0]
    for name in ("grpo", "sft", "opd"):
        assert f"accelerate launch [ACCELERATE OPTIONS] -m trainer.{name} " in helps[name]
    merge = helps["merge"].split("\n\n")[0]  # its usage lines: one process, rank 0 merges
    assert "accelerate" not in merge and "accelerate launch" in helps["merge"]
