"""The paper presets rehearsed as a user runs them, and the split audit's refusal.

Every paper preset goes through ``python -m trainer.<recipe> PRESET --rehearse --world-size 1,8,32`` (a real process):
it must build as written, divide at each world size, audit clean, and run one optimizer step on the CPU with
stand-ins. The printed numbers are checked against what the preset states (task shares, the student's shape).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import grpo, opd, presets, sft
from trainer.config import ConfigError, load
from trainer.data import audit_split, load_datasets

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "trainer" / "configs"
PAPER = presets.PRESETS  # preset -> recipe
RECIPES = {"grpo": grpo, "opd": opd, "sft": sft}


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


def _shares(out: str) -> dict[str, tuple[float, float]]:
    """task -> (share of the planned images, stated share), from the rehearsal's task-share lines."""
    found = re.findall(
        r"^\s+(\w+)\s+([\d.]+)% of the images of \d+ epochs, stated ([\d.]+)%", out, re.M
    )
    return {task: (float(got), float(want)) for task, got, want in found}


@pytest.mark.parametrize("preset", sorted(PAPER))
def test_every_paper_preset_rehearses_at_1_8_and_32(tiny_home, preset):  # noqa: F811
    recipe = PAPER[preset]
    worlds = "1" if recipe == "merge" else "1,8,32"
    got = _run(
        "-m",
        f"trainer.{recipe}",
        f"trainer/configs/{preset}.yaml",
        "--rehearse",
        "--world-size",
        worlds,
    )
    assert got.returncode == 0, got.stderr[-3000:]
    out = got.stdout
    assert f"ok: {preset}.yaml builds" in out
    if recipe != "merge":
        audit = re.findall(r"^\s+\w+\s+(\d+) of (\d+) \(harness/prompts/", out, re.M)
        assert audit and all(n == "0" and int(of) > 1000 for n, of in audit), out
    for task, (share, stated) in _shares(out).items():
        assert abs(share - stated) <= 2.0, (task, share, stated)
    if recipe in ("grpo", "opd"):
        for world in (1, 8, 32):
            assert f"at world size {world}:" in out
        assert re.search(r"per optimizer step: \d+ batches x 9 trained steps", out)
    assert re.search(r"^\s+(student|merged)\s+r 32 / alpha 64", out, re.M), out
    if (
        preset == "opd_paper"
    ):  # the check: shares within 2 points, the student r 32 / alpha 64 from init
        assert set(_shares(out)) == {"geneval", "ocr", "pickscore"}
        assert {t: s for t, (_, s) in _shares(out).items()} == {
            "geneval": 60.0,
            "ocr": 20.0,
            "pickscore": 20.0,
        }
        assert re.search(r"^\s+student\s+r 32 / alpha 64.*\(from init runs/merge\)", out, re.M)
        at8 = out.split("at world size 8:")[1].split("at world size 32:")[0]
        assert "per process: 144 images (6 prompt groups) in 16 batches of 9" in at8
        assert re.search(r"loss/mar\s+\S+\s+x mar_lambda 0.02", out)


def test_a_world_size_the_epoch_does_not_divide_is_one_line(tiny_home):  # noqa: F811
    got = _run(
        "-m", "trainer.grpo", "trainer/configs/grpo_geneval.yaml", "--rehearse", "--world-size", "7"
    )
    assert got.returncode == 2
    assert got.stderr.strip().count("\n") == 0 and "do not split over 7 processes" in got.stderr
    bad = _run(
        "-m", "trainer.grpo", "trainer/configs/grpo_geneval.yaml", "--rehearse", "--world-size", "x"
    )
    assert bad.returncode == 2 and "--world-size 'x' must be positive integers" in bad.stderr


def _paper_and_default_configs():
    for path in sorted(CONFIGS.glob("*.yaml")):
        for module in RECIPES.values():
            try:
                yield path.name, load(module.Config, path)
                break
            except ConfigError:
                continue
    for name, module in RECIPES.items():
        yield f"{name} defaults", module.Config()


def test_no_preset_or_default_trains_on_an_evaluation_prompt():
    """Every shipped config with prompts audits clean against GenEval, OCR, PickScore, DrawBench and
    T2I-CompBench, without data.allow_eval_prompts."""
    seen = 0
    for name, cfg in _paper_and_default_configs():
        assert not cfg.data.allow_eval_prompts, name
        pools = load_datasets(cfg.datasets, getattr(cfg, "prompt_limit", None))
        audit = audit_split(pools, allow_eval_prompts=False)  # raises on any overlap
        assert {"geneval", "ocr", "pickscore", "drawbench"} <= set(audit.audited)
        assert audit.contaminated == [], name
        seen += 1
    assert seen >= 15


def test_training_on_test_prompts_is_refused_in_one_line_before_any_work(tmp_path):
    """The real CLI, from another folder: one line naming the fix, exit 2... and no run folder."""
    cfg = ROOT / "trainer" / "configs" / "grpo_geneval.yaml"
    got = _run(
        "-m",
        "trainer.grpo",
        str(cfg),
        "datasets.geneval=harness/prompts/geneval_official/evaluation_metadata.jsonl",
        f"run.out={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert got.returncode == 2
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1, got.stderr
    assert lines[0].startswith(
        "error: datasets.geneval: 553 of 553 training prompts are evaluation prompts (geneval"
    )
    assert "data.allow_eval_prompts=true" in lines[0]
    assert not (tmp_path / "run").exists()


def test_allowed_eval_prompts_are_recorded_and_passed_on(tmp_path):
    """allow_eval_prompts: the audit says what overlaps; a run started from such a model inherits the verdict."""
    pools = load_datasets({"drawbench": "harness/prompts/drawbench/test.txt"}, limit=10)
    audit = audit_split(pools, allow_eval_prompts=True)
    assert audit.overlaps["drawbench"].lines == 10
    record = audit.manifest()
    assert record["split_audit"]["allow_eval_prompts"] is True
    assert record["contaminated"] == [
        "datasets.drawbench: 10 of 10 training prompts are evaluation prompts (drawbench 10); "
        f'e.g. "{pools["drawbench"][0].prompt}"'
    ]
    parent = tmp_path / "teacher"
    parent.mkdir()
    (parent / "manifest.json").write_text(__import__("json").dumps(record))
    clean = load_datasets({"ocr": "harness/prompts/ocr_train/train.txt"}, limit=10)
    child = audit_split(clean, allow_eval_prompts=False, parents={"teachers.ocr": parent})
    assert child.overlaps["ocr"].lines == 0
    assert child.contaminated == [f"teachers.ocr {parent}: {record['contaminated'][0]}"]
