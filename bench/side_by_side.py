"""Two processes at once on one thread each vs one process on all threads: the case for ``trainer.jobs``.

Runs the same short job (a few GRPO steps of the mini OCR teacher, or a ``harness eval`` of the mini base on the
first prompts) three ways through ``trainer.jobs.run_jobs``, one after another:

1. alone on all the cores' threads,
2. alone on one thread,
3. two copies at once, one thread each,

and prints each wall time and the ratio that decides the schedule: the time of two jobs one after the other on all
threads over the time of the pair side by side (> 1: pairing wins).

    PYTHONPATH=. python bench/side_by_side.py [--job grpo|eval] [--steps 4] [--limit 12]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from result_lines import emit

from trainer.jobs import Job, run_jobs

CONFIGS = Path(__file__).resolve().parent.parent / "trainer" / "configs"


def command(kind: str, out: Path, steps: int, limit: int) -> tuple[str, ...]:
    if kind == "grpo":
        return (
            sys.executable,
            "-m",
            "trainer.grpo",
            str(CONFIGS / "mini_grpo_ocr.yaml"),
            f"run.out={out}",
            f"run.max_steps={steps}",
            "run.save_every=0",
        )
    return (
        *(sys.executable, "-m", "flow_opd", "eval", "--model", "mini", "--benchmark", "mini"),
        *("--limit", str(limit), "--store", str(out / "store.duckdb"), "--no-progress"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--job", choices=("grpo", "eval"), default="grpo")
    ap.add_argument("--steps", type=int, default=4, help="GRPO steps per job")
    ap.add_argument("--limit", type=int, default=12, help="prompts per benchmark per eval job")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def job(name: str) -> Job:
            return Job(
                name, command(args.job, root / name, args.steps, args.limit), root / f"{name}.log"
            )

        alone = run_jobs([job("alone")], slots=1, threads=cores)["alone"].seconds
        one = run_jobs([job("one")], slots=1, threads=1)["one"].seconds
        pair = run_jobs([job("a"), job("b")], slots=2, threads=2)
        both = max(r.start + r.seconds for r in pair.values())
    print(f"{args.job} job on {cores} cores:")
    print(f"  alone, {cores} threads: {alone:.1f} s")
    print(f"  alone, 1 thread:  {one:.1f} s")
    print(f"  two at once, 1 thread each: {both:.1f} s for both ({both / 2:.1f} s each)")
    print(f"  one after the other on {cores} threads / side by side: {2 * alone / both:.2f}")
    emit(
        {
            "alone_all_threads_s": alone,
            "alone_1_thread_s": one,
            "side_by_side_both_s": both,
            "sequential_over_side_by_side": 2 * alone / both,
        }
    )


if __name__ == "__main__":
    main()
