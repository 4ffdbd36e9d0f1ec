"""Scorer throughput on this machine: images per second at batch 1 and batch 32, and the batching speed-up.

Runs every registered scorer that can run here without hub weights or a GPU server:

- ``ocr`` (RapidOCR, real models from the wheel) and ``jpeg``;
- ``jpeg`` through ``RemoteScorer`` against a stdlib ``ScoreServer`` on loopback (the HTTP + PNG overhead);
- ``judge`` on a tiny random Qwen2.5-VL built offline (plumbing cost only: its numbers mean nothing; it generates
  ``--judge-tokens`` tokens per image instead of up to 2048).

Scorers that need weights or a server this machine lacks (deqa, unifiedreward, and the real judge) are listed as
skipped with the reason. Each measurement scores the same ``--n`` images of ``--size`` pixels (rendered text,
quoted prompts) in chunks of the batch size, after one warm-up call; model loading is not timed.

    PYTHONPATH=. python bench/scorer_batching.py [--n 64] [--size 512] [--only ocr jpeg]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from result_lines import emit  # noqa: E402  (bench/, the script's own folder)

from scorers import SCORERS  # noqa: E402

BATCHES = (1, 32)
WORDS = (
    "OPEN",
    "Hello World",
    "FLOW GRPO",
    "CAFE 24",
    "SALE",
    "NO PARKING",
    "EXIT",
    "Welcome Home",
)


def make_images(n: int, size: int) -> tuple[list[Image.Image], list[str]]:
    """n images with a short text drawn on a light background, and prompts quoting that text."""
    font = ImageFont.load_default(size=max(12, size // 10))
    images, prompts = [], []
    for i in range(n):
        word = WORDS[i % len(WORDS)]
        image = Image.new("RGB", (size, size), (230 - i % 20, 225, 210 + i % 30))
        ImageDraw.Draw(image).text(
            (size // 16, size // 2 - size // 20), word, fill=(20, 20, 60), font=font
        )
        images.append(image)
        prompts.append(f'a sign that says "{word}"')
    return images, prompts


def throughput(
    scorer: Callable[..., Any], images: list[Image.Image], prompts: list[str], batch: int
) -> float:
    """Images per second scoring all images in chunks of ``batch`` (after one warm-up chunk)."""
    scorer(images[:batch], prompts[:batch])
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        scorer(images[i : i + batch], prompts[i : i + batch])
    return len(images) / (time.perf_counter() - start)


def runnable(judge_tokens: int) -> tuple[dict[str, Callable[[], Any]], dict[str, str], list[Any]]:
    """Factories for what can run here, reasons for what cannot, and resources to close afterwards."""
    from scorers.jpeg import JpegCompressibility
    from scorers.ocr import OCR
    from scorers.remote import RemoteScorer, ScoreServer

    cleanup: list[Any] = []

    def remote_jpeg() -> RemoteScorer:
        server = ScoreServer({"jpeg": JpegCompressibility()})
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        cleanup.append(server)
        return RemoteScorer(server.url, "jpeg")

    def tiny_judge() -> Any:
        from scorers.judge import Judge
        from scorers.tiny_qwen_vl import save_tiny_qwen_vl

        folder = tempfile.mkdtemp(prefix="tiny-qwen-vl-")
        save_tiny_qwen_vl(folder)
        return Judge(model=folder, max_new_tokens=judge_tokens, device="cpu", batch_size=32)

    factories: dict[str, Callable[[], Any]] = {
        "ocr": OCR,
        "jpeg": JpegCompressibility,
        "jpeg (remote, loopback)": remote_jpeg,
        f"judge (tiny Qwen2.5-VL, {judge_tokens} tokens)": tiny_judge,
    }
    skipped = {
        "deqa": "needs a DeQA worker (mPLUG-Owl2 weights, GPU)",
        "unifiedreward": "needs an sglang/vLLM server with UnifiedReward weights",
        "judge (Qwen2.5-VL-7B)": "needs hub weights (and a GPU to be useful)",
    }
    known = {k.split(" ")[0] for k in factories} | {k.split(" ")[0] for k in skipped}
    for name in SCORERS:
        if name not in known:
            skipped[name] = "no offline tiny path in this script yet"
    return factories, skipped, cleanup


def main(argv: list[str] | None = None) -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n", type=int, default=64, help="images per measurement (a multiple of 32 is best)"
    )
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--judge-tokens", type=int, default=8)
    parser.add_argument("--only", nargs="*", help="scorer names (first word of the row) to run")
    args = parser.parse_args(argv)
    logging.getLogger("scorers").setLevel(
        logging.ERROR
    )  # the tiny judge's "no parsable score" warnings

    images, prompts = make_images(args.n, args.size)
    factories, skipped, cleanup = runnable(args.judge_tokens)
    rows = []
    for label, factory in factories.items():
        if args.only and label.split(" ")[0] not in args.only:
            continue
        scorer = factory()
        rates = [throughput(scorer, images, prompts, b) for b in BATCHES]
        rows.append((label, *rates, rates[1] / rates[0]))
        print(f"measured {label}", file=sys.stderr, flush=True)
    for server in cleanup:
        server.shutdown()
        server.server_close()

    print(f"\n{args.n} images of {args.size}x{args.size}, CPU, {time.strftime('%Y-%m-%d')}")
    print(f"| scorer | img/s @ batch {BATCHES[0]} | img/s @ batch {BATCHES[1]} | speed-up |")
    print("|---|---|---|---|")
    for label, r1, r32, ratio in rows:
        print(f"| {label} | {r1:.2f} | {r32:.2f} | {ratio:.2f}x |")
    for name, reason in skipped.items():
        print(f"| {name} | skipped: {reason} | | |")
    emit(
        {
            label.split(" ")[0]: {"per_s_batch1": r1, "per_s_batch32": r32, "speedup": ratio}
            for label, r1, r32, ratio in rows
        }
    )


if __name__ == "__main__":
    main()
