"""``service.batching.Batcher`` in-process: which requests share a scorer call. No timing assertions: a gate
holds the scorer's first call while the others queue, so the calls that follow are known."""

from __future__ import annotations

import threading
from typing import Any

from PIL import Image

from scorers.base import Scores
from service.batching import Batcher


class GatedScorer:
    """Records each call's image count; the first call waits for ``release`` (``entered`` says it started)."""

    name = "gated"
    version = "1"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[int] = []

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        self.calls.append(len(images))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(timeout=30)
        values = [float(im.width) for im in images]
        return Scores(values, values, None)


def _image(width: int) -> Image.Image:
    return Image.new("RGB", (width, 1))


def test_requests_queued_during_a_call_share_the_next_calls_up_to_max_images() -> None:
    """While a call runs, new requests queue; the worker then serves them in calls of up to max_images, in
    arrival order (a request that would overflow a call starts the next one), each request its own slice."""
    scorer = GatedScorer()
    batcher = Batcher(scorer, window=0.0, max_images=4)
    try:
        first = batcher.submit([_image(1)], ["p"], None)
        assert scorer.entered.wait(timeout=30)
        # queued behind the held call: 2+1 (the next 2 would overflow 4), then 2+2, then 1
        sizes = [2, 1, 2, 2, 1]
        queued = [
            batcher.submit([_image(10 * i + k) for k in range(n)], ["p"] * n, None)
            for i, n in enumerate(sizes)
        ]
        assert batcher.pending == len(sizes)
        scorer.release.set()
        assert first.result(timeout=30).values == [1.0]
        for i, (n, future) in enumerate(zip(sizes, queued, strict=True)):
            assert future.result(timeout=30).values == [float(10 * i + k) for k in range(n)]
    finally:
        batcher.close()
    assert scorer.calls == [1, 3, 4, 1]
    assert batcher.stats.calls == 4 and batcher.stats.largest_call == 4
