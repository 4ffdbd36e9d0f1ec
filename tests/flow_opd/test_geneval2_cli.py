"""`harness eval` of the tiny SD3 on `geneval2 --limit 8` with a tiny Qwen3-VL judge, on the CPU: the three
GenEval 2 tables come out, and `harness ls` lists the benchmark and the scorer."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flow_opd.cli import app
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
