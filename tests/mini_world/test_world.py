"""The mini world: deterministic splits, exact rendering, and perception that inverts the renderer."""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mini_world import world

SHIPPED = Path(__file__).resolve().parents[2] / "harness" / "prompts" / "mini"


def _shipped_rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (SHIPPED / name).read_text().splitlines()]


def test_every_task_has_a_fixed_split_and_large_tasks_are_disjoint() -> None:
    for task in world.TASKS:
        test = [p["prompt"] for p in world.split_prompts(task, "test")]
        train = [p["prompt"] for p in world.split_prompts(task, "train")]
        assert test == [p["prompt"] for p in world.split_prompts(task, "test")]  # deterministic
        if len(world.all_prompts(task)) >= world.SMALL_TASK:
            assert not set(test) & set(train)
            assert len(test) == round(len(world.all_prompts(task)) * 0.3)
        else:
            assert test == train
    assert len(world.all_prompts("single_object")) == len(world.SHAPES)
    assert len(world.all_prompts("color_attr")) == 4 * 3 * 6 * 5


def test_shipped_prompt_files_are_the_worlds_and_weigh_every_task_equally(tmp_path) -> None:
    """harness/prompts/mini is exactly what ``python -m mini_world`` writes; each task has the same line count
    in train (252, color_attr's train size) and test (24), and no test prompt of a large task is in train."""
    for path in world.write_prompt_files(tmp_path):
        assert path.read_text() == (SHIPPED / path.name).read_text(), path.name
    rows = {n: _shipped_rows(n) for n in ("geneval_train.jsonl", "geneval_test.jsonl")}
    train = collections.Counter(r["tag"] for r in rows["geneval_train.jsonl"])
    test = collections.Counter(r["tag"] for r in rows["geneval_test.jsonl"])
    assert set(train) == set(test) == set(world.GENEVAL_TASKS)
    assert set(train.values()) == {len(world.split_prompts("color_attr", "train"))} == {252}
    assert set(test.values()) == {world.TASK_TEST_LINES}
    for task in ("position", "color_attr"):  # large tasks: disjoint splits survive the cycling
        tr = {r["prompt"] for r in rows["geneval_train.jsonl"] if r["tag"] == task}
        te = {r["prompt"] for r in rows["geneval_test.jsonl"] if r["tag"] == task}
        assert tr and te and not tr & te


def test_ocr_files_hold_every_glyph_and_the_held_out_strings() -> None:
    """The OCR benchmark draws each glyph alone, equally often; its training file cycles those glyphs to the GenEval
    file's length (text is half of a union of the two); the strings file holds 400 test strings of 1-3 glyphs,
    none of them in the pretraining split."""

    def texts(name: str) -> list[str]:
        return [r["text"] for r in _shipped_rows(name)]

    train = collections.Counter(texts("ocr_train.jsonl"))
    geneval_train = _shipped_rows("geneval_train.jsonl")
    assert set(train) == set(world.GLYPHS) and sum(train.values()) == len(geneval_train)
    assert max(train.values()) - min(train.values()) <= 1  # every glyph equally often
    test = collections.Counter(texts("ocr_test.jsonl"))
    assert set(test) == set(world.GLYPHS) and set(test.values()) == {world.OCR_TEST_LINES}
    strings = texts("ocr_strings_test.jsonl")
    assert len(strings) == len(set(strings)) == world.OCR_STRINGS_TEST_PROMPTS
    pretraining = {p["text"] for p in world.split_prompts("ocr", "train")}
    assert not pretraining & set(strings)
    assert {len(t) for t in strings} == {1, 2, 3}
    for row in _shipped_rows("ocr_test.jsonl")[:18]:
        assert row["prompt"] == f'the text "{row["text"]}"' and row["tag"] == "ocr"


def test_prompt_metadata_uses_geneval_format() -> None:
    rng = random.Random(0)
    p = world.make_prompt("counting", rng)
    n = p["include"][0]["count"]
    assert p["exclude"] == [{"class": p["include"][0]["class"], "count": n + 1}]
    assert p["prompt"].startswith(world.NUMBERS[n])
    pos = world.make_prompt("position", rng)
    assert (
        pos["include"][1]["position"][1] == 0
        and pos["include"][1]["position"][0] in world.RELATIONS
    )
    ocr = world.make_prompt("ocr", rng)
    assert ocr["prompt"] == f'the text "{ocr["text"]}"'
    with pytest.raises(ValueError, match="unknown mini-world task"):
        world.make_prompt("poetry", rng)


