"""`harness eval` of the tiny SD3 on `geneval2 --limit 8` with a tiny Qwen3-VL judge, on the CPU: the three
GenEval 2 tables come out, and `harness ls` lists the benchmark and the scorer."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flow_opd.cli import app
from harness import datasets
from results.store import Store

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "support" / "data"


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scorers.tiny_qwen_vl import save_tiny_qwen3_vl

    return save_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl"))


def test_eval_geneval2_prints_the_three_tables(
    tiny_sd3_dir: Path, tiny_judge: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_OPD_DATA", str(FIXTURE_DIR))
    monkeypatch.setenv("FLOW_OPD_SOFT_TIFA_MODEL", str(tiny_judge))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store = tmp_path / "s.duckdb"
    args = ["eval", "--model", str(tiny_sd3_dir), "-b", "geneval2", "--limit", "8", "--steps", "2",
            "--size", "64", "--no-progress", "--store", str(store)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    for title in (
        "GenEval 2 (Soft-TIFA x100; GM ranks)",
        "GenEval 2 per skill (Soft-TIFA AM x100)",
        "GenEval 2 per atomicity (Soft-TIFA GM x100)",
    ):
        assert title in res.output
    assert "3 atoms" in res.output and "10 atoms" in res.output and "Position" in res.output
    rows = Store(store, read_only=True).sample_scores(Store(store, read_only=True).run_ids()[0])
    assert len(rows) == 8 and {r["scorer"] for r in rows} == {"soft_tifa"}
    res = CliRunner().invoke(app, ["ls", "scorers"])
    assert res.exit_code == 0 and "soft_tifa" in res.output and "present" in res.output
    # both backends are named: the judge in process, or a server
    listing = CliRunner().invoke(app, ["ls", "scorers", "--format", "json"]).output
    (soft,) = [r for r in json.loads(listing)[0]["rows"] if r["scorer"] == "soft_tifa"]
    assert soft["runs on"].endswith("or an OpenAI-compatible server"), soft
    res = CliRunner().invoke(app, [*args, "--cfg", "1.0", "--run", "b"])
    assert res.exit_code == 0, res.output
    run_a = next(r for r in Store(store, read_only=True).run_ids() if r != "b")
    res = CliRunner().invoke(app, ["compare", run_a, "b", "--store", str(store)])
    assert res.exit_code == 0 and "geneval2   soft_tifa" in res.output, res.output


def test_fetch_geneval2_downloads_the_pinned_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixture = FIXTURE_DIR / "geneval2" / "geneval2_data.jsonl"
    spec = replace(
        datasets.DATASETS["geneval2"],
        url=fixture.as_uri(),
        sha256=hashlib.sha256(fixture.read_bytes()).hexdigest(),
    )
    monkeypatch.setitem(datasets.DATASETS, "geneval2", spec)
    monkeypatch.setenv("FLOW_OPD_DATA", str(tmp_path))
    res = CliRunner().invoke(app, ["fetch", "geneval2"])
    assert res.exit_code == 0 and "CC BY-NC 4.0" in res.output, res.output
    assert (tmp_path / "geneval2" / "geneval2_data.jsonl").read_bytes() == fixture.read_bytes()


def test_eval_geneval2_without_its_judge_is_refused_before_any_work(
    tiny_sd3_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_OPD_DATA", str(FIXTURE_DIR))
    monkeypatch.setenv("FLOW_OPD_SOFT_TIFA_MODEL", str(tmp_path / "no-judge"))
    store = tmp_path / "s.duckdb"
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_sd3_dir), "-b", "geneval2", "--limit", "2",
                                   "--no-progress", "--store", str(store)])  # fmt: skip
    assert res.exit_code == 2 and "soft_tifa" in res.output, res.output
    assert not store.exists()
