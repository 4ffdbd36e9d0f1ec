"""One process's share of an evaluation: load the model and scorers on first use, generate a batch (or read its
stored PNGs), score it, write the images under their sha256, and return the rows for rank 0 to store.

Only generation and scoring sit on the critical path: the scorers get the generated images from memory (the
image a scorer would decode from the lossless PNG, through the protocol's image encoding), while PNG encoding,
hashing and writing run on background threads during the next batch's generation. ``Worker.start`` returns a
``Pending`` batch; its ``finish`` waits for the batch's files and only then hands out its sample rows, so a row
is never stored before its image file exists (resume and crash semantics as before). At most two batches are in
flight: the evaluation finishes batch ``r`` right after starting batch ``r + 1``."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import scorers as scorer_registry
from flowmodels.images import to_pil
from flowmodels.pipelines import sample_images
from harness.benchmarks import PromptItem
from harness.generate import GenerateSettings, load_generation_model
from harness.plan import BenchmarkPlan, Job
from harness.protocol import encode_png, scorer_image, scorer_input
from harness.session import Session
from results.imagefiles import read_image_file, write_image_file
from results.store import SampleRow, ScoreRow


class ScorerOutputError(ValueError):
    """A scorer returned something the store cannot hold honestly (wrong length, NaN, ...)."""


class Worker:
    """Per-process state: the model and scorers, loaded on first use."""

    def __init__(self, session: Session, images_dir: Path) -> None:
        self.session = session
        self.model = session.model  # replaced by the loaded model on first use
        self.images_dir = images_dir
        self.scorers: dict[str, Any] = dict(session.lent)
        self._writer: ThreadPoolExecutor | None = None

    def flow_model(self) -> Any:
        if isinstance(self.model, str):
            p = self.session.protocol
            settings = GenerateSettings(
                model=self.model,
                lora=self.session.lora,
                steps=p.steps,
                cfg=p.cfg,
                height=p.height,
                width=p.width,
                seed=p.seed,
                negative_prompt=p.negative_prompt,
                t5_length=p.t5_length,
                noise_level=p.noise_level,
                batch_size=self.session.batch_size,
                device=self.session.device,
                dtype=self.session.dtype,
            )
            self.model = load_generation_model(settings)
        return self.model

    def scorer(self, name: str) -> Any:
        if name not in self.scorers:
            obj = scorer_registry.load(name)
            want = self.session.versions.get(name)
            if want is not None and getattr(obj, "version", want) != want:
                raise ScorerOutputError(
                    f"scorer {name} loaded as version {obj.version}, planned as {want}"
                )
            self.scorers[name] = obj
        return self.scorers[name]

    def _pool(self) -> ThreadPoolExecutor:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(
                max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="png-writer"
            )
        return self._writer

    def close(self) -> None:
        """Wait for the image writes in flight and stop their threads."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def run(self, batch: list[Job]) -> tuple[list[SampleRow], list[ScoreRow], dict[str, float]]:
        """Generate (if needed) and score one batch and write its images; the rows (``start`` + ``finish``)."""
        return self.start(batch).finish()

    def start(self, batch: list[Job]) -> Pending:
        """Generate (if needed) and score one batch; its images are written in the background."""
        plan = self.session.plans[batch[0].benchmark]
        t0 = time.perf_counter()
        enc = self.session.protocol.image_encoding
        pending = Pending()
        if batch[0].image is None:
            p = self.session.protocol
            images_t = sample_images(
                self.flow_model(),
                [j.item.prompt for j in batch],
                [j.seed for j in batch],
                steps=p.steps,
                cfg=p.cfg,
                noise_level=p.noise_level,
                height=p.height,
                width=p.width,
                negative_prompt=p.negative_prompt,
            )
            t1 = time.perf_counter()
            generated = to_pil(images_t)
            pool = self._pool()
            pending.files = [pool.submit(store_png, self.images_dir, im) for im in generated]
            pending.rows = [
                SampleRow(
                    run_id=self.session.run_id,
                    step=self.session.step,
                    benchmark=plan.name,
                    benchmark_version=plan.version,
                    prompt_id=job.item.id,
                    prompt_index=job.item.index,
                    prompt=job.item.prompt,
                    meta=job.item.meta,
                    grp=group(plan, job.item),
                    image_index=job.image_index,
                    seed=job.seed,
                    image_sha256="",  # filled in by finish() from the written file
                    image_path="",
                )
                for job in batch
            ]
            images = [scorer_image(im, enc) for im in generated]
            generate_s = t1 - t0
        else:
            images = parallel(
                lambda j: scorer_input(
                    read_image_file(self.images_dir, j.image[1], j.image[0]), enc
                ),
                batch,
            )
            generate_s = 0.0
        t2 = time.perf_counter()
        prompts = [j.item.prompt for j in batch]
        metas = [dict(j.item.meta) for j in batch]
        for name in batch[0].scorers:
            scorer = self.scorer(name)
            out = scorer(images, prompts, metas)
            pending.scores += score_rows(
                name, str(scorer.version), out, batch, plan, self.session.run_id, self.session.step
            )
        t3 = time.perf_counter()
        # encode: what the critical path spends on images besides generating them (PIL conversion for the
        # scorers, or reading, checking and decoding stored PNGs); finish() adds any wait for the files
        pending.timings = {"generate": generate_s, "encode": t2 - t0 - generate_s, "score": t3 - t2}
        return pending