@pytest.mark.parametrize("cls", world.SHAPES)
@pytest.mark.parametrize("size", [7, 8, 9, 10])
def test_detector_inverts_the_renderer(cls: str, size: int) -> None:
    img = world.render(world.Scene([world.Shape(cls, "pink", (4, 6, 4 + size, 6 + size))]))
    (det,) = world.detect(img)
    assert (det.cls, det.color, det.score) == (cls, "pink", 1.0)
    assert det.box == (4.0, 6.0, 4.0 + size, 6.0 + size)


def test_ground_truth_scenes_are_detected_exactly() -> None:
    rng = random.Random(3)
    for task in world.GENEVAL_TASKS:
        for meta in world.split_prompts(task, "test")[:15]:
            scene = world.scene_for(meta, rng)
            found = sorted((d.cls, d.color) for d in world.detect(world.render(scene)))
            assert found == sorted((s.cls, s.color) for s in scene.shapes), meta["prompt"]
            counts = {c["class"]: c["count"] for c in meta["include"]}
            for cls, n in counts.items():
                assert sum(s.cls == cls for s in scene.shapes) == n


def test_text_is_read_back_and_noise_is_not() -> None:
    for text in ["7", "A2", "HEL", "UP0"]:
        assert world.read_text(world.render(world.Scene(text=text))) == text
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    assert "7A2" not in world.read_text(noise)


def test_quality_is_one_on_ground_truth_and_falls_with_noise() -> None:
    img = world.render(
        world.scene_for(world.split_prompts("two_object", "test")[0], random.Random(0))
    )
    assert world.quality(img) == 1.0
    arr = np.asarray(img, dtype=float)
    noisy = np.clip(arr + np.random.default_rng(1).normal(0, 40, arr.shape), 0, 255).astype(
        np.uint8
    )
    assert world.quality(Image.fromarray(noisy)) < 0.8
    blurred = img.resize((8, 8), Image.BILINEAR).resize((32, 32), Image.BILINEAR)
    assert world.quality(blurred) < world.quality(img)


def test_quality_is_one_on_ground_truth_of_every_task() -> None:
    rng = random.Random(3)
    for task in world.TASKS:
        for meta in world.split_prompts(task, "test")[:15]:
            img = world.render(world.scene_for(meta, rng))
            assert world.quality(img) == 1.0, (task, meta)


def test_form_weighs_drawn_pixels_by_how_well_formed_they_are() -> None:
    # golden value by hand: one clean 8 x 8 square (64 px, score 1) and a 2 x 3 red fragment (6 px, under the
    # minimum area: counts 0) -> form 64 / 70; every pixel is on the palette, so quality = (1 + 64/70) / 2
    arr = np.empty((32, 32, 3), dtype=np.uint8)
    arr[:] = world.BACKGROUND
    arr[4:12, 4:12] = world.COLORS["blue"]
    arr[20:22, 20:23] = world.COLORS["red"]
    img = Image.fromarray(arr)
    assert world.form(img) == pytest.approx(64 / 70)
    assert world.quality(img) == pytest.approx((1 + 64 / 70) / 2)
    # nothing drawn: clean but no content, form 0
    blank = Image.new("RGB", (32, 32), world.BACKGROUND)
    assert world.form(blank) == 0.0 and world.quality(blank) == 0.5
    # a glyph the reader cannot recognise counts 0; a readable one counts fully
    text = world.render(world.Scene(text="7A"))
    assert world.form(text) == 1.0
    smudged = np.array(text)
    ys, xs = np.nonzero((smudged == world.TEXT_COLOR).all(-1))
    y0, x0 = ys.min(), xs.min()
    second = int(((smudged == world.TEXT_COLOR).all(-1)[:, x0 + world.GLYPH_W :]).sum())
    region = smudged[y0 : y0 + world.GLYPH_H, x0 : x0 + world.GLYPH_W]
    checker = (np.add.outer(np.arange(world.GLYPH_H), np.arange(world.GLYPH_W)) % 2) == 0
    region[:] = world.BACKGROUND
    region[checker] = world.TEXT_COLOR  # the first character becomes a checkerboard (30 px)
    assert world.read_text(Image.fromarray(smudged)) == "?A"
    assert world.form(Image.fromarray(smudged)) == pytest.approx(second / (30 + second))


