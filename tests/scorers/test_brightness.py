"""The weightless reward scorers: values by hand, registry, bad input."""

from __future__ import annotations

import pytest
from PIL import Image

import scorers
from scorers.base import Scorer


def _solid(rgb, size=8):
    return Image.new("RGB", (size, size), rgb)


def test_brightness_is_mean_rec709_luma():
    s = scorers.load("brightness")
    assert isinstance(s, Scorer)
    out = s([_solid((255, 255, 255)), _solid((0, 0, 0)), _solid((0, 255, 0))], ["a", "b", "c"])
    assert out.values == pytest.approx([1.0, 0.0, 0.7152])
    assert out.rewards == out.values
    half = Image.new("RGB", (2, 1))
    half.putpixel((0, 0), (255, 255, 255))
    assert s([half], ["x"]).values[0] == pytest.approx(0.5)


def test_colour_closeness_to_red():
    s = scorers.load("colour")
    out = s([_solid((255, 0, 0)), _solid((0, 255, 255)), _solid((0, 0, 0))], ["a", "b", "c"])
    assert out.values == pytest.approx([1.0, 0.0, 1 - 1 / 3**0.5])


def test_bad_input_is_rejected():
    s = scorers.load("brightness")
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        s([_solid((1, 1, 1))] * 2, ["a"])
    with pytest.raises(TypeError, match="not a PIL image"):
        s(["not an image"], ["a"])  # type: ignore[list-item]
    with pytest.raises(KeyError, match="did you mean brightness"):
        scorers.load("brightnes")
