"""Leaderboard and table query times over a results store with 1,000,000 score rows, and the cost of one
evaluation batch's write on an empty and on that store.

Builds (once, with SQL, then ``Store.rebuild_summaries``) a store shaped like real use: N runs, each with the
main table's benchmarks at their full sizes (GenEval 553 x 4 images scored by geneval with tags, OCR 1018,
DrawBench 999 by deqa, PickScore 2048), i.e. 6277 score rows per run, 160 runs ~ 1.0M rows. Then:

- each read as a CLI command does it: in a fresh Python process (imports not timed), open the store read-only
  once (``open``: DuckDB's connect plus the size check) and run one query (DuckDB's cache is cold); the
  ``leaderboard`` is ``Store.leaderboard()`` (the main table's rows), the tables are what ``harness
  leaderboard`` prints (``harness.tables``), for all benchmarks and for each one;
- the write of one 64-image batch (64 samples and 64 scores in one transaction, with its summaries) on the
  connection ``harness eval`` holds for a run, alternating between an empty store and the 1M-row one.

    PYTHONPATH=. python bench/leaderboard_query.py [--rows 1000000] [--store /tmp/flow-opd-bench.duckdb]
                                                   [--repeat 5] [--batches 30]

Prints a JSON summary, then ``RESULT name=value`` lines (milliseconds, medians).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a fresh clone: the repository's packages first

from results.store import SampleRow, ScoreRow, Store  # noqa: E402

SPEC = [("geneval", "geneval", 553, 4, True), ("ocr", "ocr", 1018, 1, False),
        ("drawbench", "deqa", 999, 1, False), ("pickscore", "pickscore", 2048, 1, False)]  # fmt: skip
TASKS = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
QUERIES = ["leaderboard", "tables:all", "tables:geneval", "tables:ocr", "tables:drawbench",
           "tables:pickscore", "history"]  # fmt: skip


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


def fresh(path: Path, query: str) -> dict[str, float]:
    """In this (fresh) process: open the store as the CLI does and run ``query`` once; milliseconds."""
    from harness import tables

    t0 = time.perf_counter()
    with Store(path, read_only=True, keep_open=True) as store:
        t1 = time.perf_counter()
        if query == "leaderboard":
            store.leaderboard()
        elif query == "history":
            store.history("run-0")
        else:
            bench = query.split(":")[1]
            tables.benchmark_tables(store, None if bench == "all" else bench)
        t2 = time.perf_counter()
    return {"open_ms": 1000 * (t1 - t0), "query_ms": 1000 * (t2 - t1)}


def in_fresh_process(path: Path, query: str) -> dict[str, float]:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
        "sys.path.insert(0, sys.argv[1] + '/bench'); import leaderboard_query as b; "
        "print(json.dumps(b.fresh(Path(sys.argv[2]), sys.argv[3])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), str(path), query],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def batch(run_id: str, i: int) -> tuple[list[SampleRow], list[ScoreRow]]:
    """One evaluation batch: 64 GenEval images (16 prompts x 4) and their scores."""
    samples, scores = [], []
    for n in range(64):
        p, j = divmod(n + 64 * i, 4)
        pid, grp = f"geneval/{p:05d}", TASKS[p % 6]
        sha = f"{i:08x}{n:056x}"
        samples.append(SampleRow(run_id, 0, "geneval", "1", pid, p, f"prompt {p}",
                                 {"tag": grp}, grp, j, 42 + 4 * p + j, sha, f"{sha[:2]}/{sha}.png"))  # fmt: skip
        scores.append(ScoreRow(run_id, 0, "geneval", "1", pid, grp, j, "geneval", "1",
                               float(n % 2), float(n % 2), {"tags": [grp]}))  # fmt: skip
    return samples, scores


def write_costs(big: Path, batches: int) -> tuple[float, float]:
    """Median ms of one batch's ``add_samples`` on an empty store and on ``big``, alternating."""
    with tempfile.TemporaryDirectory() as tmp:
        stores = {"empty": Store(Path(tmp) / "empty.duckdb"), "big": Store(big)}
        times: dict[str, list[float]] = {"empty": [], "big": []}
        with stores["empty"].holding(), stores["big"].holding():
            for i in range(batches + 3):
                for name, store in stores.items():
                    rows = batch("bench-write", i)
                    t0 = time.perf_counter()
                    store.add_samples(*rows)
                    if i >= 3:  # the first batches warm up DuckDB and the indexes
                        times[name].append(time.perf_counter() - t0)
        return 1000 * statistics.median(times["empty"]), 1000 * statistics.median(times["big"])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--store", type=Path, default=Path("/tmp/flow-opd-bench.duckdb"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batches", type=int, default=30)
    args = ap.parse_args()
    t0 = time.perf_counter()
    runs = build(args.store, args.rows)
    build_s = time.perf_counter() - t0
    with Store(args.store, read_only=True) as st:
        counts = st.count_rows()
    fresh_ms: dict[str, dict[str, float]] = {}
    for q in QUERIES:
        got = [in_fresh_process(args.store, q) for _ in range(args.repeat)]
        fresh_ms[q] = {k: round(statistics.median(g[k] for g in got), 1) for k in got[0]}
    empty_ms, big_ms = write_costs(args.store, args.batches)
    summary = {
        "score_rows": counts["scores"],
        "runs": runs,
        "file_mb": round(args.store.stat().st_size / 2**20, 1),
        "build_s": round(build_s, 1),
        "fresh_process_median_ms": fresh_ms,
        "write_per_64_image_batch_ms": {"empty": round(empty_ms, 1), "1M": round(big_ms, 1)},
    }
    print(json.dumps(summary, indent=2))
    print(f"RESULT score_rows={counts['scores']}")
    print(f"RESULT open_ms={statistics.median(v['open_ms'] for v in fresh_ms.values()):.1f}")
    for q, v in fresh_ms.items():
        print(f"RESULT {q.replace(':', '_')}_ms={v['query_ms']:.1f}")
    print(f"RESULT write_batch_empty_ms={empty_ms:.1f}")
    print(f"RESULT write_batch_1m_ms={big_ms:.1f}")
    print(f"RESULT write_batch_ratio={big_ms / empty_ms:.2f}")


if __name__ == "__main__":
    main()
