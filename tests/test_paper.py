"""The mini-world paper orchestrator's arithmetic: teacher-gain retention, the seeds table, the CLI's bad input.

The end-to-end run itself takes ~30 minutes on 2 cores; its figures are in the README, not in a test.
"""

from __future__ import annotations

import json

import pytest

from trainer import paper

RESULTS = {
    "base": {"GenEval": 0.20, "OCR": 0.10, "Quality": 0.90},
    "grpo_geneval": {"GenEval": 0.40, "OCR": 0.10, "Quality": 0.90},
    "grpo_ocr": {"GenEval": 0.20, "OCR": 0.30, "Quality": 0.90},
    "grpo_quality": {"GenEval": 0.20, "OCR": 0.10, "Quality": 0.85},  # below the base
    "opd_merge": {"GenEval": 0.38, "OCR": 0.25, "Quality": 0.91},
}


def test_retention_is_the_share_of_each_teachers_gain() -> None:
    kept = paper.retention(RESULTS, "opd_merge")
    # (0.38 - 0.20) / (0.40 - 0.20) = 0.9 ; (0.25 - 0.10) / (0.30 - 0.10) = 0.75
    assert kept["GenEval"] == pytest.approx(0.9)
    assert kept["OCR"] == pytest.approx(0.75)
    # the quality teacher did not beat the base: no gain to keep, so no ratio (not -0.2)
    assert kept["Quality"] is None


def test_retention_of_a_missing_model_is_none() -> None:
    assert paper.retention(RESULTS, "opd_sft") == {"GenEval": None, "OCR": None, "Quality": None}


def _summary(seed: int, geneval: float, ocr: float) -> dict:
    return {
        "seed": seed,
        "results": {
            "base": {"GenEval": 0.2, "OCR": 0.1},
            "grpo_geneval": {"GenEval": geneval, "OCR": ocr},
        },
    }


def test_across_seeds_mean_and_spread() -> None:
    agg = paper.across_seeds([_summary(0, 0.30, 0.12), _summary(1, 0.40, 0.10)])
    mean, spread = agg["grpo_geneval"]["GenEval"]
    assert mean == pytest.approx(0.35) and spread == pytest.approx(0.10)
    mean, spread = agg["grpo_geneval"]["OCR"]
    assert mean == pytest.approx(0.11) and spread == pytest.approx(0.02)
    assert agg["base"]["GenEval"] == pytest.approx((0.2, 0.0))


def test_across_seeds_skips_a_column_one_seed_lacks() -> None:
    partial = _summary(1, 0.40, 0.10)
    del partial["results"]["grpo_geneval"]["OCR"]
    agg = paper.across_seeds([_summary(0, 0.30, 0.12), partial])
    assert "OCR" not in agg["grpo_geneval"]  # a mean over one seed would pass for two


def test_seeds_table_renders_mean_and_spread() -> None:
    table = paper.render_seeds_table([_summary(0, 0.30, 0.12), _summary(1, 0.40, 0.10)])
    lines = table.splitlines()
    assert lines[0].startswith("| model (seeds 0, 1) | GenEval | OCR | Quality | Avg |")
    row = next(line for line in lines if line.startswith("| GRPO-GenEval |"))
    assert "0.350 ± 0.100" in row and "0.110 ± 0.020" in row
    assert row.endswith("| - | - |")  # no Quality, no Avg in these summaries


def test_summarize_cli(tmp_path, capsys) -> None:
    for seed, (g, o) in enumerate([(0.30, 0.12), (0.40, 0.10)]):
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "summary.json").write_text(json.dumps(_summary(seed, g, o)))
    paper.main(["--summarize", str(tmp_path / "s0"), str(tmp_path / "s1")])
    assert "0.350 ± 0.100" in capsys.readouterr().out
    with pytest.raises(
        SystemExit, match="no summary.json in .*nope: run trainer.paper there first"
    ):
        paper.main(["--summarize", str(tmp_path / "nope")])


def test_a_retrained_stage_loses_its_earlier_evaluation(tmp_path) -> None:
    """Evaluation resumes by run id; a stage trained again must not find the old weights' rows."""
    from results.store import RunRecord, Store
    from trainer.paper import forget_evaluation

    store = tmp_path / "store.duckdb"
    forget_evaluation(store, "opd_merge")  # no store yet: nothing to do, nothing created
    assert not store.exists()
    s = Store(store)
    for name in ("opd_merge", "grpo_geneval"):
        s.add_run(RunRecord(name, "mini", f"runs/{name}/lora", {}, {}))
    s.close()
    forget_evaluation(store, "opd_merge")
    assert Store(store, read_only=True).run_ids() == ["grpo_geneval"]
