"""Share of `harness eval` time spent outside generation, against a simulated generator of 0.3 s per image.

Runs ``harness.evaluate`` end to end (planning, the store, PNG encoding, hashing and image files, scoring) with
generation replaced by a simulator that takes ``--gen-s`` seconds per image (sleeping, as a GPU-bound generator
leaves the CPU free) and returns 512 px images with natural-image statistics (smooth colour fields plus a little
noise, so PNG encoding costs what it costs on real generations), and a weight-free scorer (the mean pixel, so
"scoring" is the harness's own cost of handing images to a scorer, not a real metric's model time). A first run
warms up torch, DuckDB and the scorer; the second is measured.

Overhead is the wall time of the measured run minus the generator's own time, per image; its share is that over
the generator's time per image.

    PYTHONPATH=. python bench/eval_overhead.py [--images 64] [--size 512] [--batch-size 8] [--gen-s 0.3]

Prints a JSON summary, then ``RESULT name=value`` lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's packages before anything in bench/


class MeanPixel:
    """A weight-free scorer: the mean pixel value in [0, 1]."""

    name = "meanpixel"
    version = "1"

    def __init__(self) -> None:
        from scorers.base import Requirements

        self.requires = Requirements()

    def __call__(
        self, images: list[Any], prompts: list[str], meta: list[dict] | None = None
    ) -> Any:
        from scorers.base import Scores

        values = [float(np.asarray(im, dtype=np.float32).mean() / 255) for im in images]
        return Scores(values, values, None)


class SimulatedGenerator:
    """Stands in for ``flowmodels.pipelines.sample_images``: ``seconds`` per image, natural-looking images."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.total = 0.0

    def __call__(self, model: Any, prompts: list[str], seeds: list[int], **kw: Any) -> Any:
        import torch
        import torch.nn.functional as F

        t0 = time.perf_counter()
        h, w = kw.get("height", 512), kw.get("width", 512)
        g = torch.Generator().manual_seed(int(seeds[0]))
        coarse = torch.rand(len(prompts), 3, 8, 8, generator=g)
        images = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
        images = (images + 0.01 * torch.randn(images.shape, generator=g)).clamp(0, 1)
        time.sleep(max(0.0, self.seconds * len(prompts) - (time.perf_counter() - t0)))
        self.total += time.perf_counter() - t0
        return images


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--gen-s", type=float, default=0.3, help="simulated seconds per image")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    import harness.worker
    from flowmodels.models import load_model
    from flowmodels.tiny import save_tiny_sd3
    from harness.evaluation import evaluate
    from harness.protocol import EvalProtocol

    gen = SimulatedGenerator(args.gen_s)
    harness.worker.sample_images = gen  # type: ignore[assignment]  # generation is simulated
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny_sd3(Path(tmp) / "tiny-sd3")  # a loaded model object; it never runs
        model = load_model(str(model_dir), device="cpu", dtype="float32")
        protocol = EvalProtocol(steps=2, height=args.size, width=args.size)
        kw: dict[str, Any] = dict(
            store=Path(tmp) / "bench.duckdb", protocol=protocol, scorers=["meanpixel"],
            scorer_objects={"meanpixel": MeanPixel()}, batch_size=args.batch_size, progress=False,
        )  # fmt: skip
        evaluate(model, "pickscore", run_id="warmup", limit=args.batch_size, **kw)
        gen.total = 0.0
        t0 = time.perf_counter()
        res = evaluate(model, "pickscore", run_id="bench", limit=args.images, **kw)
        wall = time.perf_counter() - t0
    n = res.images_generated
    if not gen.total:
        raise SystemExit(
            "the simulated generator was never called: harness.worker no longer samples here"
        )
    t = res.timings
    overhead = (wall - gen.total) / n
    per_gen = gen.total / n
    summary = {
        "images": n,
        "size": args.size,
        "batch_size": args.batch_size,
        "generator_s_per_image": round(per_gen, 3),
        "ms_per_image": {
            "everything outside generation (wall - generator)": round(1000 * overhead, 2),
            "of which: images for the scorers + waiting for PNG files": round(
                1000 * t["encode"] / n, 2
            ),
            "of which: scorer call (weight-free scorer)": round(1000 * t["score"] / n, 2),
            "store transactions (on a thread, overlapping the next batch)": round(
                1000 * t["store"] / n, 2
            ),
        },
        "wall_s": round(wall, 2),
    }
    print(json.dumps(summary, indent=2))
    print(f"RESULT images={n}")
    print(f"RESULT generator_ms_per_image={1000 * per_gen:.1f}")
    print(f"RESULT overhead_ms_per_image={1000 * overhead:.1f}")
    print(f"RESULT store_ms_per_image={1000 * t['store'] / n:.2f}")
    print(f"RESULT encode_wait_ms_per_image={1000 * t['encode'] / n:.2f}")
    print(f"RESULT overhead_share={overhead / per_gen:.4f}")


if __name__ == "__main__":
    main()
