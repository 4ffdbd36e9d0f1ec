"""Share of `harness eval` time spent outside generation (PNG encoding + hashing + image files, scoring, the
store's transactions), per image.

Runs ``harness.evaluate`` on the tiny offline SD3 model with a weight-free scorer (the mean pixel, so "scoring"
here is the harness's own cost of handing images to a scorer, not a real metric's model time), and reads the
timings ``evaluate`` records per phase. The tiny model generates in milliseconds, so the share is an upper bound
of the overhead; the absolute ms per image is the number to hold against a real model's generation time
(SD3.5-M, 40 steps at 512 px: seconds per image on a GPU).

    PYTHONPATH=. python bench/eval_overhead.py [--images 64] [--size 512] [--steps 10] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from result_lines import emit


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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from flowmodels.models import load_model
    from flowmodels.tiny import save_tiny_sd3
    from harness.evaluation import evaluate
    from harness.protocol import EvalProtocol

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny_sd3(Path(tmp) / "tiny-sd3")
        model = load_model(str(model_dir), device="cpu", dtype="float32")
        protocol = EvalProtocol(steps=args.steps, height=args.size, width=args.size)
        kw: dict[str, Any] = dict(
            store=Path(tmp) / "bench.duckdb", protocol=protocol, scorers=["meanpixel"],
            scorer_objects={"meanpixel": MeanPixel()}, batch_size=args.batch_size, progress=False,
        )  # fmt: skip
        # warm-up (first-call costs of torch and DuckDB), then the measured run on other prompts
        evaluate(model, "pickscore", run_id="warmup", limit=args.batch_size, **kw)
        t0 = time.perf_counter()
        res = evaluate(model, "pickscore", run_id="bench", limit=args.images, **kw)
        wall = time.perf_counter() - t0
    t = res.timings
    n = res.images_generated
    outside = t["encode"] + t["score"] + t["store"]
    share = outside / (outside + t["generate"])
    print(
        json.dumps(
            {
                "images": n,
                "size": args.size,
                "steps": args.steps,
                "batch_size": args.batch_size,
                "ms_per_image": {
                    "generate": round(1000 * t["generate"] / n, 2),
                    "png encode + sha256 + write + decode for scorers": round(
                        1000 * t["encode"] / n, 2
                    ),
                    "scorer call (weight-free scorer)": round(1000 * t["score"] / n, 2),
                    "store (one transaction per batch)": round(1000 * t["store"] / n, 2),
                    "other (planning, run record)": round(
                        1000
                        * (wall - sum(t[k] for k in ("generate", "encode", "score", "store")))
                        / n,
                        2,
                    ),
                },
                "share_outside_generation": round(share, 4),
                "wall_s": round(wall, 2),
            },
            indent=2,
        )
    )
    emit(
        {
            "images": n,
            "generate_ms_per_image": 1000 * t["generate"] / n,
            "outside_generation_ms_per_image": 1000 * outside / n,
            "share_outside_generation": share,
        }
    )


if __name__ == "__main__":
    main()
