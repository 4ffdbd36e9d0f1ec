"""The bench scripts run as bench/README.md documents (``PYTHONPATH=. python bench/X.py`` from the repository
root): none shadows a package of the project, each answers ``--help``, a short measurement ends with its
``RESULT name=value`` lines. Nothing here is timed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "result_lines.py")


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_no_bench_script_shadows_a_package() -> None:
    # the script's folder comes first on sys.path: bench/scorers.py once hid the scorers package
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert "scorers" in packages
    assert not packages & {p.stem for p in BENCH.glob("*.py")}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_every_bench_script_answers_help(script: Path) -> None:
    got = _run(str(script.relative_to(ROOT)), "--help")
    assert got.returncode == 0, got.stderr[-2000:]
    assert "usage:" in got.stdout


def test_eval_overhead_runs_as_documented_and_ends_with_its_figures() -> None:
    got = _run(
        "bench/eval_overhead.py", "--images", "2", "--size", "64", "--batch-size", "2",
        "--gen-s", "0.01",
    )  # fmt: skip
    assert got.returncode == 0, got.stderr[-2000:]
    lines = got.stdout.strip().splitlines()
    tail = [line for line in lines if line.startswith("RESULT ")]
    assert tail and lines[-len(tail) :] == tail  # the figures come last
    figures = dict(line.removeprefix("RESULT ").split("=", 1) for line in tail)
    assert float(figures["overhead_share"]) >= 0 and float(figures["generator_ms_per_image"]) > 0


def test_result_lines_flatten_names_and_format_numbers() -> None:
    spec = importlib.util.spec_from_file_location("result_lines", BENCH / "result_lines.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    lines = mod.result_lines(
        {"median ms": {"leaderboard() main": 12.345678901, "n": 3}, "ok": True}
    )
    assert lines == [
        "RESULT median_ms.leaderboard_main=12.3457",
        "RESULT median_ms.n=3",
        "RESULT ok=True",
    ]
