"""The private input normaliser: every odd image kind becomes exactly the 8-bit RGB pixels we expect."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from scorers import _rgb
from scorers._rgb import BadImageError, to_rgb, to_rgb_batch


def px(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def test_grayscale_and_palette_expand_to_equal_channels() -> None:
    assert (px(to_rgb(Image.new("L", (2, 2), 90))) == 90).all()
    assert (px(to_rgb(Image.new("1", (2, 2), 1))) == 255).all()
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([12, 34, 56] + [0] * 765)
    assert px(to_rgb(pal))[0, 0].tolist() == [12, 34, 56]


def test_alpha_is_composited_over_white() -> None:
    rgba = Image.new("RGBA", (1, 1), (255, 0, 0, 128))
    # out = a*src + (1-a)*white with a = 128/255
    a = 128 / 255
    expected = [255, round((1 - a) * 255), round((1 - a) * 255)]
    assert np.abs(px(to_rgb(rgba))[0, 0].astype(int) - expected).max() <= 1
    assert px(to_rgb(Image.new("LA", (1, 1), (0, 0))))[0, 0].tolist() == [255, 255, 255]
    pal = Image.new("P", (1, 1), 0)
    pal.putpalette([0, 0, 0] + [0] * 765)
    pal.info["transparency"] = 0
    assert px(to_rgb(pal))[0, 0].tolist() == [255, 255, 255]


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257 * 100, 65535, 300]], dtype=np.uint16)
    out = px(to_rgb(Image.fromarray(values)))[0, :, 0]
    assert out.tolist() == [
        0,
        100,
        255,
        1,
    ]  # 300/257 rounds to 1; Image.convert would clip it to 255
    wide = Image.fromarray(values.astype(np.int32))  # mode "I", as older Pillow opens 16-bit PNGs
    assert wide.mode == "I"
    assert px(to_rgb(wide))[0, :, 0].tolist() == [0, 100, 255, 1]
    assert px(to_rgb(np.stack([values] * 3, -1)))[0, 1].tolist() == [100, 100, 100]
    with pytest.raises(BadImageError, match="outside 0..65535"):
        to_rgb(Image.fromarray(np.array([[-1, 70000]], dtype=np.int32)))


def test_float_and_bool_arrays() -> None:
    assert px(to_rgb(np.array([[0.0, 0.5, 1.0]])))[0, :, 0].tolist() == [0, 128, 255]
    assert px(to_rgb(Image.fromarray(np.array([[0.25]], dtype=np.float32))))[0, 0, 0] == 64
    assert px(to_rgb(np.array([[True, False]])))[0, :, 0].tolist() == [255, 0]
    for bad in (np.array([[1.5]]), np.array([[np.nan]]), np.array([[-0.1]])):
        with pytest.raises(BadImageError, match="float pixels must lie in"):
            to_rgb(bad)


def test_refusals_name_the_image() -> None:
    with pytest.raises(BadImageError, match="image 1: empty image"):
        to_rgb_batch([Image.new("RGB", (1, 1)), Image.new("RGB", (0, 0))])
    with pytest.raises(BadImageError, match="image 0: array of shape"):
        to_rgb(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(BadImageError, match="pixel type int64"):
        to_rgb(np.zeros((4, 4), dtype=np.int64))
    with pytest.raises(BadImageError, match="expected a PIL image or numpy array, got str"):
        to_rgb("cat.png")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    with pytest.raises(BadImageError, match="image 0: cannot be decoded"):
        to_rgb(Image.open(io.BytesIO(buffer.getvalue()[:60])))


def test_huge_images_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_rgb, "MAX_PIXELS", 100 * 100)
    to_rgb(Image.new("RGB", (100, 100)))  # at the limit: fine
    with pytest.raises(BadImageError, match=r"101x100 is 0 MP, over the 0 MP limit; downscale"):
        to_rgb(Image.new("RGB", (101, 100)))


def test_real_limit_refuses_a_huge_canvas_without_decoding_it() -> None:
    big = Image.new("1", (9000, 8000))  # 72 MP at 1 bit per pixel: cheap to hold
    with pytest.raises(BadImageError, match="9000x8000 is 72 MP"):
        to_rgb(big)
