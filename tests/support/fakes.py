"""Test doubles that need no weights. Never registered in the shipped ``scorers.SCORERS``.

``FakeScorer`` follows the ``Scorer`` protocol: a deterministic value in [0, 1) from the sha256 of each image's RGB
pixels, its reward (value / 2) and details echoing the prompt's metadata tag. ``register()`` adds it to the
registry of the current process (tests call it through monkeypatch, subprocesses through ``python -c``).
Environment knobs for the crash and concurrency tests: ``FAKE_SCORER_DELAY`` (seconds slept per call) and
``FAKE_SCORER_GATE`` (a path: each call waits until that file exists, so a test decides when a batch ends).
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from PIL import Image

from scorers.base import Requirements, Scores


def pixel_value(image: Image.Image) -> float:
    """The fake metric: sha256 of the RGB pixels mapped to [0, 1)."""
    digest = hashlib.sha256(image.convert("RGB").tobytes()).digest()
    return int.from_bytes(digest[:6], "big") / 2**48


class FakeScorer:
    """A deterministic, weight-free scorer for plumbing tests."""

    name = "fake"
    version = "1"
    requires = Requirements()

    def __init__(self) -> None:
        self.calls = 0
        self.delay = float(os.environ.get("FAKE_SCORER_DELAY", "0"))
        self.gate = os.environ.get("FAKE_SCORER_GATE")

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        while self.gate and not os.path.exists(self.gate):
            time.sleep(0.05)
        values = [pixel_value(im) for im in images]
        details = [
            {"tag": (m or {}).get("tag"), "size": list(im.size)}
            for im, m in zip(images, meta or [{}] * len(images), strict=True)
        ]
        return Scores(values, [v / 2 for v in values], details)


class OtherFakeScorer(FakeScorer):
    """A second fake metric (1 - the first), to test runs that gain a scorer later."""

    name = "fake2"

    def __call__(self, images, prompts, meta=None):  # type: ignore[no-untyped-def]
        s = super().__call__(images, prompts, meta)
        return Scores([1 - v for v in s.values], [1 - v for v in s.values], None)


class TiedFakeScorer(FakeScorer):
    """``fake_tied``: 0.5 for every image of a prompt that says "tied" (a group whose rewards are all equal), the
    fake metric for the others: a GRPO epoch with known tied groups."""

    name = "fake_tied"

    def __call__(self, images, prompts, meta=None):  # type: ignore[no-untyped-def]
        s = super().__call__(images, prompts, meta)
        values = [0.5 if "tied" in p else v for v, p in zip(s.values, prompts, strict=True)]
        return Scores(values, values, None)


FAKES = {
    "fake": "tests.support.fakes:FakeScorer",
    "fake2": "tests.support.fakes:OtherFakeScorer",
    "fake_tied": "tests.support.fakes:TiedFakeScorer",
}


def register() -> None:
    """Add the fakes to this process's scorer registry."""
    import scorers

    scorers.SCORERS.update(FAKES)
