"""Paired, stratified bootstrap over prompts for `harness compare`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flow_opd.cli import app
from harness.compare import PromptStats, bootstrap_weights, compare_runs, metric, paired_delta
from results.store import Store
from tests.support.runs import TASKS, add_run, add_standard_run, paper_sd35m, put


def stats(groups: list[str | None], n: list[int], total: list[float]) -> PromptStats:
    return PromptStats(groups, np.array(n, dtype=float), np.array(total, dtype=float))


def test_metric_is_image_mean_or_mean_of_group_means() -> None:
    flat = stats([None, None, None], [1, 2, 1], [1.0, 1.0, 0.0])
    assert metric(flat)[0] == pytest.approx(2 / 4)
    grouped = stats(["a", "a", "b"], [1, 2, 1], [1.0, 1.0, 0.0])
    assert metric(grouped)[0] == pytest.approx((2 / 3 + 0.0) / 2)
    # weights count prompts: prompt 0 twice, prompt 1 never
    w = np.array([[2.0, 0.0, 1.0]])
    assert metric(flat, w)[0] == pytest.approx(2 / 3)


def test_bootstrap_resamples_within_groups() -> None:
    groups = ["a"] * 5 + ["b"] * 3 + [None] * 2
    w = bootstrap_weights(groups, 200, np.random.default_rng(0))
    assert w.shape == (200, 10)
    assert (
        (w[:, :5].sum(1) == 5).all()
        and (w[:, 5:8].sum(1) == 3).all()
        and (w[:, 8:].sum(1) == 2).all()
    )
    assert w.std() > 0  # it does resample


def test_identical_runs_give_zero_and_a_constant_shift_gives_exactly_that_shift() -> None:
    rng = np.random.default_rng(1)
    groups = [TASKS[i % 6] for i in range(60)]
    n = [4] * 60
    a = stats(groups, n, list(rng.random(60) * 4))
    same = paired_delta(a, a)
    assert (same.delta, same.low, same.high) == (0.0, 0.0, 0.0)
    shifted = stats(groups, n, list(a.total + 4 * 0.1))  # every image +0.1
    d = paired_delta(shifted, a)
    assert (
        d.delta == pytest.approx(0.1)
        and d.low == pytest.approx(0.1)
        and d.high == pytest.approx(0.1)
    )


def test_interval_covers_a_noisy_true_difference() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(0.5, 0.2, 400)
    a = stats([None] * 400, [1] * 400, list(base + 0.05 + rng.normal(0, 0.05, 400)))
    b = stats([None] * 400, [1] * 400, list(base))
    d = paired_delta(a, b, resamples=2000)
    assert d.low < 0.05 < d.high and d.high - d.low < 0.03
    # paired: the interval is much narrower than the spread of either run
    assert d.high - d.low < 0.2 * base.std()


def test_compare_runs_reports_each_metric_and_avg(tmp_path) -> None:  # noqa: ANN001
    s = Store(":memory:")
    for run in ("a", "b"):
        add_run(s, run, {})
        paper_sd35m(s, run)
    add_run(s, "c", {})
    put(s, "c", "ocr", "ocr", [0.1, 0.2])
    put(s, "a", "ocr", "ocr", [0.0, 0.0], step=1)  # a's last step: 1 (only OCR there)
    deltas = compare_runs(s, "a", "b", step_a=0)
    names = [(d.benchmark, d.scorer) for d in deltas]
    assert names == [
        ("drawbench", "deqa"),
        ("geneval", "geneval"),
        ("ocr", "ocr"),
        ("pickscore", "pickscore"),
        ("main", "avg"),
    ]
    assert all(d.delta == pytest.approx(0.0) for d in deltas)
    assert deltas[-1].a == pytest.approx((0.63 + 0.59 + 4.07 / 5 + 21.64 / 26) / 4)
    (last,) = compare_runs(s, "a", "c")  # a at step 1 vs c: OCR only
    assert (last.a, last.b, last.delta) == pytest.approx((0.0, 0.15, -0.15))
    with pytest.raises(KeyError, match="did you mean"):
        compare_runs(s, "a", "bb")


def test_compare_prints_the_protocol_settings_that_differ(tmp_path: Path) -> None:
    # 10 vs 5 steps used to compare silently (the page said "A: mini, step 0 - B: mini, step 0")
    path = tmp_path / "s.duckdb"
    s = Store(path)
    for run, steps in (("ten", 10), ("five", 5)):
        add_standard_run(s, run, "mini_ocr", 2, 1, steps=steps, seed=7 if steps == 5 else 42)
        put(s, run, "mini_ocr", "mini_ocr", [0.5, 0.7])
    res = CliRunner().invoke(
        app, ["compare", "ten", "five", "--store", str(path), "--resamples", "20"]
    )
    assert res.exit_code == 0, res.output  # refuses nothing
    assert "Protocols differ in 2 settings" in res.output
    assert "steps: A 10, B 5" in res.output and "seed: A 42, B 7" in res.output
    same = CliRunner().invoke(app, ["compare", "ten", "ten", "--store", str(path)])
    assert "Protocols differ" not in same.output
