"""GenEval scorer: tiny Mask2Former and tiny CLIP saved to disk and loaded through the real loaders, the mmdet
post-processing and the colour classifier against hand/numpy computations, wiring through an injected detector,
and bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scorers.geneval import (
    COLOR_TEMPLATES,
    GENEVAL_OBJECTS,
    ClipColorClassifier,
    GenEval,
    WeightsNotFoundError,
    clip_pixels,
    color_crop,
    instance_postprocess,
    mask_boxes,
    mmdet_resize_shape,
)
from scorers.geneval_rules import COLORS, Detection
from tests.support.tiny_vision import save_tiny_clip, save_tiny_mask2former

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("geneval-models")
    return save_tiny_mask2former(root / "m2f"), save_tiny_clip(root / "clip")


@pytest.fixture(scope="module")
def tiny_geneval(tiny_dirs: tuple[Path, Path]) -> GenEval:
    m2f, clip = tiny_dirs
    scorer = GenEval(detector=str(m2f), clip=str(clip), device="cpu", batch_size=2)
    scorer.detector.scale = (96, 64)  # type: ignore[attr-defined]  (keep the tiny run fast)
    return scorer


def rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


SINGLE = {
    "tag": "single_object",
    "include": [{"class": "dog", "count": 1}],
    "prompt": "a photo of a dog",
}
COLORS_META = {
    "tag": "colors",
    "include": [{"class": "car", "count": 1, "color": "red"}],
    "prompt": "a red car",
}
POSITION = {
    "tag": "position",
    "include": [
        {"class": "cat", "count": 1},
        {"class": "dog", "count": 1, "position": ["left of", 0]},
    ],
    "prompt": "a photo of a dog left of a cat",
}


# ------------------------------------------------------------------------------------------- model-backed


def test_tiny_models_score_a_batch_through_the_real_loaders(tiny_geneval: GenEval) -> None:
    images = [rgb(64, 48, 1), rgb(40, 72, 2), rgb(50, 50, 3)]
    metas = [SINGLE, COLORS_META, POSITION]
    # a permissive threshold so the random tiny detector's low scores reach the rules and the colour classifier
    tiny_geneval.options = type(tiny_geneval.options)(threshold=0.0)
    try:
        s = tiny_geneval(images, [m["prompt"] for m in metas], metas)
    finally:
        tiny_geneval.options = type(tiny_geneval.options)()
    assert len(s.values) == len(s.rewards) == len(s.details) == 3  # type: ignore[arg-type]
    assert all(v in (0.0, 1.0) for v in s.values)
    assert all(np.isfinite(s.rewards)) and all(r <= 1.0 for r in s.rewards)
    for d, r, m in zip(s.details, s.rewards, metas, strict=True):  # type: ignore[arg-type]
        assert d["tag"] == m["tag"] and d["flowgrpo_score"] == r
        assert d["detector"].startswith("mask2former-hf:") and d["reference_detector"] is False
        # at threshold 0 the 8-query tiny detector keeps <= 16 boxes per class, all inside the image
        for boxes in d["boxes"].values():
            assert len(boxes) <= 16
    colour_clause = s.details[1]["clauses"][0]  # type: ignore[index]
    if colour_clause["found"] >= 1:
        assert colour_clause["colors"] is not None and colour_clause["colors"][0] in COLORS


def test_detector_masks_and_boxes_are_at_original_resolution(tiny_geneval: GenEval) -> None:
    img = rgb(70, 40, 5)
    (dets,) = tiny_geneval.detector([img])
    assert set(dets) <= set(GENEVAL_OBJECTS)  # 80 labels -> GenEval's names by index
    total = sum(len(v) for v in dets.values())
    assert total == min(100, 8 * 80)
    for ds in dets.values():
        for d in ds:
            assert d.mask.shape == (40, 70) and d.mask.dtype == bool
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 <= x2 <= 70 and 0 <= y1 <= y2 <= 40
            assert 0.0 <= d.score <= 1.0


def test_flowgrpo_transport_runs_and_is_recorded(tiny_dirs: tuple[Path, Path]) -> None:
    m2f, _ = tiny_dirs
    scorer = GenEval(detector=str(m2f), clip=None, device="cpu", flowgrpo_transport=True)
    scorer.detector.scale = (64, 64)  # type: ignore[attr-defined]
    s = scorer([rgb(32, 32)], ["a photo of a dog"], [SINGLE])
    assert s.details[0]["transport"] == "jpeg75+rb-swap"  # type: ignore[index]
    assert scorer.detector.swap_rb  # type: ignore[attr-defined]


def test_color_classifier_matches_an_independent_computation(tiny_dirs: tuple[Path, Path]) -> None:
    from transformers import CLIPModel, CLIPTokenizer

    _, clip_dir = tiny_dirs
    clf = ClipColorClassifier(str(clip_dir))
    w = clf.class_weights("car").numpy()
    model, tok = CLIPModel.from_pretrained(clip_dir).eval(), CLIPTokenizer.from_pretrained(clip_dir)
    expected = []
    with torch.no_grad():
        for c in COLORS:
            texts = [t.format(c=c, obj="car") for t in COLOR_TEMPLATES]
            assert texts[1] == f"a photo of a {c}-colored car"
            out = model.get_text_features(**tok(texts, padding=True, return_tensors="pt"))
            e = (
                (out if isinstance(out, torch.Tensor) else out.pooler_output)
                .numpy()
                .astype(np.float64)
            )
            e /= np.linalg.norm(e, axis=1, keepdims=True)
            m = e.mean(0)
            expected.append(m / np.linalg.norm(m))
    np.testing.assert_allclose(w, np.stack(expected), atol=1e-5)
    crop = rgb(20, 30, 7)
    with torch.no_grad():
        out = model.get_image_features(pixel_values=clip_pixels([crop], 32))
        v = (
            (out if isinstance(out, torch.Tensor) else out.pooler_output)
            .numpy()[0]
            .astype(np.float64)
        )
    logits = 100 * (v / np.linalg.norm(v)) @ np.stack(expected).T
    np.testing.assert_allclose(clf.logits([crop], "car").numpy()[0], logits, rtol=1e-4, atol=1e-3)
    det = Detection((0, 0, 20, 30), 0.9)
    assert clf(crop, "car", [det]) == [COLORS[int(np.argmax(logits))]]


# --------------------------------------------------------------------------------------- pure model glue


def test_instance_postprocess_on_a_hand_fixture() -> None:
    # 2 queries, 2 classes + no-object. q0 probs (0.6, 0.3 | 0.1), q1 probs (0.1, 0.2 | 0.7).
    cls = torch.tensor([[6.0, 3.0, 1.0], [1.0, 2.0, 7.0]]).log()
    masks = torch.full((2, 4, 5), -5.0)
    masks[0, 1:3, 0:3] = float(np.log(3.0))  # sigmoid = 0.75 on a 2x3 block
    masks[1, 3, 4] = 0.0  # sigmoid 0.5 but not > 0: empty mask
    labels, scores, binary, boxes = instance_postprocess(cls, masks, max_per_image=3)
    # top-3 over (q, c): q0c0 0.6, q0c1 0.3, q1c1 0.2
    assert labels.tolist() == [0, 1, 1]
    expected = [0.6 * 0.75, 0.3 * 0.75, 0.2 * 0.0]
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert boxes[0].tolist() == [0.0, 1.0, 3.0, 3.0] and boxes[2].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert binary[0].sum().item() == 6


def test_mask_boxes_add_one_on_the_max_side() -> None:
    m = torch.zeros(2, 6, 7, dtype=torch.bool)
    m[0, 2, 3] = True
    m[1, 1:5, 2:7] = True
    assert mask_boxes(m).tolist() == [[3.0, 2.0, 4.0, 3.0], [2.0, 1.0, 7.0, 5.0]]


@pytest.mark.parametrize(
    ("w", "h", "out"), [(512, 512, (800, 800)), (1024, 512, (1333, 667)), (300, 600, (667, 1333))]
)
def test_mmdet_resize_shape(w: int, h: int, out: tuple[int, int]) -> None:
    assert mmdet_resize_shape(w, h) == out


def test_color_crop_composites_on_grey_and_rounds_the_box() -> None:
    a = np.zeros((4, 6, 3), np.uint8)
    a[..., 0] = 200  # red everywhere
    mask = np.zeros((4, 6), bool)
    mask[1:3, 1:4] = True
    crop = color_crop(Image.fromarray(a), Detection((0.6, 0.4, 4.4, 3.6), 0.9, mask))
    # PIL rounds (0.6, 0.4, 4.4, 3.6) -> (1, 0, 4, 4): a 3 x 4 crop
    c = np.asarray(crop)
    assert c.shape == (4, 3, 3)
    assert (c[0] == (153, 153, 153)).all() and (c[3] == (153, 153, 153)).all()
    assert (c[1:3] == (200, 0, 0)).all()
    no_mask = np.asarray(color_crop(Image.fromarray(a), Detection((0, 0, 2, 2), 0.9)))
    assert (no_mask == (200, 0, 0)).all()


def test_clip_pixels_short_side_resize_and_centre_crop() -> None:
    a = np.zeros((20, 30, 3), np.uint8)
    a[:, 10:20] = 255  # a white vertical band in the middle third
    x = clip_pixels([Image.fromarray(a)], 10)
    assert x.shape == (1, 3, 10, 10)
    # short side 20 -> 10, long side 30 -> 15; centre crop keeps columns 2..12 (left = round(2.5) = 2)
    mean, std = (
        np.array([0.48145466, 0.4578275, 0.40821073]),
        np.array([0.26862954, 0.26130258, 0.27577711]),
    )
    white = (1 - mean) / std
    np.testing.assert_allclose(x[0, :, 5, 5].numpy(), white, atol=1e-5)
    assert x[0, 0, 5, 0] < 0 and x[0, 0, 5, 9] < 0  # dark at both edges of the crop


def test_object_names_match_the_shipped_file() -> None:
    shipped = (ROOT / "harness/prompts/geneval_official/object_names.txt").read_text().splitlines()
    assert list(GENEVAL_OBJECTS) == [s.strip() for s in shipped if s.strip()]


# --------------------------------------------------------------------------- wiring with a synthetic detector


class FixedDetector:
    name = "fixed"

    def __init__(self, dets: list[dict]) -> None:
        self.dets = dets

    def __call__(self, images):  # noqa: ANN001, ANN204
        return self.dets[: len(images)]


def test_injected_detector_gives_hand_values() -> None:
    cat, dog_right = Detection((100, 0, 110, 10), 0.95), Detection((200, 0, 210, 10), 0.95)
    faint = Detection((0, 0, 10, 10), 0.25)  # below the 0.3 threshold
    det = FixedDetector([{"cat": [cat], "dog": [dog_right]}, {"dog": [faint]}])
    s = GenEval(detector=det, clip=None, device="cpu")(
        [rgb(8, 8), rgb(8, 8)], ["p", "q"], [POSITION, SINGLE]
    )
    assert s.values == [0.0, 0.0]
    assert s.rewards == [
        0.75,
        0.0,
    ]  # position: terms 1, 1, 0, 1 (fail appends 0 then 1); single: m=0 -> 0
    assert s.details[0]["detector"] == "fixed" and s.details[0]["flowgrpo_terms"] == [
        1.0,
        1.0,
        0.0,
        1.0,
    ]


def test_summary_is_exposed_for_the_harness() -> None:
    rows = [
        {"tag": "counting", "prompt": "a", "correct": True},
        {"tag": "colors", "prompt": "b", "correct": False},
    ]
    assert GenEval.summarize(rows).overall == 0.5


# ------------------------------------------------------------------------------------------------ bad input


@pytest.fixture()
def fake_scorer() -> GenEval:
    return GenEval(detector=FixedDetector([{"dog": [Detection((0, 0, 4, 4), 0.9)]}] * 8), clip=None)


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (16, 16), 128),
        Image.new("RGBA", (16, 16), (10, 20, 30, 0)),
        Image.fromarray(np.full((16, 16), 40000, np.uint16)),
        Image.new("RGB", (1, 1)),
        Image.new("P", (16, 16)),
    ],
    ids=["grayscale", "rgba", "16bit", "tiny", "palette"],
)
def test_odd_but_valid_images_score(fake_scorer: GenEval, image: Image.Image) -> None:
    s = fake_scorer([image], ["a photo of a dog"], [SINGLE])
    assert s.values == [1.0] and s.rewards == [1.0]


def test_odd_images_also_pass_through_the_tiny_detector(tiny_geneval: GenEval) -> None:
    images = [Image.new("L", (20, 20), 90), Image.fromarray(np.full((12, 9), 65535, np.uint16))]
    images.append(Image.new("RGBA", (9, 13), (255, 0, 0, 128)))
    s = tiny_geneval(images, ["x"] * 3, [SINGLE] * 3)
    assert len(s.values) == 3 and all(np.isfinite(s.rewards))


def test_bad_input_gives_clear_errors(fake_scorer: GenEval) -> None:
    png = io.BytesIO()
    rgb(32, 32).save(png, format="PNG")
    corrupt = Image.open(io.BytesIO(png.getvalue()[:60]))
    with pytest.raises(ValueError, match="image 0: cannot be decoded"):
        fake_scorer([corrupt], ["p"], [SINGLE])
    huge = Image.new("1", (10_000, 9_000))
    with pytest.raises(ValueError, match="downscale"):
        fake_scorer([huge], ["p"], [SINGLE])
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        fake_scorer([rgb(4, 4), rgb(4, 4)], ["p"], [SINGLE, SINGLE])
    with pytest.raises(ValueError, match="metadata entries"):
        fake_scorer([rgb(4, 4)], ["p"], [SINGLE, SINGLE])
    with pytest.raises(ValueError, match="geneval needs per-image metadata"):
        fake_scorer([rgb(4, 4)], ["p"])
    with pytest.raises(ValueError, match="meta 0: .*tag"):
        fake_scorer([rgb(4, 4)], ["p"], [{"include": []}])
    with pytest.raises(TypeError):
        fake_scorer(rgb(4, 4), ["p"], [SINGLE])  # type: ignore[arg-type]


def test_missing_weights_say_how_to_get_them(tiny_dirs: tuple[Path, Path]) -> None:
    with pytest.raises(WeightsNotFoundError) as e:
        GenEval(device="cpu")  # default pinned hub ids; offline, nothing cached
    msg = str(e.value)
    assert "\n" not in msg and "harness fetch geneval" in msg and "f77f179fc62b" in msg
    with pytest.raises(WeightsNotFoundError, match="colour classifier"):
        GenEval(
            detector=FixedDetector([]), clip="openai/clip-vit-large-patch14@deadbeef", device="cpu"
        )
    with pytest.raises(
        WeightsNotFoundError, match="not a Mask2FormerForUniversalSegmentation checkpoint"
    ):
        GenEval(
            detector=str(tiny_dirs[1]), clip=None, device="cpu"
        )  # a CLIP folder is not a Mask2Former


@pytest.mark.slow
def test_real_weights_score_a_drawn_scene() -> None:
    """With the pinned default weights in the HF cache (`harness fetch geneval`): a red disc on white."""
    from PIL import ImageDraw

    image = Image.new("RGB", (512, 512), "white")
    ImageDraw.Draw(image).ellipse((150, 150, 350, 350), fill=(220, 20, 20))
    meta = {"tag": "colors", "include": [{"class": "sports ball", "count": 1, "color": "red"}]}
    s = GenEval()([image, image], ["a photo of a red sports ball"] * 2, [meta, SINGLE])
    assert len(s.values) == 2 and all(np.isfinite(s.rewards))
    assert set(s.values) <= {0.0, 1.0}
    assert "f77f179fc62b" in s.details[0]["detector"]  # type: ignore[index]
    assert s.details[1]["boxes"].get("dog") is None  # no dog in a red disc  # type: ignore[index]
