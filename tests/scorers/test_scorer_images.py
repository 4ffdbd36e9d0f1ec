"""scorers.images: every odd PIL input becomes 8-bit RGB, or fails with the bad index named."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from scorers.images import MAX_PIXELS, check_lengths, to_rgb, to_rgb_batch


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_rgb_passes_through_unchanged():
    im = Image.fromarray(np.arange(24, dtype=np.uint8).reshape(2, 4, 3))
    out = to_rgb(im)
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), np.asarray(im))


def test_grayscale_is_replicated_to_three_channels():
    g = np.array([[0, 7, 255]], dtype=np.uint8)
    out = np.asarray(to_rgb(Image.fromarray(g, mode="L")))
    assert out.shape == (1, 3, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], g)


def test_rgba_drops_alpha_like_convert_rgb():
    a = np.zeros((1, 2, 4), dtype=np.uint8)
    a[0, 0] = [10, 20, 30, 0]  # fully transparent: RGB kept, alpha discarded (reference behaviour)
    a[0, 1] = [40, 50, 60, 255]
    out = np.asarray(to_rgb(Image.fromarray(a, mode="RGBA")))
    assert out.tolist() == [[[10, 20, 30], [40, 50, 60]]]


@pytest.mark.parametrize("mode", ["1", "P", "LA", "CMYK", "La", "RGBa", "YCbCr"])
def test_other_modes_become_rgb(mode):
    out = to_rgb(Image.new(mode, (3, 2)))
    assert out.mode == "RGB" and out.size == (3, 2)


def test_sixteen_bit_grayscale_is_rescaled_not_clipped():
    # convert("RGB") alone would map 1000 and 65535 both to 255
    a = np.array([[0, 257, 1000, 32896, 65535]], dtype=np.uint16)
    im = Image.open(io.BytesIO(_png_bytes(Image.fromarray(a))))  # a real 16-bit PNG round trip
    assert im.mode in ("I;16", "I")
    out = np.asarray(to_rgb(im))[0, :, 0]
    assert out.tolist() == [0, 1, 4, 128, 255]  # round(v * 255 / 65535)


@given(st.integers(0, 65535))
def test_sixteen_bit_mapping_is_round_of_v_over_257(v):
    im = Image.fromarray(np.array([[v]], dtype=np.uint16))
    assert np.asarray(to_rgb(im))[0, 0, 0] == round(v * 255 / 65535)


def test_int32_out_of_16_bit_range_is_rejected():
    im = Image.fromarray(np.array([[0, 70000]], dtype=np.int32), mode="I")
    with pytest.raises(ValueError, match="image 0: .*outside 16-bit"):
        to_rgb(im)


def test_float_image_in_unit_range_is_scaled_and_outside_rejected():
    ok = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert np.asarray(to_rgb(ok))[0, :, 1].tolist() == [0, 128, 255]
    bad = Image.fromarray(np.array([[0.0, 3.0]], dtype=np.float32), mode="F")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_rgb(bad, index=4)


def test_truncated_file_names_its_index():
    data = _png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))
    broken = Image.open(io.BytesIO(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="image 1: cannot be decoded"):
        to_rgb_batch([Image.new("RGB", (4, 4)), broken])


def test_zero_size_is_rejected():
    with pytest.raises(ValueError, match=r"image 2: has zero size \(0 x 5\)"):
        to_rgb_batch([Image.new("RGB", (1, 1))] * 2 + [Image.new("RGB", (0, 5))])


def test_huge_image_is_rejected_with_a_fix():
    # "1" mode keeps the allocation small (1 bit per pixel) while exceeding the pixel budget
    side = int(MAX_PIXELS**0.5) + 1
    with pytest.raises(ValueError, match="downscale"):
        to_rgb(Image.new("1", (side, side)))


def test_tiny_image_is_fine():
    assert to_rgb(Image.new("L", (1, 1), 9)).getpixel((0, 0)) == (9, 9, 9)


def test_length_mismatch_and_types():
    ims = [Image.new("RGB", (2, 2))] * 3
    with pytest.raises(ValueError, match="3 images but 2 prompts"):
        to_rgb_batch(ims, ["a", "b"])
    with pytest.raises(ValueError, match="3 images but 1 metadata"):
        check_lengths(ims, ["a"] * 3, [{}])
    with pytest.raises(TypeError, match="image 1: expected a PIL"):
        to_rgb_batch([ims[0], [[0, 0], [0, 0]]])
    assert to_rgb_batch([np.zeros((2, 2, 3))])[0].mode == "RGB"  # arrays are accepted
    with pytest.raises(ValueError, match="image 0: float pixels"):
        to_rgb_batch([np.full((2, 2, 3), 2.0)])
    with pytest.raises(TypeError, match="prompt 0"):
        to_rgb_batch(ims[:1], [None])
    with pytest.raises(TypeError, match="list of PIL images"):
        to_rgb_batch(ims[0])
    assert to_rgb_batch([], []) == []
