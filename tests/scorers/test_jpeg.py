"""JPEG compressibility against Flow-GRPO's definition, computed independently from a uint8 NHWC batch."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from scorers.jpeg import JpegCompressibility

BadImageError = ValueError  # bad images raise ValueError naming their index


def _flow_grpo_jpeg_reward(batch01: np.ndarray) -> np.ndarray:
    """Flow-GRPO's jpeg_compressibility on an NHWC float batch in [0, 1]: -(q95 bytes / 1000) / 500."""
    images = np.clip(np.round(batch01 * 255), 0, 255).astype(np.uint8)
    sizes = []
    for a in images:
        buffer = io.BytesIO()
        Image.fromarray(a).save(buffer, format="JPEG", quality=95)
        sizes.append(buffer.tell() / 1000)
    return -np.array(sizes) / 500


def test_matches_flow_grpo_on_a_float_batch() -> None:
    rng = np.random.default_rng(0)
    batch = rng.random((3, 64, 48, 3)).astype(np.float32)
    batch[1] = 0.5  # flat image: tiny file
    scores = JpegCompressibility()(list(batch), ["", "", ""])
    expected = _flow_grpo_jpeg_reward(batch)
    assert scores.rewards == pytest.approx(expected.tolist(), rel=0, abs=1e-12)
    assert scores.values == pytest.approx((expected * 500).tolist(), abs=1e-9)
    assert scores.details is not None and scores.details[0]["jpeg_kb"] == pytest.approx(
        -expected[0] * 500
    )
    # noise does not compress; a flat grey does: the flat image must score higher
    assert scores.values[1] > scores.values[0] and scores.values[1] > scores.values[2]


def test_odd_inputs_are_normalised_before_encoding() -> None:
    rgb = Image.new("RGB", (32, 32), (10, 200, 30))
    rgba = Image.new("RGBA", (32, 32), (10, 200, 30, 255))  # opaque: same pixels as rgb
    gray = Image.new("L", (32, 32), 77)
    gray_as_rgb = Image.new("RGB", (32, 32), (77, 77, 77))
    sixteen = Image.fromarray(np.full((32, 32), 77 * 257, dtype=np.uint16))
    s = JpegCompressibility()([rgb, rgba, gray, gray_as_rgb, sixteen], [""] * 5)
    assert s.values[0] == s.values[1]
    assert s.values[2] == s.values[3] == s.values[4]


def test_bad_inputs() -> None:
    scorer = JpegCompressibility()
    with pytest.raises(ValueError, match="1 images but 2 prompts"):
        scorer([Image.new("RGB", (8, 8))], ["a", "b"])
    with pytest.raises(ValueError, match="1 metadata entries"):
        scorer([Image.new("RGB", (8, 8))] * 2, ["a", "b"], [{}])
    with pytest.raises(BadImageError, match="image 0: has zero size"):
        scorer([Image.new("RGB", (5, 0))], [""])
    with pytest.raises(BadImageError, match="float pixels must be finite and lie in"):
        scorer([np.full((4, 4, 3), 2.0)], [""])
