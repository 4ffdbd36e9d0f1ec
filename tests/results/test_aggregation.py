"""The aggregation views and tables against hand-computed values (docs/method.md section 6)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import tables
from results.store import Store
from tests.support.runs import TASKS, add_run, paper_sd35m, put


def geneval_fixture(store: Store, run: str = "r") -> None:
    # tasks with different image counts, so the task mean and the image mean differ
    per_task = {
        "single_object": [1, 1, 1, 1],  # 1.0
        "two_object": [1, 0, 0, 0, 1, 0, 0, 0],  # 0.25
        "counting": [0, 0, 0, 0],  # 0.0
        "colors": [1, 1, 0, 0],  # 0.5
        "position": [0, 0, 0, 1],  # 0.25
        "color_attr": [1, 0, 0, 0],  # 0.25
    }
    values = [v for t in TASKS for v in per_task[t]]
    groups = [t for t in TASKS for _ in per_task[t]]
    put(store, run, "geneval", "geneval", values, groups, per_prompt=4)


def test_geneval_overall_is_the_mean_of_task_means_not_the_image_mean() -> None:
    s = Store(":memory:")
    add_run(s, "r", {"geneval": (7, 4)})
    geneval_fixture(s)
    (row,) = s.benchmark_scores(benchmark="geneval")
    assert row["score"] == pytest.approx((1 + 0.25 + 0 + 0.5 + 0.25 + 0.25) / 6)  # 0.375
    assert row["image_mean"] == pytest.approx(10 / 28)  # 0.357...
    assert row["n_images"] == 28 and row["n_groups"] == 6
    per = {g["grp"]: (g["mean"], g["n_images"]) for g in s.group_scores("geneval")}
    assert per == {
        "single_object": (1.0, 4),
        "two_object": (0.25, 8),
        "counting": (0.0, 4),
        "colors": (0.5, 4),
        "position": (0.25, 4),
        "color_attr": (0.25, 4),
    }
    t = tables.geneval_table(s)
    assert t.columns == ["run", "step", "Overall", *tables.GENEVAL_TITLES, "Images"]
    assert t.rows == [
        ["r", 0, pytest.approx(0.375), 1.0, 0.25, 0.0, 0.5, 0.25, 0.25, pytest.approx(10 / 28)]
    ]
    assert t.partial == [set()] and not t.notes  # 28 images = 7 prompts x 4: complete
    text = tables.render(t)
    assert "0.3750" in text and "0.3571" in text


def test_avg_column_matches_the_paper_formula_and_sd35m() -> None:
    s = Store(":memory:")
    add_run(
        s, "sd35m", {"geneval": (6, 1), "ocr": (2, 1), "drawbench": (2, 1), "pickscore": (2, 1)}
    )
    paper_sd35m(s, "sd35m")
    (row,) = s.main_table()
    assert (row["geneval"], row["ocr"], row["deqa"], row["pickscore"]) == pytest.approx(
        (0.63, 0.59, 4.07, 21.64)
    )
    want = (0.63 + 0.59 + 4.07 / 5 + 21.64 / 26) / 4  # 0.716577 (the paper prints 0.7165)
    assert row["avg"] == pytest.approx(want, abs=1e-12)
    assert abs(row["avg"] - 0.7165) < 1e-4
    t = tables.main_table(s)
    assert t.rows[0][0] == "sd35m" and t.rows[0][6] == pytest.approx(want)
    assert "0.7166" in tables.render(t) and "21.640" in tables.render(t)


def test_avg_is_empty_until_all_four_columns_exist_and_partial_cells_are_marked() -> None:
    s = Store(":memory:")
    add_run(s, "a", {"geneval": (553, 4), "ocr": (1018, 1)})
    put(s, "a", "geneval", "geneval", [1, 0, 1], ["single_object"] * 3)
    put(s, "a", "ocr", "ocr", [0.25])
    (row,) = s.main_table()
    assert row["avg"] is None and row["deqa"] is None
    t = tables.main_table(s)
    assert t.partial[0] == {2, 3}  # Avg is empty, not partial
    assert "* partial: a has 3 of 2212 geneval images" in t.notes
    assert "* partial: a has 1 of 1018 ocr images" in t.notes
    text = tables.render(t)
    assert "0.6667*" in text and "0.2500*" in text


def test_leaderboard_uses_each_runs_last_step_and_history_keeps_all() -> None:
    s = Store(":memory:")
    put(s, "train", "ocr", "ocr", [0.2, 0.4], step=0)
    put(s, "train", "ocr", "ocr", [0.8, 1.0], step=100)
    put(s, "base", "ocr", "ocr", [0.5, 0.6])
    board = s.leaderboard("ocr")
    assert [(r["run_id"], r["step"], round(r["score"], 6)) for r in board] == [
        ("train", 100, 0.9),
        ("base", 0, 0.55),
    ]
    assert [(r["step"], round(r["score"], 6)) for r in s.history("train")] == [(0, 0.3), (100, 0.9)]


def test_compbench_and_quality_tables() -> None:
    s = Store(":memory:")
    cats = ["color", "color", "shape", "numeracy", "numeracy", "numeracy"]
    put(s, "r", "compbench", "compbench", [0.5, 0.7, 0.2, 1.0, 0.0, 0.5], cats)
    put(s, "r", "drawbench", "deqa", [4.0, 5.0])
    put(s, "r", "drawbench", "imagereward", [1.0, 1.5])
    put(s, "r", "drawbench", "newscore", [3.0, 3.0])
    (c,) = tables.compbench_table(s).rows
    # Overall = mean(0.6, 0.2, 0.5) over the categories present
    assert c[:5] == ["r", 0, pytest.approx(1.3 / 3), 0.6, 0.2] and c[2 + 1 + 6] == pytest.approx(
        0.5
    )
    q = tables.quality_table(s)
    assert q.columns == ["run", "step", "DeQA", "ImageReward", "newscore"]
    assert q.rows == [["r", 0, 4.5, 1.25, 3.0]]


@settings(max_examples=40)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(TASKS), st.floats(min_value=-100, max_value=100, allow_nan=False)
        ),
        min_size=1,
        max_size=40,
    )
)
def test_views_equal_an_independent_python_aggregation(rows: list[tuple[str, float]]) -> None:
    s = _SHARED  # one store (creating one costs more than the check); a fresh run id per example
    run = f"r{len(s.run_ids())}"
    add_run(s, run, {})
    put(s, run, "geneval", "x", [v for _, v in rows], [g for g, _ in rows])
    (got,) = s.benchmark_scores(run_ids=[run])
    by: dict[str, list[float]] = {}
    for g, v in rows:
        by.setdefault(g, []).append(v)
    want_group = sum(sum(v) / len(v) for v in by.values()) / len(by)
    want_image = sum(v for _, v in rows) / len(rows)
    assert math.isclose(got["score"], want_group, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(got["image_mean"], want_image, rel_tol=1e-9, abs_tol=1e-9)


_SHARED = Store(":memory:")


def test_renderers_agree_on_the_numbers() -> None:
    s = Store(":memory:")
    add_run(
        s, "sd35m", {"geneval": (6, 1), "ocr": (2, 1), "drawbench": (2, 1), "pickscore": (2, 1)}
    )
    paper_sd35m(s, "sd35m")
    t = tables.main_table(s)
    md = tables.render(t, "markdown").splitlines()
    # one image per GenEval prompt (the standard is 4): shown apart, with a status column
    assert md[2] == "| run | step | GenEval | OCR | DeQA | PickScore | Avg | status |"
    assert md[3] == "|---|---|---:|---:|---:|---:|---:|---|"
    assert md[5] == "| sd35m | 0 | 0.6300 | 0.5900 | 4.070 | 21.640 | 0.7166 | other protocol |"
    csv_lines = tables.render(t, "csv").splitlines()
    assert csv_lines[1] == "run,step,GenEval,OCR,DeQA,PickScore,Avg,rank,status,partial"
    assert csv_lines[2].startswith("sd35m,0,0.63") and csv_lines[2].endswith(",,other protocol,")
    (j,) = json.loads(tables.render(t, "json"))
    assert j["rows"][0]["Avg"] == pytest.approx((0.63 + 0.59 + 4.07 / 5 + 21.64 / 26) / 4)
    with pytest.raises(ValueError, match="unknown format"):
        tables.render(t, "xlsx")
