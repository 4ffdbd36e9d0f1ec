"""Mini-world scorers: the exact detector and glyph reader feed the same GenEval rules and OCR reward."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

import scorers
from mini_world import world


def _truth(task: str, n: int, seed: int = 0) -> tuple[list[Image.Image], list[str], list[dict]]:
    rng = random.Random(seed)
    metas = [
        world.split_prompts(task, "test")[i % len(world.split_prompts(task, "test"))]
        for i in range(n)
    ]
    return (
        [world.render(world.scene_for(m, rng)) for m in metas],
        [m["prompt"] for m in metas],
        metas,
    )


@pytest.mark.parametrize("task", world.GENEVAL_TASKS)
def test_ground_truth_images_are_correct_under_the_official_rules(task: str) -> None:
    images, prompts, metas = _truth(task, 12)
    out = scorers.load("mini_geneval")(images, prompts, metas)
    assert out.values == [1.0] * 12, [d["reasons"] for d in out.details]
    assert out.rewards == [1.0] * 12 and all(d["strict"] for d in out.details)


def test_wrong_count_colour_and_position_fail_for_the_right_reason() -> None:
    scorer = scorers.load("mini_geneval")
    meta = {
        "tag": "counting",
        "prompt": "three circles",
        "include": [{"class": "circle", "count": 3}],
        "exclude": [{"class": "circle", "count": 4}],
    }
    two = world.render(
        world.Scene(
            [
                world.Shape("circle", "red", (2, 2, 10, 10)),
                world.Shape("circle", "blue", (18, 18, 26, 26)),
            ]
        )
    )
    out = scorer([two], ["three circles"], [meta])
    assert out.values == [0.0] and out.rewards[0] == pytest.approx(1 - 1 / 3)
    colour = {
        "tag": "colors",
        "prompt": "a red square",
        "include": [{"class": "square", "count": 1, "color": "red"}],
    }
    blue_square = world.render(world.Scene([world.Shape("square", "blue", (10, 10, 18, 18))]))
    out = scorer([blue_square], ["a red square"], [colour])
    assert out.values == [0.0] and "red" in out.details[0]["reasons"][0]
    pos = {
        "tag": "position",
        "prompt": "a circle left of a square",
        "include": [
            {"class": "square", "count": 1},
            {"class": "circle", "count": 1, "position": ["left of", 0]},
        ],
    }
    right = world.render(
        world.Scene(
            [
                world.Shape("square", "red", (2, 12, 10, 20)),
                world.Shape("circle", "red", (20, 12, 28, 20)),
            ]
        )
    )
    left = world.render(
        world.Scene(
            [
                world.Shape("square", "red", (20, 12, 28, 20)),
                world.Shape("circle", "red", (2, 12, 10, 20)),
            ]
        )
    )
    out = scorer([right, left], ["p", "p"], [pos, pos])
    assert out.values == [0.0, 1.0]


def test_ocr_uses_the_same_reward_as_the_real_ocr_scorer() -> None:
    from scorers.ocr import ocr_reward

    images = [world.render(world.Scene(text=t)) for t in ("7A2", "7A", "HEL")]
    prompts = ['the text "7A2"', 'the text "7A2"', 'the text "hel"']
    out = scorers.load("mini_ocr")(images, prompts)
    assert out.values == [1.0, ocr_reward("7A", "7A2"), 1.0]
    assert out.values[1] == pytest.approx(2 / 3)
    assert out.details[1] == {"read": "7A", "target": "7A2"}


def test_quality_and_bad_inputs() -> None:
    images, prompts, metas = _truth("two_object", 2)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    q = scorers.load("mini_quality")([images[0], noise], prompts)
    assert q.values[0] == 1.0 and q.values[1] < 0.5
    big = images[0].resize((64, 64), Image.NEAREST)  # other sizes are brought back to 32 x 32
    assert scorers.load("mini_geneval")([big], prompts[:1], metas[:1]).values == [1.0]
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        scorers.load("mini_quality")(images, prompts[:1])
    with pytest.raises(ValueError, match="metadata"):
        scorers.load("mini_geneval")(images, prompts)
