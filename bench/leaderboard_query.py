"""Leaderboard query time over a results store with 1,000,000 score rows.

Builds (once, with SQL) a store shaped like real use: N runs, each with the main table's benchmarks at their full
sizes (GenEval 553 x 4 images scored by geneval with tags, OCR 1018, DrawBench 999 by deqa, PickScore 2048), i.e.
6277 score rows per run, 160 runs ~ 1.0M rows; then times the read paths a user or the service hits, each
including opening and closing the connection (a file store holds none between calls).

    python bench/leaderboard_query.py [--rows 1000000] [--store /tmp/flow-opd-bench.duckdb] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from harness import tables
from results.store import Store

SPEC = [("geneval", "geneval", 553, 4, True), ("ocr", "ocr", 1018, 1, False),
        ("drawbench", "deqa", 999, 1, False), ("pickscore", "pickscore", 2048, 1, False)]  # fmt: skip
TASKS = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]


def build(path: Path, rows: int) -> int:
    """Fill a fresh store with about ``rows`` score rows; returns the number of runs."""
    per_run = sum(n * k for _, _, n, k, _ in SPEC)
    runs = max(1, -(-rows // per_run))  # at least `rows` rows
    path.unlink(missing_ok=True)
    Path(str(path) + ".wal").unlink(missing_ok=True)
    store = Store(path)
    values = ", ".join(f"('{b}', '{s}', {n}, {k}, {str(g).lower()})" for b, s, n, k, g in SPEC)
    tags = "[" + ", ".join(f"'{t}'" for t in TASKS) + "]"
    with store.session() as con:
        con.execute(
            f"CREATE TEMP TABLE spec AS SELECT * FROM (VALUES {values}) t(benchmark, scorer, n, k, grouped)"
        )
        con.execute(
            f"""INSERT INTO runs (run_id, model, lora, protocol_version, protocol, provenance)
            SELECT 'run-' || r, 'model-' || r, NULL, '1', '{{"benchmarks": {{}}}}', '{{}}' FROM range({runs}) t(r)"""
        )
        con.execute(
            f"""INSERT INTO samples (run_id, step, benchmark, benchmark_version, prompt_id, prompt_index, prompt,
                   meta, grp, image_index, seed, image_sha256, image_path)
            SELECT 'run-' || r, 0, benchmark, '1', benchmark || '/' || lpad(p::VARCHAR, 5, '0'), p, 'prompt ' || p,
                   '{{}}', CASE WHEN grouped THEN {tags}[(p % 6) + 1] END, j, 42 + p * k + j,
                   sha256(r || benchmark || p || '/' || j), 'x.png'
            FROM range({runs}) a(r), spec, range(2048) b(p), range(4) c(j) WHERE p < n AND j < k"""
        )
        con.execute(
            """INSERT INTO scores (run_id, step, benchmark, benchmark_version, prompt_id, grp, image_index, scorer,
                   scorer_version, value, reward, details)
            SELECT s.run_id, s.step, s.benchmark, '1', s.prompt_id, s.grp, s.image_index, spec.scorer, '1',
                   random(), random(), NULL
            FROM samples s JOIN spec USING (benchmark)"""
        )
    store.rebuild_summaries()  # rows written by plain SQL: fill the summaries the views read
    return runs


def timed(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--store", type=Path, default=Path("/tmp/flow-opd-bench.duckdb"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    t0 = time.perf_counter()
    runs = build(args.store, args.rows)
    build_s = time.perf_counter() - t0
    store = Store(args.store, read_only=True)
    counts = store.count_rows()
    result = {
        "score_rows": counts["scores"],
        "runs": runs,
        "file_mb": round(args.store.stat().st_size / 2**20, 1),
        "build_s": round(build_s, 1),
        "median_s": {
            "leaderboard() main table": timed(lambda: store.leaderboard(), args.repeat),
            "leaderboard('geneval')": timed(lambda: store.leaderboard("geneval"), args.repeat),
            "geneval per-task table": timed(lambda: tables.geneval_table(store), args.repeat),
            "history(one run)": timed(lambda: store.history("run-0"), args.repeat),
            "`harness leaderboard` tables (all)": timed(
                lambda: tables.benchmark_tables(store), args.repeat
            ),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