@dataclass
class Pending:
    """A generated and scored batch whose image files may still be being written."""

    rows: list[SampleRow] = field(default_factory=list)
    files: list[Future[tuple[str, str]]] = field(default_factory=list)
    scores: list[ScoreRow] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def finish(self) -> tuple[list[SampleRow], list[ScoreRow], dict[str, float]]:
        """Wait until every image file is written; then (samples, scores, timings)."""
        t0 = time.perf_counter()
        samples = []
        for row, done in zip(self.rows, self.files, strict=True):
            sha, rel = (
                done.result()
            )  # an error writing a file is raised here, before any row is stored
            samples.append(replace(row, image_sha256=sha, image_path=rel))
        timings = dict(self.timings)
        if timings:
            timings["encode"] += time.perf_counter() - t0
        return samples, self.scores, timings


def store_png(images_dir: Path, image: Any) -> tuple[str, str]:
    """Encode as PNG and write it under its sha256 (content-addressed): (sha256, path)."""
    return write_image_file(images_dir, encode_png(image))


def parallel(fn: Any, items: Sequence[Any]) -> list[Any]:
    """``[fn(x) for x in items]`` on a thread per item (up to the CPU count), in order."""

    workers = min(len(items), os.cpu_count() or 1)
    if workers <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def group(plan: BenchmarkPlan, item: PromptItem) -> str | None:
    if plan.group_by is None:
        return None
    if plan.group_by not in item.meta:
        raise ValueError(
            f"prompt {item.id} has no {plan.group_by!r} metadata, which {plan.name} aggregates by"
        )
    return str(item.meta[plan.group_by])


def score_rows(
    name: str, version: str, out: Any, batch: list[Job], plan: BenchmarkPlan, run_id: str, step: int
) -> list[ScoreRow]:
    n = len(batch)
    values = list(getattr(out, "values", []))
    rewards = getattr(out, "rewards", None)
    details = getattr(out, "details", None)
    if len(values) != n:
        raise ScorerOutputError(f"scorer {name} returned {len(values)} values for {n} images")
    if rewards is not None and len(rewards) != n:
        raise ScorerOutputError(f"scorer {name} returned {len(rewards)} rewards for {n} images")
    if details is not None and len(details) != n:
        raise ScorerOutputError(f"scorer {name} returned {len(details)} details for {n} images")
    rows = []
    for i, job in enumerate(batch):
        value = float(values[i])
        reward = None if rewards is None else float(rewards[i])
        if not math.isfinite(value) or (reward is not None and not math.isfinite(reward)):
            raise ScorerOutputError(
                f"scorer {name} returned a non-finite number for {job.item.id} image {job.image_index} "
                f"(value {value}, reward {reward}); refusing to store it"
            )
        rows.append(
            ScoreRow(
                run_id=run_id,
                step=step,
                benchmark=plan.name,
                benchmark_version=plan.version,
                prompt_id=job.item.id,
                grp=group(plan, job.item),
                image_index=job.image_index,
                scorer=name,
                scorer_version=version,
                value=value,
                reward=reward,
                details=None if details is None else dict(details[i] or {}),
            )
        )
    return rows
