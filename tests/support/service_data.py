"""Real stores for the service tests: mini-world images scored by the real mini scorers, written by Store verbs.

``add_mini_run`` writes a run the way ``harness eval`` does (``add_run``, then ``add_samples`` per batch): GenEval
style prompts from the mini world (``geneval`` benchmark, grouped by task tag) scored by ``mini_geneval``, and the
same images on a ``drawbench`` benchmark scored by ``mini_quality``. ``skill`` is the share of images drawn
correctly (the rest show another prompt's scene, plus pixel noise), so runs differ in known directions.
"""

from __future__ import annotations

import base64
import io
import random
import time
from typing import Any

import numpy as np
from PIL import Image

from mini_world import world
from results.store import RunRecord, SampleRow, ScoreRow, Store

TASKS = world.GENEVAL_TASKS


def png_bytes(image: Image.Image) -> bytes:
    """PNG file bytes of an image."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def b64(image: Image.Image, fmt: str = "PNG", **kw: Any) -> str:
    """Base64 of an image saved as ``fmt``."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return base64.b64encode(buf.getvalue()).decode()


def mini_prompts(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` mini GenEval prompts cycling over the six tasks (metadata in GenEval's format)."""
    rng = random.Random(seed)
    return [world.make_prompt(TASKS[i % len(TASKS)], rng) for i in range(n)]


def draw(meta: dict[str, Any], correct: bool, rng: random.Random) -> Image.Image:
    """An image for a prompt: its scene when ``correct``, else a noisy scene of another prompt."""
    if correct:
        return world.render(world.scene_for(meta, rng))
    other = world.make_prompt(rng.choice(TASKS), rng)
    arr = np.asarray(world.render(world.scene_for(other, rng))).astype(np.int16)
    noise = np.random.default_rng(rng.randrange(2**32)).integers(-60, 60, arr.shape)
    return Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))


def add_mini_run(
    store: Store,
    run_id: str,
    *,
    model: str = "mini",
    skill: float = 1.0,
    prompts: int = 12,
    images_per_prompt: int = 2,
    seed: int = 0,
    step: int = 0,
    steps: int = 10,
    size: int = 32,
    of: int | None = None,
    batch: int = 8,
    benchmarks: tuple[str, ...] = ("geneval", "drawbench"),
    pause: float = 0.0,
    contaminated: tuple[str, ...] = (),
) -> dict[str, int]:
    """Write a scored run into ``store``; returns the number of samples and scores written.

    ``pause`` seconds pass between batches (the generation time of a real evaluation). ``contaminated``: the
    reasons its model counts as trained on evaluation prompts, recorded in its provenance as ``evaluate`` does.
    ``steps`` and ``size`` are the protocol it records; ``of``: the prompts its protocol says the benchmark holds
    (more than ``prompts``: a partial run, as ``--limit`` makes)."""
    from scorers.mini import MiniGenEval, MiniQuality

    rng = random.Random(f"{run_id}-{seed}")
    items = mini_prompts(prompts, seed)
    protocol = {
        "version": "1",
        "generation": {"steps": steps, "cfg": 4.5, "height": size, "width": size,
                       "image_encoding": "png", "sampler": "euler-ode", "seed": seed},
        "benchmarks": {b: {"prompts": of or prompts, "images_per_prompt": images_per_prompt}
                       for b in benchmarks},
    }  # fmt: skip
    if store.get_run(run_id) is None:
        provenance = {
            "git_sha": "0" * 40,
            **({"contaminated": list(contaminated)} if contaminated else {}),
        }
        store.add_run(RunRecord(run_id, model, None, protocol, provenance, "1"))
    geneval, quality = MiniGenEval(), MiniQuality()
    jobs = [(i, j) for i in range(prompts) for j in range(images_per_prompt)]
    counts = {"samples": 0, "scores": 0}
    for start in range(0, len(jobs), batch):
        if pause and start:
            time.sleep(pause)
        chunk = jobs[start : start + batch]
        imgs = [draw(items[i], rng.random() < skill, rng) for i, _ in chunk]
        metas = [items[i] for i, _ in chunk]
        texts = [m["prompt"] for m in metas]
        samples, scores = [], []
        for bench in benchmarks:
            scorer = geneval if bench == "geneval" else quality
            s = scorer(imgs, texts, metas if bench == "geneval" else None)
            for k, ((i, j), im) in enumerate(zip(chunk, imgs, strict=True)):
                sha, rel = store.put_image(png_bytes(im))
                grp = items[i]["tag"] if bench == "geneval" else None
                pid = f"{bench}/{i:05d}"
                samples.append(SampleRow(run_id, step, bench, "1", pid, i, texts[k], metas[k], grp,
                                         j, seed + i * images_per_prompt + j, sha, rel))  # fmt: skip
                scores.append(ScoreRow(run_id, step, bench, "1", pid, grp, j, scorer.name,
                                       scorer.version, s.values[k], s.rewards[k],
                                       None if s.details is None else s.details[k]))  # fmt: skip
        store.add_samples(samples, scores)
        counts["samples"] += len(samples)
        counts["scores"] += len(scores)
    return counts
