"""One worker thread per scorer, gathering concurrent ``/v1/score`` requests into one scorer call.

A reward server sees many small requests at once (one per rollout worker). A GPU scorer costs about the same for
1 image as for 32, so the worker takes the first queued request, waits ``window`` seconds for more, and scores
everything it gathered (up to ``max_images``) in one call, then hands each request its own slice. The worker is
also the scorer's lock: only it ever calls the scorer, so scorers need not be thread-safe.

Requests with and without metadata are never mixed in one call (a scorer may read ``meta is None`` as "no
metadata"). If a gathered call fails, each request in it is scored again on its own, so one bad request cannot
fail its neighbours. A request whose caller stopped waiting (timeout) is dropped before it is scored.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from scorers.base import Scorer, Scores

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One request's images, prompts and metadata, and the future its caller waits on."""

    images: list[Image.Image]
    prompts: list[str]
    meta: list[dict[str, Any]] | None
    future: Future[Scores] = field(default_factory=Future)


@dataclass
class BatchStats:
    """Counters for ``GET /v1/scorers`` and the load test."""

    requests: int = 0
    calls: int = 0
    images: int = 0
    largest_call: int = 0


class Batcher:
    """The queue and worker thread of one scorer; ``score`` blocks until this request's slice is ready."""

    def __init__(
        self,
        scorer: Scorer,
        *,
        window: float = 0.005,
        max_images: int = 64,
        enabled: bool = True,
    ) -> None:
        self.scorer = scorer
        self.window = window
        self.max_images = max_images
        self.enabled = enabled
        self.stats = BatchStats()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(
            target=self._work, name=f"scorer-{scorer.name}", daemon=True
        )
        self._thread.start()

    def submit(
        self, images: list[Image.Image], prompts: list[str], meta: list[dict[str, Any]] | None
    ) -> Future[Scores]:
        """Queue one request; its future gets this request's slice of the scores (cancel it to drop it)."""
        job = Job(images, prompts, meta)
        self._queue.put(job)
        return job.future

    def score(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None,
        timeout: float,
    ) -> Scores:
        """Queue one request and wait for its scores; concurrent.futures.TimeoutError after ``timeout`` s."""
        future = self.submit(images, prompts, meta)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()  # still queued: the worker skips it; already running: result is dropped
            raise

    @property
    def pending(self) -> int:
        """Requests waiting in the queue."""
        return self._queue.qsize()

    def close(self) -> None:
        """Stop the worker after the requests already queued."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    # --- worker ------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            stop = False
            if self.enabled:
                stop = self._gather(jobs)
            self._run(jobs)
            if stop:
                return

    def _gather(self, jobs: list[Job]) -> bool:
        """Add requests that arrive within the window (and those already queued) up to max_images."""
        n = len(jobs[0].images)
        deadline = time.monotonic() + self.window
        while n < self.max_images:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return True
            if n + len(job.images) > self.max_images:
                self._run(jobs)  # this one would overflow the call: score what we have, start anew
                jobs[:] = [job]
                n = len(job.images)
                deadline = time.monotonic() + self.window
                continue
            jobs.append(job)
            n += len(job.images)
        return False

    def _run(self, jobs: list[Job]) -> None:
        live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        for group in (
            [j for j in live if j.meta is None],
            [j for j in live if j.meta is not None],
        ):
            if group:
                self._call(group)

    def _call(self, jobs: list[Job]) -> None:
        images = [im for j in jobs for im in j.images]
        prompts = [p for j in jobs for p in j.prompts]
        meta = None if jobs[0].meta is None else [m for j in jobs for m in j.meta or []]
        self.stats.requests += len(jobs)
        try:
            scores = self._checked(images, prompts, meta)
        except Exception as e:  # noqa: BLE001 - handed to the caller(s), never lost
            if len(jobs) == 1:
                jobs[0].future.set_exception(e)
                return
            log.info(
                "%s: a gathered call of %d requests failed (%s); scoring them one by one",
                self.scorer.name,
                len(jobs),
                e,
            )
            self.stats.requests -= len(jobs)
            for job in jobs:
                self._call([job])
            return
        start = 0
        for job in jobs:
            stop = start + len(job.images)
            details = None if scores.details is None else scores.details[start:stop]
            job.future.set_result(
                Scores(scores.values[start:stop], scores.rewards[start:stop], details)
            )
            start = stop

    def _checked(
        self, images: list[Image.Image], prompts: list[str], meta: list[dict[str, Any]] | None
    ) -> Scores:
        scores = self.scorer(images, prompts, meta)
        self.stats.calls += 1
        self.stats.images += len(images)
        self.stats.largest_call = max(self.stats.largest_call, len(images))
        n = len(images)
        if len(scores.values) != n or len(scores.rewards) != n:
            raise ScorerBug(
                f"scorer {self.scorer.name} returned {len(scores.values)} values and "
                f"{len(scores.rewards)} rewards for {n} images"
            )
        if scores.details is not None and len(scores.details) != n:
            raise ScorerBug(f"scorer {self.scorer.name} returned details not aligned with images")
        bad = [i for i, v in enumerate([*scores.values, *scores.rewards]) if not math.isfinite(v)]
        if bad:
            raise ScorerBug(f"scorer {self.scorer.name} returned a non-finite value or reward")
        return scores


class ScorerBug(RuntimeError):
    """A scorer broke its contract (wrong lengths, NaN): a server error, not the client's."""