def test_quality_falls_when_shapes_are_malformed() -> None:
    meta = world.split_prompts("counting", "test")[0]
    img = world.render(world.scene_for(meta, random.Random(0)))
    arr = np.array(img)
    drawn = ~(arr == world.BACKGROUND).all(-1)
    ys, xs = np.nonzero(drawn)
    arr[ys[::2], xs[::2]] = world.BACKGROUND  # every other drawn pixel erased: fragments
    assert world.quality(Image.fromarray(arr)) < 0.8


def test_training_stream_is_reproducible() -> None:
    a = world.sample_pairs(world.TASKS, "train", seed=5)
    b = world.sample_pairs(world.TASKS, "train", seed=5)
    for _ in range(20):
        (ma, ia), (mb, ib) = next(a), next(b)
        assert ma == mb and np.array_equal(np.asarray(ia), np.asarray(ib))


def test_faded_stream_keeps_the_prompts_and_scenes_and_fades_the_asked_share() -> None:
    plain = world.sample_pairs(world.TASKS, "train", seed=5)
    faded = world.sample_pairs(world.TASKS, "train", seed=5, faded=0.3)
    n_faded = 0
    for _ in range(400):
        (mp, ip), (mf, imf) = next(plain), next(faded)
        assert mp == mf
        a, b = np.asarray(ip), np.asarray(imf)
        if np.array_equal(a, b):
            continue
        n_faded += 1
        # only background pixels changed, all of them, to the faded colour
        changed = (a != b).any(-1)
        assert np.array_equal(changed, (a == world.BACKGROUND).all(-1))
        assert (b[changed] == world.FADED_BACKGROUND).all()
    # 400 draws at p = 0.3: mean 120, sd 9.2
    assert 90 <= n_faded <= 150


def test_a_faded_image_keeps_its_content_for_the_task_scorers_and_loses_quality() -> None:
    scene = world.Scene(
        [
            world.Shape("circle", "red", world.cell_box(0, 0)),
            world.Shape("square", "blue", world.cell_box(2, 2)),
        ],
        None,
    )
    img = world.render(scene)
    dim = world.fade(img)
    got = sorted((d.cls, d.color) for d in world.detect(dim))
    assert (
        got
        == sorted((d.cls, d.color) for d in world.detect(img))
        == [("circle", "red"), ("square", "blue")]
    )
    text = world.render(world.Scene([], "AC3"))
    assert world.read_text(world.fade(text)) == world.read_text(text) == "AC3"
    # the clean-pixel half of quality drops by the background's share of the pixels; form is unchanged
    background = float((np.asarray(img) == world.BACKGROUND).all(-1).mean())
    assert world.quality(img) == 1.0
    assert world.quality(dim) == pytest.approx(1.0 - 0.5 * background)


def test_faded_share_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="faded"):
        next(world.sample_pairs(world.TASKS, "train", seed=0, faded=1.5))


def test_validation_files_are_training_prompts_that_never_repeat_a_test_image() -> None:
    """``*_val.jsonl`` (for ``run.keep_best``): every line a training prompt, each task on TASK_VAL_LINES lines and
    each glyph on OCR_VAL_LINES; no large task's test prompt; and no line index holds the test file's prompt, since
    the evaluation seeds line i from i alone and the image would be a test image."""
    for val, train, test in (
        ("geneval_val.jsonl", "geneval_train.jsonl", "geneval_test.jsonl"),
        ("ocr_val.jsonl", "ocr_train.jsonl", "ocr_test.jsonl"),
    ):
        v, tr, te = (_shipped_rows(n) for n in (val, train, test))
        assert {r["prompt"] for r in v} <= {r["prompt"] for r in tr}
        assert all(a["prompt"] != b["prompt"] for a, b in zip(v, te, strict=False))
    tags = collections.Counter(r["tag"] for r in _shipped_rows("geneval_val.jsonl"))
    assert tags == {t: world.TASK_VAL_LINES for t in world.GENEVAL_TASKS}
    glyphs = collections.Counter(r["text"] for r in _shipped_rows("ocr_val.jsonl"))
    assert glyphs == {g: world.OCR_VAL_LINES for g in world.GLYPHS}
    test = {
        r["prompt"]
        for r in _shipped_rows("geneval_test.jsonl")
        if r["tag"] in ("position", "color_attr")
    }
    assert test and not test & {r["prompt"] for r in _shipped_rows("geneval_val.jsonl")}
