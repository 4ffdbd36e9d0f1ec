"""Scorers that read per-image metadata declare it (``Requirements.meta``) and refuse metadata they cannot use
with an ``InputError`` naming the field and a valid entry, before any work (the detector is never called)."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from flowbase.errors import InputError
from scorers import SCORERS, scorer_class
from scorers.base import Requirements, check_meta
from scorers.geneval import GenEval
from scorers.mini import MiniGenEval

BAD = [
    (None, "needs per-image metadata with 'tag', 'include'"),
    ([{}], "needs 'tag' as a string (got missing)"),
    ([{"tag": None, "include": None}], "needs 'tag' as a string (got null)"),
    ([{"tag": "counting", "include": None}], "needs 'include' as a list (got null)"),
    ([{"tag": "counting", "include": [], "exclude": None}], "needs 'exclude' as a list (got null)"),
    (["single_object"], "needs an object"),
]


class CountingDetector:
    """A detector that finds nothing and counts its calls."""

    reference = False
    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: list[Image.Image]) -> list[dict[str, Any]]:
        self.calls += 1
        return [{} for _ in images]


@pytest.mark.parametrize(("meta", "says"), BAD)
def test_geneval_scorers_refuse_unusable_metadata_before_any_work(meta: Any, says: str) -> None:
    detector = CountingDetector()
    image = [Image.new("RGB", (32, 32))]
    for scorer in (GenEval(detector=detector, clip=None, device="cpu"), MiniGenEval()):
        with pytest.raises(InputError) as e:
            scorer(image, ["a circle"], meta)
        assert says in str(e.value) and "\n" not in str(e.value)
        assert "--prompts" in str(e.value)  # names the prompt file format that carries it
    assert detector.calls == 0


def test_a_valid_entry_from_the_message_is_accepted() -> None:
    meta = [{"tag": "single_object", "include": [{"class": "circle", "count": 1}]}]
    check_meta("mini_geneval", MiniGenEval.requires, meta)
    assert MiniGenEval()([Image.new("RGB", (32, 32))], ["a circle"], meta).values == [0.0]


def test_compbench_declares_its_category() -> None:
    requires = scorer_class("compbench").requires
    with pytest.raises(InputError, match="needs 'category' as a string"):
        check_meta("compbench", requires, [{"category": None}])
    with pytest.raises(InputError, match="needs 'objects' as a list"):
        check_meta("compbench", requires, [{"category": "spatial", "objects": 3}])
    check_meta("compbench", requires, [{"category": "color"}])


@pytest.mark.parametrize("name", ["geneval", "mini_geneval", "compbench"])
def test_scorers_that_read_metadata_declare_it(name: str) -> None:
    requires = scorer_class(name).requires
    assert isinstance(requires, Requirements) and requires.meta is not None
    assert name in SCORERS
