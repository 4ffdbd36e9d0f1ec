"""Store rows for table and leaderboard tests: a run's samples and scores from a list of values."""

from __future__ import annotations

from collections.abc import Sequence

from harness.benchmarks import BENCHMARKS
from harness.protocol import EvalProtocol
from results.store import RunRecord, SampleRow, ScoreRow, Store

TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def put(
    store: Store,
    run: str,
    bench: str,
    scorer: str,
    values: Sequence[float],
    groups: Sequence[str | None] | None = None,
    *,
    step: int = 0,
    per_prompt: int = 1,
) -> None:
    """Rows for ``values`` (image i belongs to prompt i // per_prompt, in group groups[i])."""
    samples, scores = [], []
    for i, v in enumerate(values):
        p, j = divmod(i, per_prompt)
        pid = f"{bench}/{p:05d}"
        g = groups[i] if groups is not None else None
        samples.append(
            SampleRow(
                run, step, bench, "1", pid, p, f"prompt {p}", {}, g, j, 42 + i, f"{i:064x}", "x.png"
            )
        )
        scores.append(ScoreRow(run, step, bench, "1", pid, g, j, scorer, "1", v, None, None))
    store.add_samples(samples, scores)


def add_run(store: Store, run: str, benchmarks: dict[str, tuple[int, int]]) -> None:
    """A runs row whose protocol says how many prompts x images each benchmark holds."""
    spec = {b: {"prompts": n, "images_per_prompt": k} for b, (n, k) in benchmarks.items()}
    store.add_run(RunRecord(run, "m", None, {"benchmarks": spec}, {"git_sha": "abc"}, "1"))


def paper_sd35m(s: Store, run: str) -> None:
    """Rows whose means are the paper's SD3.5-M numbers (GenEval 0.63, OCR 0.59, DeQA 4.07, PickScore 21.64)."""
    put(s, run, "geneval", "geneval", [0.63] * 6, list(TASKS))
    put(s, run, "ocr", "ocr", [0.5, 0.68])
    put(s, run, "drawbench", "deqa", [4.0, 4.14])
    put(s, run, "pickscore", "pickscore", [21.6, 21.68])


def add_standard_run(
    store: Store, run: str, bench: str, prompts: int, k: int, **gen: object
) -> None:
    """A runs row whose protocol is ``bench``'s standard one (``prompts`` x ``k`` images) but for ``gen``."""
    base = dict(BENCHMARKS[bench].protocol)
    names = set(EvalProtocol.__dataclass_fields__)
    settings = {n: v for n, v in {**base, **gen}.items() if n in names}
    protocol = {
        "version": "1",
        "generation": EvalProtocol(**settings).to_dict(),  # type: ignore[arg-type]
        "benchmarks": {
            bench: {
                "prompts": prompts,
                "images_per_prompt": k,
                "version": BENCHMARKS[bench].version,
            }
        },
    }
    store.add_run(RunRecord(run, "mini", None, protocol, {"git_sha": "abc"}, "1"))
