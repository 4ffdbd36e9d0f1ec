"""GenEval rules, Flow-GRPO GenEval reward and summary on synthetic detections; golden values computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorers.geneval_rules import (
    COLORS,
    Detection,
    MetadataError,
    Options,
    flowgrpo_reward,
    judge,
    keep_detections,
    relative_position,
    summarize,
)

METADATA = Path(__file__).parents[2] / "harness/prompts/geneval_official/evaluation_metadata.jsonl"


def det(x1: float, y1: float, x2: float, y2: float, score: float = 0.95, color: str | None = None):
    return Detection((x1, y1, x2, y2), score, None, color)


def single(cls: str) -> dict:
    return {
        "tag": "single_object",
        "include": [{"class": cls, "count": 1}],
        "prompt": f"a photo of a {cls}",
    }


def counting(cls: str, n: int) -> dict:
    return {
        "tag": "counting",
        "include": [{"class": cls, "count": n}],
        "exclude": [{"class": cls, "count": n + 1}],
        "prompt": f"a photo of {n} {cls}s",
    }


def position(a: str, rel: str, b: str) -> dict:
    return {
        "tag": "position",
        "include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}],
        "prompt": f"a photo of a {a} {rel} a {b}",
    }


# ------------------------------------------------------------------------------------------ thresholds & cap


def test_threshold_is_strict_and_counting_uses_point_nine() -> None:
    raw = {"dog": [det(0, 0, 1, 1, 0.30), det(0, 0, 1, 1, 0.31), det(0, 0, 1, 1, 0.9)]}
    assert [d.score for d in keep_detections(raw, "single_object")["dog"]] == [0.9, 0.31]
    assert "dog" not in keep_detections(raw, "counting")  # 0.9 is not > 0.9
    raw2 = {"dog": [det(0, 0, 1, 1, 0.9), det(0, 0, 1, 1, 0.91), det(0, 0, 1, 1, 0.95)]}
    assert [d.score for d in keep_detections(raw2, "counting")["dog"]] == [0.95, 0.91]
    # 0.3 < score <= 0.9: seen for a single object, not for counting
    assert judge(
        keep_detections({"dog": [det(0, 0, 1, 1, 0.5)]}, "single_object"), single("dog")
    ).correct
    kept = keep_detections({"dog": [det(0, 0, 1, 1, 0.5)] * 2}, "counting")
    assert not judge(kept, counting("dog", 2)).correct


def test_empty_classes_are_absent() -> None:
    kept = keep_detections({"cat": [det(0, 0, 1, 1, 0.1)], "dog": []}, "single_object")
    assert kept == {}


def test_sixteen_cap_keeps_highest_and_hides_extra_objects_from_exclude() -> None:
    raw = {"person": [det(i, 0, i + 1, 1, 0.91 + i * 0.004) for i in range(20)]}
    kept = keep_detections(raw, "counting")
    assert len(kept["person"]) == 16
    assert kept["person"][0].score == pytest.approx(0.91 + 19 * 0.004)
    assert min(d.score for d in kept["person"]) == pytest.approx(0.91 + 4 * 0.004)
    # 20 people, yet "exactly 16" passes: the exclude clause (>= 17) sees the capped list
    assert judge(kept, counting("person", 16)).correct
    assert not flowgrpo_reward(kept, counting("person", 17)).strict_correct


def test_nms_disabled_at_one_and_active_below() -> None:
    raw = {"cup": [det(0, 0, 9, 9, 0.9), det(0, 0, 9, 9, 0.8), det(50, 50, 59, 59, 0.7)]}
    assert len(keep_detections(raw, "single_object")["cup"]) == 3
    kept = keep_detections(raw, "single_object", Options(max_overlap=0.5))
    assert [d.score for d in kept["cup"]] == [0.9, 0.7]


# --------------------------------------------------------------------------------------------------- counting


@pytest.mark.parametrize(("m", "correct"), [(1, False), (2, True), (3, False)])
def test_counting_is_exact_via_include_and_exclude(m: int, correct: bool) -> None:
    kept = {"cat": [det(10 * i, 0, 10 * i + 5, 5, 0.95) for i in range(m)]}
    res = judge(kept, counting("cat", 2))
    assert res.correct is correct
    if m == 3:
        assert res.reasons == ["expected cat<3, found 3"]


def test_two_object_allows_extra_instances() -> None:
    meta = {
        "tag": "two_object",
        "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}],
    }
    kept = {"cat": [det(0, 0, 1, 1), det(2, 2, 3, 3)], "dog": [det(5, 5, 6, 6)]}
    assert judge(kept, meta).correct
    assert not judge({"cat": kept["cat"]}, meta).correct


# ------------------------------------------------------------------------------------------------------ colour


def test_colour_looks_only_at_top_n() -> None:
    meta = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}]}
    top_red = {"car": [det(0, 0, 5, 5, 0.9, "red"), det(6, 0, 9, 5, 0.8, "blue")]}
    top_blue = {"car": [det(0, 0, 5, 5, 0.9, "blue"), det(6, 0, 9, 5, 0.8, "red")]}
    assert judge(top_red, meta).correct
    res = judge(top_blue, meta)
    assert not res.correct and res.clauses[0].colors == ["blue"]


def test_colour_callback_gets_top_n_only_and_is_not_called_when_count_fails() -> None:
    calls: list[tuple[str, int]] = []

    def color_fn(cls: str, dets):  # noqa: ANN001, ANN202
        calls.append((cls, len(dets)))
        return ["green"] * len(dets)

    meta = {"tag": "colors", "include": [{"class": "bus", "count": 1, "color": "green"}]}
    kept = {"bus": [det(0, 0, 5, 5, 0.9), det(6, 0, 9, 5, 0.8), det(10, 0, 19, 5, 0.7)]}
    assert judge(kept, meta, color_fn).correct
    assert calls == [("bus", 1)]
    assert not judge({}, meta, color_fn).correct
    assert calls == [("bus", 1)]


def test_colour_without_labels_or_classifier_raises() -> None:
    meta = {"tag": "colors", "include": [{"class": "bus", "count": 1, "color": "green"}]}
    with pytest.raises(ValueError, match="color_fn"):
        judge({"bus": [det(0, 0, 5, 5)]}, meta)


def test_colour_callback_must_answer_once_per_detection() -> None:
    meta = {"tag": "colors", "include": [{"class": "bus", "count": 1, "color": "green"}]}
    with pytest.raises(ValueError, match="returned 2 colours"):
        judge({"bus": [det(0, 0, 5, 5)]}, meta, lambda c, d: ["green", "red"])


# ---------------------------------------------------------------------------------------------------- position


@pytest.mark.parametrize(("x", "expected"), [(2.0, set()), (4.0, set()), (4.1, {"right of"})])
def test_position_margin_edges(x: float, expected: set[str]) -> None:
    # B = 10x10 at the origin; A = 10x10 shifted by x. Margin 0.1*(10+10) = 2, so dx = (x-2)/x: > 0.5 iff x > 4.
    assert relative_position((x, 0, x + 10, 10), (0, 0, 10, 10)) == expected


def test_position_divides_by_original_offset_norm() -> None:
    # offset (3.5, 4); x margin 0.1*(5+5) = 1, y margin 0 -> revised (2.5, 4).
    # / |original| = 5.315: dx = 0.470 (no "right of"), dy = 0.753 ("below").
    # / |revised| = 4.717 would give dx = 0.530 and wrongly add "right of".
    a, b = (1.0, 4.0, 6.0, 4.0), (-2.5, 0.0, 2.5, 0.0)
    assert relative_position(a, b) == {"below"}


def test_position_diagonal_gives_two_relations() -> None:
    assert relative_position((10, 10, 10, 10), (0, 0, 0, 0)) == {"right of", "below"}
    assert relative_position((0, 0, 0, 0), (10, 10, 10, 10)) == {"left of", "above"}


def test_position_margin_scales_with_threshold_option() -> None:
    a, b = (5, 0, 15, 10), (0, 0, 10, 10)  # offset 5; margin 0.1*20 = 2 -> 3/5 = 0.6
    assert relative_position(a, b, 0.1) == {"right of"}
    assert relative_position(a, b, 0.2) == set()  # margin 4 -> 1/5 = 0.2


def test_position_rule_pass_and_fail() -> None:
    meta = position("dog", "left of", "cat")
    cat = det(100, 0, 110, 10)
    assert judge({"cat": [cat], "dog": [det(0, 0, 10, 10)]}, meta).correct
    res = judge({"cat": [cat], "dog": [det(200, 0, 210, 10)]}, meta)
    assert not res.correct
    assert res.reasons == ["expected dog left of target, found right of target"]


def test_position_uses_top_one_of_each_group() -> None:
    meta = position("dog", "left of", "cat")
    kept = {
        "cat": [det(100, 0, 110, 10, 0.9), det(0, 50, 10, 60, 0.5)],
        "dog": [det(0, 0, 10, 10, 0.9), det(300, 0, 310, 10, 0.5)],
    }
    assert judge(kept, meta).correct


def test_failed_reference_fails_the_position_clause() -> None:
    meta = position("dog", "left of", "cat")
    res = judge({"dog": [det(0, 0, 10, 10)]}, meta)
    assert not res.correct
    assert [c.passed for c in res.clauses] == [False, False]
    assert res.clauses[1].reason == "no target for dog to be left of"


# ------------------------------------------------------------------------------------------ Flow-GRPO reward


def test_reward_count_term_goes_negative() -> None:
    kept = {"dog": [det(0, 0, 1, 1), det(2, 2, 3, 3), det(4, 4, 5, 5)]}
    r = flowgrpo_reward(kept, single("dog"))
    assert r.terms == [-1.0] and r.score == -1.0 and not r.strict_correct
    assert judge(kept, single("dog")).correct  # the official rule is ">= 1"


@pytest.mark.parametrize(
    ("m", "score"), [(0, 0.0), (1, 0.5), (2, 1.0), (3, 0.5), (4, 0.0), (5, -0.5)]
)
def test_reward_counting_partial_credit(m: int, score: float) -> None:
    kept = {"cat": [det(i, 0, i + 1, 1) for i in range(m)]} if m else {}
    r = flowgrpo_reward(kept, counting("cat", 2))
    assert r.score == pytest.approx(score)
    assert r.strict_correct is (m == 2)


def test_reward_ignores_exclude_clauses() -> None:
    meta = {**single("dog"), "exclude": [{"class": "dog", "count": 1}]}
    kept = {"dog": [det(0, 0, 1, 1)]}
    assert flowgrpo_reward(kept, meta).strict_correct
    assert not judge(kept, meta).correct


def test_reward_position_fail_appends_zero_then_one() -> None:
    meta = position("dog", "left of", "cat")
    kept = {"cat": [det(100, 0, 110, 10)], "dog": [det(200, 0, 210, 10)]}
    r = flowgrpo_reward(kept, meta)
    assert r.terms == [1.0, 1.0, 0.0, 1.0]
    assert r.score == pytest.approx(0.75) and not r.strict_correct


def test_reward_position_pass_appends_one() -> None:
    meta = position("dog", "left of", "cat")
    kept = {"cat": [det(100, 0, 110, 10)], "dog": [det(0, 0, 10, 10)]}
    r = flowgrpo_reward(kept, meta)
    assert r.terms == [1.0, 1.0, 1.0] and r.score == 1.0 and r.strict_correct


def test_reward_position_missing_target_appends_only_zero() -> None:
    r = flowgrpo_reward({"dog": [det(0, 0, 10, 10)]}, position("dog", "left of", "cat"))
    assert r.terms == [0.0, 1.0, 0.0]
    assert r.score == pytest.approx(1 / 3)


def test_reward_position_with_wrong_count_appends_zero() -> None:
    kept = {"cat": [det(100, 0, 110, 10)], "dog": [det(0, 0, 10, 10), det(0, 20, 10, 30)]}
    r = flowgrpo_reward(kept, position("dog", "left of", "cat"))
    assert r.terms == [1.0, 0.0, 0.0]
    assert judge(kept, position("dog", "left of", "cat")).correct  # top-1 dog is left of the cat


def test_reward_colour_partial_credit() -> None:
    meta = {
        "tag": "color_attr",
        "include": [
            {"class": "car", "count": 1, "color": "red"},
            {"class": "cup", "count": 1, "color": "blue"},
        ],
    }
    kept = {"car": [det(0, 0, 5, 5, color="red")], "cup": [det(9, 9, 12, 12, color="green")]}
    r = flowgrpo_reward(kept, meta)
    assert r.terms == [1.0, 1.0, 1.0, 0.0] and r.score == 0.75 and not r.strict_correct
    two_cars = {"car": [det(0, 0, 5, 5, color="red"), det(6, 0, 9, 5, color="red")]}
    r2 = flowgrpo_reward(two_cars, {"tag": "colors", "include": [meta["include"][0]]})
    assert r2.terms == [0.0, 0.0]


def test_reward_empty_include_scores_zero() -> None:
    assert flowgrpo_reward({}, {"tag": "x", "include": []}).score == 0.0


# ------------------------------------------------------------------------------------------------- metadata


@pytest.mark.parametrize(
    "bad",
    [
        {"include": []},
        {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "teal"}]},
        {"tag": "position", "include": [{"class": "a", "count": 1, "position": ["left of", 0]}]},
        {
            "tag": "position",
            "include": [
                {"class": "a", "count": 1},
                {"class": "b", "count": 1, "position": ["near", 0]},
            ],
        },
        {"tag": "counting", "include": [{"class": "a", "count": 0}]},
        {"tag": "counting", "include": [{"class": "a"}]},
    ],
)
def test_bad_metadata_raises(bad: dict) -> None:
    with pytest.raises(MetadataError):
        judge({}, bad)


def test_every_official_metadata_line_is_accepted() -> None:
    lines = [json.loads(x) for x in METADATA.read_text().splitlines() if x.strip()]
    assert len(lines) == 553
    for meta in lines:
        assert not judge({}, meta).correct


# ---------------------------------------------------------------------------------------------------- summary


def _rows(tag: str, n_prompts: int, per_prompt_correct: list[int]) -> list[dict]:
    rows = []
    for p in range(n_prompts):
        k = per_prompt_correct[p % len(per_prompt_correct)]
        rows += [{"tag": tag, "metadata": f"{tag}-{p}", "correct": i < k} for i in range(4)]
    return rows


def test_summary_overall_is_mean_of_task_means_not_image_mean() -> None:
    # Official image counts 320/396/320/376/400/400 (4 images per prompt).
    rows = (
        _rows("single_object", 80, [4])  # 320/320 = 1.0
        + _rows("two_object", 99, [2])  # 198/396 = 0.5
        + _rows("counting", 80, [1])  # 80/320 = 0.25
        + _rows("colors", 94, [2])  # 188/376 = 0.5
        + _rows("position", 100, [0, 0, 0, 0, 4])  # 80/400 = 0.2
        + _rows("color_attr", 100, [1])  # 100/400 = 0.25
    )
    s = summarize(rows)
    assert s.n_images == 2212 and s.n_prompts == 553
    assert list(s.task_accuracy) == [
        "single_object",
        "two_object",
        "counting",
        "colors",
        "position",
        "color_attr",
    ]
    assert s.task_accuracy == pytest.approx(
        {
            "single_object": 1.0,
            "two_object": 0.5,
            "counting": 0.25,
            "colors": 0.5,
            "position": 0.2,
            "color_attr": 0.25,
        }
    )
    assert s.overall == pytest.approx(2.7 / 6)
    assert s.image_accuracy == pytest.approx((320 + 198 + 80 + 188 + 80 + 100) / 2212)
    # prompts with any correct image: all except the 80 position prompts with 0 correct
    assert s.prompt_accuracy == pytest.approx((553 - 80) / 553)
    assert s.task_counts["two_object"] == (198, 396)
    assert s.missing_tasks == ()


def test_summary_reports_missing_tasks_and_groups_by_metadata() -> None:
    rows = [
        {"tag": "counting", "metadata": {"prompt": "a", "tag": "counting"}, "correct": False},
        {"tag": "counting", "metadata": {"tag": "counting", "prompt": "a"}, "correct": True},
        {"tag": "colors", "prompt": "b", "correct": False},
    ]
    s = summarize(rows)
    assert s.n_prompts == 2 and s.prompt_accuracy == 0.5
    assert s.overall == pytest.approx((0.5 + 0.0) / 2)
    assert "single_object" in s.missing_tasks and "counting" not in s.missing_tasks


def test_summary_rejects_empty_and_malformed() -> None:
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError, match="'tag'"):
        summarize([{"correct": True, "prompt": "x"}])


# ------------------------------------------------------------------------------------------------- properties

boxes = st.tuples(
    st.floats(0, 500, allow_nan=False),
    st.floats(0, 500, allow_nan=False),
    st.floats(1, 100, allow_nan=False),
    st.floats(1, 100, allow_nan=False),
).map(lambda t: (t[0], t[1], t[0] + t[2], t[1] + t[3]))


@given(boxes, boxes)
def test_relations_are_antisymmetric(a, b) -> None:  # noqa: ANN001
    ab, ba = relative_position(a, b), relative_position(b, a)
    flip = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    assert {flip[r] for r in ab} == ba
    assert not ({"left of", "right of"} <= ab or {"above", "below"} <= ab)


@given(
    st.lists(st.floats(0, 1, allow_nan=False), max_size=40), st.sampled_from(["counting", "colors"])
)
def test_keep_detections_invariants(scores: list[float], tag: str) -> None:
    kept = keep_detections({"x": [det(0, 0, 1, 1, s) for s in scores]}, tag).get("x", [])
    thr = 0.9 if tag == "counting" else 0.3
    assert len(kept) == min(16, sum(s > thr for s in scores))
    assert all(d.score > thr for d in kept)
    assert [d.score for d in kept] == sorted((d.score for d in kept), reverse=True)


_LINES = [json.loads(x) for x in METADATA.read_text().splitlines() if x.strip()]


@settings(max_examples=150)
@given(st.sampled_from(_LINES), st.data())
def test_strict_implies_official_and_full_score_on_real_metadata(
    meta: dict, data: st.DataObject
) -> None:
    classes = sorted({c["class"] for c in meta["include"] + meta.get("exclude", [])})
    kept = {}
    for cls in classes:
        n = data.draw(st.integers(0, 5))
        dets = [
            Detection(data.draw(boxes), 0.95, None, data.draw(st.sampled_from(COLORS)))
            for _ in range(n)
        ]
        if dets:
            kept[cls] = dets
    r = flowgrpo_reward(kept, meta)
    official = judge(kept, meta)
    if r.strict_correct:
        assert official.correct
        assert r.score == 1.0
    assert r.score <= 1.0
    assert math.isfinite(r.score)
