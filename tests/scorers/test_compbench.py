"""T2I-CompBench formulas on hand-computed fixtures, plus tiny BLIP / CLIP / Mask2Former through the real loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scorers.compbench import (
    CompBench,
    Found,
    blip_questions,
    blip_vqa_score,
    clip_similarity,
    complex_kind,
    complex_score,
    dedupe_labels,
    determine_position,
    find_locality,
    numeracy_score,
    numeracy_targets,
    simple_tokens,
    spatial_objects_complex,
    spatial_objects_simple,
    spatial_score,
    strip_adjectives,
    unidet_frame_scale,
)
from scorers.geneval import WeightsNotFoundError
from scorers.geneval_rules import Detection
from tests.support.tiny_vision import save_tiny_blip, save_tiny_clip, save_tiny_mask2former

# ------------------------------------------------------------------------------------------------ BLIP-VQA


def test_blip_questions_skip_phrases_and_cap() -> None:
    assert blip_questions(["a green bench", "the left", "a blue bowl", "top"]) == [
        "a green bench?",
        "a blue bowl?",
    ]
    assert len(blip_questions([f"n{i}" for i in range(10)])) == 8
    assert blip_questions([f"n{i}" for i in range(10)], np_num=3) == ["n0?", "n1?", "n2?"]


@pytest.mark.parametrize(
    ("answers", "score"),
    [
        ([0.91236, 0.5], 0.4562),
        ([0.33333] * 3, 0.037),
        ([], 1.0),
        ([0.123449], 0.1234),
        ([1.0, 0.25], 0.25),
    ],
)
def test_blip_vqa_product_with_four_decimal_answers(answers: list[float], score: float) -> None:
    # 0.91236 -> "0.9124" x 0.5 = 0.4562; 0.3333^3 = 0.03703 -> 0.0370; no question -> 1
    assert blip_vqa_score(answers) == pytest.approx(score, abs=1e-9)


# -------------------------------------------------------------------------------------------------- spatial

B1 = (0.0, 0.0, 10.0, 10.0)  # centre (5, 5)


@pytest.mark.parametrize(
    ("locality", "box2", "score"),
    [
        ("near", (150.0, 0.0, 160.0, 10.0), 1.0),  # |dx| = 150 but |dy| = 0 < 150
        ("next to", (200.0, 200.0, 210.0, 210.0), 0.75),  # 150 / 200
        ("on the left of", (100.0, 0.0, 110.0, 10.0), 1.0),
        ("on the left of", (5.0, 0.0, 15.0, 10.0), 0.3),  # IoU = 50 / 150 -> 0.1 / (1/3)
        ("on the right of", (100.0, 0.0, 110.0, 10.0), 0.0),
        ("on the right of", (-100.0, 0.0, -90.0, 10.0), 1.0),
        ("on the left of", (20.0, 0.0, 30.0, 100.0), 0.0),  # dx 20 < dy 45
        ("on the bottom of", (0.0, -100.0, 10.0, -90.0), 1.0),
        ("on the top of", (0.0, 100.0, 10.0, 110.0), 1.0),
        ("on the top of", (0.0, -100.0, 10.0, -90.0), 0.0),
        ("on top of", (0.0, 100.0, 10.0, 110.0), 0.0),  # not in the reference's table
        (None, (0.0, 100.0, 10.0, 110.0), 0.0),
    ],
)
def test_determine_position_table(locality: str | None, box2: tuple, score: float) -> None:
    assert determine_position(locality, B1, box2) == pytest.approx(score)


@pytest.mark.parametrize(
    ("prompt", "locality"),
    [
        ("a girl on the top of a frog", "on the top of"),
        ("a cat on top of a dog", "on top of"),
        ("a mouse on side of a key", "on side of"),
        (
            "a dog on the left of a nearby cat",
            "near",
        ),  # vocabulary order, not position in the prompt
        ("a dog and a cat", None),
    ],
)
def test_find_locality(prompt: str, locality: str | None) -> None:
    assert find_locality(prompt) == locality


GIRL_FROG = [
    ("a", "DET"),
    ("girl", "NOUN"),
    ("on", "ADP"),
    ("the", "DET"),
    ("top", "NOUN"),
    ("of", "ADP"),
]
GIRL_FROG += [("a", "DET"), ("frog", "NOUN")]
HAT = "The red hat was on top of the brown coat rack ."
HAT_POS = ["DET", "ADJ", "NOUN", "AUX", "ADP", "NOUN", "ADP", "DET", "ADJ", "NOUN", "NOUN", "PUNCT"]
HAT_TOKENS = list(zip(HAT.split(), HAT_POS, strict=True))


def test_spatial_objects() -> None:
    assert spatial_objects_simple(GIRL_FROG) == ("girl", "frog")
    assert spatial_objects_simple([("red", "ADJ")]) == (None, None)
    # complex: the nouns next to "on top of"; the compound "coat rack" yields "coat" (reference quirk)
    assert spatial_objects_complex(HAT_TOKENS) == ("hat", "coat")
    assert spatial_objects_complex([("a", "DET"), ("cat", "NOUN")]) == (None, None)


def test_spatial_score() -> None:
    person, frog = Found("person", (0, 0, 10, 10), 0.9), Found("frog", (0, 100, 10, 110), 0.8)
    assert spatial_score([person, frog], "girl", "frog", "on the top of") == pytest.approx(0.925)
    assert spatial_score([person, frog], "girl", "frog", "on the bottom of") == 0.0  # 0.425 < 0.5
    assert spatial_score([person], "girl", "frog", "on the top of") == 0.0  # 0.225 < 0.5
    first = Found(
        "person", (0, 200, 10, 210), 0.95
    )  # the first detection of a label is the one used
    assert spatial_score([first, person, frog], "girl", "frog", "on the top of") == 0.0


def test_unidet_frame_scale() -> None:
    assert unidet_frame_scale(512, 512) == pytest.approx(479 / 512)
    assert unidet_frame_scale(1024, 512) == pytest.approx(480 / 1024)


# ------------------------------------------------------------------------------------------------ numeracy

SING, PLUR = ["dog", "cat", "wine glass", "sheep"], ["dogs", "cats", "wine glasses", "sheep"]


@pytest.mark.parametrize(
    ("prompt", "targets"),
    [
        ("three dogs and a cat", [("dog", 3), ("cat", 1)]),
        ("two wine glasses", [("wine glass", 2)]),
        ("a wine glass", [("wine glass", 1)]),
        ("Two dogs", []),  # case-sensitive number words
        ("two sheep", [("sheep", 2)]),
        ("one cat , eight dogs", [("cat", 1), ("dog", 8)]),
    ],
)
def test_numeracy_targets(prompt: str, targets: list) -> None:
    assert numeracy_targets(simple_tokens(prompt), SING, PLUR) == targets


def test_numeracy_targets_use_shipped_vocabulary() -> None:
    assert numeracy_targets(simple_tokens("two boys")) == [("boy", 2)]


def test_dedupe_labels() -> None:
    found = [
        Found("dog", (0, 0, 100, 100), 0.9),
        Found("dog", (1, 1, 100, 100), 0.8),  # IoU ~0.98 with the first: dropped
        Found("cat", (0, 0, 100, 100), 0.7),  # other label: kept
        Found("dog", (10, 10, 20, 20), 0.6),  # inside the first (>90% of its own area): dropped
        Found("dog", (200, 0, 300, 100), 0.5),
    ]
    assert dedupe_labels(found) == ["dog", "cat", "dog"]


def test_numeracy_score() -> None:
    labels = ["dog", "dog", "dog", "cat"]
    assert numeracy_score(labels, [("dog", 3), ("cat", 2)]) == pytest.approx(0.75)
    assert numeracy_score(["person", "person"], [("boy", 2)]) == 1.0
    assert numeracy_score(["boat"], [("ship", 2)]) == 0.5
    assert numeracy_score(["wine glass"], [("glass", 1)]) == 1.0  # substring rename quirk
    assert numeracy_score([], [("dog", 1)]) == 0.0 and numeracy_score(["dog"], []) == 0.0


# --------------------------------------------------------------------------------------- CLIP and complex


def test_clip_similarity_and_adjectives() -> None:
    assert clip_similarity(np.array([1.0, 0.0]), np.array([2.0, 2.0])) == pytest.approx(2**-0.5)
    assert strip_adjectives(HAT_TOKENS) == "The hat was on top of the coat rack ."


def test_complex_routing() -> None:
    assert complex_kind("The red hat was on top of the brown coat rack.") == "spatial"
    assert complex_kind("the red hat was on top of the brown coat rack") == "spatial"
    assert complex_kind("The black phone was resting on the brown charger.") == "action"
    assert complex_kind("A prompt in neither list.") == "all"
    assert complex_score("spatial", 0.6, 0.4, None) == pytest.approx(0.5)
    assert complex_score("action", 0.6, None, 0.2) == pytest.approx(0.4)
    assert complex_score("all", 0.3, 0.6, 0.9) == pytest.approx(0.6)


# ------------------------------------------------------------------------------------------- model-backed


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compbench-models")
    return {
        "blip": save_tiny_blip(root / "blip"),
        "clip": save_tiny_clip(root / "clip"),
        "m2f": save_tiny_mask2former(root / "m2f"),
    }


class FixedDetector:
    name = "fixed"

    def __init__(self, dets: dict) -> None:
        self.dets = dets

    def __call__(self, images):  # noqa: ANN001, ANN204
        return [self.dets for _ in images]


def img(w: int = 48, h: int = 40, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_blip_attribute_scores_through_the_real_loader(tiny: dict[str, Path]) -> None:
    cb = CompBench(
        blip=str(tiny["blip"]), clip=None, detector=None, categories=["color"], parser=None
    )
    metas = [
        {"category": "color", "questions": ["a red car?", "a blue bowl?"]},
        {"category": "color", "noun_phrases": ["the left", "a green bench"]},
    ]
    s = cb(
        [img(seed=1), img(30, 60, seed=2)], ["a red car and a blue bowl", "a green bench"], metas
    )
    assert len(s.values) == 2 and s.values == s.rewards
    for v, d in zip(s.values, s.details, strict=True):  # type: ignore[arg-type]
        assert 0.0 <= v <= 1.0 and all(0.0 < a < 1.0 for a in d["answers"])
        assert v == blip_vqa_score(d["answers"])
    assert s.details[1]["questions"] == ["a green bench?"]  # type: ignore[index]


def test_clip_non_spatial_matches_an_independent_cosine(tiny: dict[str, Path]) -> None:
    from transformers import CLIPModel, CLIPTokenizer

    from scorers.geneval import clip_pixels

    cb = CompBench(
        blip=None, clip=str(tiny["clip"]), detector=None, categories=["non_spatial"], parser=None
    )
    image, text = img(seed=3), "a person is looking at a rainbow"
    s = cb([image], [text], [{"category": "non_spatial"}])
    model, tok = (
        CLIPModel.from_pretrained(tiny["clip"]).eval(),
        CLIPTokenizer.from_pretrained(tiny["clip"]),
    )
    with torch.no_grad():
        v = model.get_image_features(pixel_values=clip_pixels([image], 32))
        t = model.get_text_features(
            **tok([text], padding="max_length", max_length=77, return_tensors="pt")
        )
    v = (v if isinstance(v, torch.Tensor) else v.pooler_output)[0].numpy()
    t = (t if isinstance(t, torch.Tensor) else t.pooler_output)[0].numpy()
    expected = float(v @ t / np.linalg.norm(v) / np.linalg.norm(t))
    assert s.values[0] == pytest.approx(expected, abs=1e-5) and -1.0 <= s.values[0] <= 1.0


def test_numeracy_runs_on_the_tiny_detector(tiny: dict[str, Path]) -> None:
    cb = CompBench(
        blip=None, clip=None, detector=str(tiny["m2f"]), categories=["numeracy"], parser=None
    )
    cb.detector.scale = (96, 64)  # type: ignore[union-attr]
    cb.detection_threshold = 0.0  # let the random detector's boxes through
    s = cb([img(seed=4)], ["three dogs and a cat"], [{"category": "numeracy"}])
    d = s.details[0]  # type: ignore[index]
    assert d["targets"] == [["dog", 3], ["cat", 1]] or d["targets"] == [("dog", 3), ("cat", 1)]
    assert d["tokenizer"] == "regex" and s.values[0] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert all(lab in cb.detector.class_names for lab in d["labels"])  # type: ignore[union-attr]


def test_spatial_and_complex_wiring_with_an_injected_detector(tiny: dict[str, Path]) -> None:
    # image 512 x 512 -> UniDet frame x 479/512; the frog's centre is 100 * 0.9355 = 93.6 px below the girl's
    dets = {
        "person": [Detection((0, 0, 10, 10), 0.9)],
        "frog": [
            Detection((0, 100, 10, 110), 0.8),
            Detection((0, 0, 1, 1), 0.4),
        ],  # 0.4 < 0.5: ignored
    }
    cb = CompBench(
        blip=str(tiny["blip"]), clip=str(tiny["clip"]), detector=FixedDetector(dets),
        categories=["spatial", "complex"], parser=None,
    )  # fmt: skip
    image = img(512, 512, seed=5)
    s = cb(
        [image],
        ["a girl on the top of a frog"],
        [{"category": "spatial", "objects": ["girl", "frog"]}],
    )
    assert s.values == [pytest.approx(0.925)]
    assert s.details[0]["locality"] == "on the top of" and len(s.details[0]["found"]) == 2  # type: ignore[index]
    prompt = "The red hat was on top of the brown coat rack."  # in complex_val_spatial: (attr + spatial) / 2
    meta = {"category": "complex", "questions": ["the red hat?"], "objects": ["hat", "coat"]}
    c = cb([image], [prompt], [meta])
    d = c.details[0]  # type: ignore[index]
    assert d["kind"] == "spatial" and d["spatial"] == 0.0  # no hat or coat detected
    assert c.values[0] == pytest.approx(d["attribute"] / 2)
    meta_all = {**meta, "text_without_adjectives": "The hat was on the coat", "complex_kind": "all"}
    a = cb([image], [prompt], [meta_all])
    da = a.details[0]  # type: ignore[index]
    assert a.values[0] == pytest.approx((da["attribute"] + 0.0 + da["action"]) / 3)


def test_bad_input_and_missing_weights(tiny: dict[str, Path]) -> None:
    cb = CompBench(
        blip=None, clip=None, detector=FixedDetector({}), categories=["numeracy"], parser=None
    )
    with pytest.raises(ValueError, match="needs per-image metadata"):
        cb([img()], ["two dogs"])
    with pytest.raises(ValueError, match="'category'"):
        cb([img()], ["two dogs"], [{}])
    with pytest.raises(ValueError, match="3d_spatial"):
        cb([img()], ["a dog in front of a desk"], [{"category": "3d_spatial"}])
    with pytest.raises(ValueError, match="was not loaded"):
        cb([img()], ["a red car"], [{"category": "color", "questions": ["a red car?"]}])
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        cb([img(), img()], ["two dogs"], [{"category": "numeracy"}] * 2)
    grey = Image.new("L", (20, 20))
    assert cb([grey], ["two dogs"], [{"category": "numeracy"}]).values == [0.0]
    spatial = CompBench(
        blip=None, clip=None, detector=FixedDetector({}), categories=["spatial"], parser=None
    )
    with pytest.raises(ValueError, match="spaCy en_core_web_sm"):
        spatial([img()], ["a dog near a cat"], [{"category": "spatial"}])
    with pytest.raises(ValueError, match="unknown compbench category"):
        CompBench(blip=None, clip=None, detector=None, categories=["colour"], parser=None)
    with pytest.raises(WeightsNotFoundError) as e:
        CompBench(
            clip=None, detector=None, categories=["color"], parser=None
        )  # default pinned BLIP, offline
    assert "harness fetch compbench" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_real_weights_attribute_and_non_spatial() -> None:
    """With the pinned default BLIP and CLIP B/32 in the HF cache (`harness fetch compbench`)."""
    image = Image.new("RGB", (512, 512), (220, 20, 20))
    cb = CompBench(detector=None, categories=["color", "non_spatial"], parser=None)
    s = cb(
        [image, image],
        ["a red square", "a red square"],
        [{"category": "color", "questions": ["a red square?"]}, {"category": "non_spatial"}],
    )
    assert 0.0 <= s.values[0] <= 1.0 and -1.0 <= s.values[1] <= 1.0
