"""Run folders across runs: a folder that holds a run is refused unless resumed or overwritten, and a resumed
run's ``metrics.jsonl`` holds each step once (grpo_tiny, 2 steps, on the CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.training import QUIET
from trainer import checkpoints, grpo, metrics, opd, runs, sft, student
from trainer.config import ConfigError, load
from trainer.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "trainer" / "configs"
SMALL = ["sample.groups_per_epoch=1"]  # grpo_tiny: 2 steps, a checkpoint after each


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _events(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("events.out.tfevents.*"))


@pytest.fixture(scope="module")
def finished(tiny_home, tmp_path_factory) -> Path:
    """A finished grpo_tiny run with TensorBoard on (as the preset runs); tests work on copies."""
    out = tmp_path_factory.mktemp("finished") / "run"
    grpo.main(load(grpo.Config, CONFIGS / "grpo_tiny.yaml", [*SMALL, f"run.out={out}"]))
    return out


def _copy(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def test_rerun_into_a_finished_folder_is_refused_in_one_line(finished, tiny_home, tmp_path):
    out = _copy(finished, tmp_path)
    before = _snapshot(out)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOW_OPD_HOME": str(tiny_home)}
    cmd = [sys.executable, "-m", "trainer.grpo", str(CONFIGS / "grpo_tiny.yaml"), f"run.out={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "finished grpo run (step 2)" in lines[0]
    assert "run.resume=auto" in lines[0] and "run.overwrite=true" in lines[0]
    assert _snapshot(out) == before


@pytest.mark.parametrize("recipe", [grpo, sft, opd], ids=["grpo", "sft", "opd"])
def test_refusal_comes_before_any_model_loads(finished, tmp_path, monkeypatch, recipe):
    out = _copy(finished, tmp_path)
    before = _snapshot(out)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(student, "load_base", no_model)
    name = recipe.__name__.rsplit(".", 1)[-1]
    cfg = load(recipe.Config, CONFIGS / f"{name}_tiny.yaml", [*QUIET, f"run.out={out}"])
    with pytest.raises(ConfigError, match="already holds a finished grpo run"):
        recipe.main(cfg)
    assert _snapshot(out) == before


def test_overwrite_clears_the_run_and_trains_again(finished, tmp_path):
    """``run.overwrite=true``: one run's TensorBoard files, its metrics once, a new run id; files the run did not
    write stay."""
    out = _copy(finished, tmp_path)
    (out / "notes.txt").write_text("mine")
    grpo.main(
        load(
            grpo.Config,
            CONFIGS / "grpo_tiny.yaml",
            [*SMALL, f"run.out={out}", "run.overwrite=true"],
        )
    )
    # one run's set: logs/events... and logs/<time>/events...
    assert len(_events(out)) == len(_events(finished)) == 2
    assert _events(out) != _events(finished)  # the new run's, not the old ones beside them
    assert [r["step"] for r in read_metrics(out)] == [1, 2]
    old, new = (json.loads((f / "manifest.json").read_text()) for f in (finished, out))
    assert new["run_id"] != old["run_id"] and new["step"] == 2
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_and_resume_together_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="set one of them"):
        load(grpo.Config, None, [f"run.out={tmp_path}", "run.overwrite=true", "run.resume=auto"])


def test_resume_auto_on_a_finished_run_does_nothing_and_says_so(finished, tmp_path, caplog):
    out = _copy(finished, tmp_path)
    before = _snapshot(out)
    caplog.set_level("INFO", logger="trainer.runs")
    grpo.main(
        load(grpo.Config, CONFIGS / "grpo_tiny.yaml", [*QUIET, f"run.out={out}", "run.resume=auto"])
    )
    assert _snapshot(out) == before
    assert any("is finished (step 2" in r.getMessage() for r in caplog.records)


class Killed(Exception):
    """Stands for a process killed between logging a step and checkpointing it."""


def test_resumed_run_logs_each_step_once(tiny_home, tmp_path, monkeypatch):
    """Killed after step 2 was logged but before its checkpoint, then resumed from step 1's checkpoint: step 2 is
    trained and logged again, and metrics.jsonl holds it once."""
    out = tmp_path / "run"
    save = checkpoints.save_checkpoint

    def killed_at_step_2(run, tr):
        if run.step == 2:
            raise Killed
        return save(run, tr)

    overrides = [*QUIET, *SMALL, f"run.out={out}"]
    monkeypatch.setattr(checkpoints, "save_checkpoint", killed_at_step_2)
    with pytest.raises(Killed):
        grpo.main(load(grpo.Config, CONFIGS / "grpo_tiny.yaml", overrides))
    assert [r["step"] for r in read_metrics(out)] == [1, 2]
    monkeypatch.setattr(checkpoints, "save_checkpoint", save)
    grpo.main(load(grpo.Config, CONFIGS / "grpo_tiny.yaml", [*overrides, "run.resume=auto"]))
    steps = [r["step"] for r in read_metrics(out)]
    assert steps == [1, 2] and all(a < b for a, b in zip(steps, steps[1:], strict=False))
    assert json.loads((out / "manifest.json").read_text())["step"] == 2


@pytest.mark.parametrize(
    ("files", "held"),
    [
        ({"checkpoints/step_000001/state.json": '{"step": 1}'}, "a checkpoint at step 1"),
        ({"metrics.jsonl": '{"step": 1}\n'}, "logged steps"),
    ],
)
def test_a_folder_with_checkpoints_or_logged_steps_holds_a_run(tmp_path, files, held):
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    rcfg = load(grpo.Config, None, [f"run.out={tmp_path}"]).run
    with pytest.raises(ConfigError, match=held):
        runs.check_folder("grpo", rcfg)
    assert runs.check_folder(
        "grpo", load(grpo.Config, None, [f"run.out={tmp_path}", "run.resume=auto"]).run
    )
    assert runs.held_run(tmp_path / "empty") is None


def test_trim_metrics_drops_rows_past_the_step_and_a_cut_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"ste')
    assert metrics.trim_metrics(tmp_path, 2) == 2
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
