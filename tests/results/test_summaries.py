"""The summaries kept on write give the numbers a full scan of the rows gives: the aggregate views (backed by
``sample_sums``, ``score_sums``, ``group_sums``) against the views of migration 002 (which read every score row)
on random stores, with keys written twice and runs deleted; and migration 003 fills them from existing rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from results.store import MIGRATIONS, SampleRow, ScoreRow, Store, migrations

VIEWS = ("main_table", "benchmark_scores", "group_scores")


def full_scan_views(con: duckdb.DuckDBPyConnection) -> None:
    """Migration 002's views (aggregates over every score row) as ``old_<name>``, next to the store's own."""
    sql = (MIGRATIONS / "002_views.sql").read_text(encoding="utf-8")
    for name in (*VIEWS, "sample_scores"):
        sql = sql.replace(f"VIEW {name} ", f"VIEW old_{name} ").replace(
            f"FROM {name}\n", f"FROM old_{name}\n"
        )
    con.execute(sql)


def rows(con: duckdb.DuckDBPyConnection, view: str) -> list[dict[str, Any]]:
    order = {
        "main_table": "run_id, step",
        "benchmark_scores": "run_id, step, benchmark, scorer",
        "group_scores": "run_id, step, benchmark, scorer, grp",
    }[view.removeprefix("old_")]
    cur = con.execute(f"SELECT * FROM {view} ORDER BY {order}")
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def assert_same_as_full_scan(store: Store) -> None:
    with store.session() as con:
        for view in VIEWS:
            new, old = rows(con, view), rows(con, f"old_{view}")
            assert len(new) == len(old), view
            for a, b in zip(new, old, strict=True):
                assert a.keys() == b.keys()
                for k in a:
                    if isinstance(b[k], float) and k in ("group_mean", "score", "avg", "geneval"):
                        assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-15), (view, k)
                    else:  # counts, versions and image means (sums of k/64 are exact) match exactly
                        assert a[k] == b[k], (view, k, a, b)
        full = {
            r[0]: (r[1], r[2], r[3])
            for r in con.execute(
                "SELECT r.run_id, (SELECT count(*) FROM samples s WHERE s.run_id = r.run_id), "
                "(SELECT count(*) FROM scores c WHERE c.run_id = r.run_id), "
                "(SELECT max(step) FROM samples s WHERE s.run_id = r.run_id) FROM runs r"
            ).fetchall()
        }
    listed = {r["run_id"]: (r["images"], r["scores"], r["last_step"]) for r in store.runs()}
    assert listed == full
    for run_id, (_, _, last) in full.items():
        assert store.last_step(run_id) == last


BENCH = {"geneval": "geneval", "ocr": "ocr", "drawbench": "deqa", "pickscore": "pickscore"}
GROUPED = {"geneval"}

key = st.tuples(
    st.sampled_from(["a", "b", "c"]),  # run
    st.integers(0, 2),  # step
    st.sampled_from(sorted(BENCH)),  # benchmark
    st.integers(0, 4),  # prompt
    st.integers(0, 1),  # image
)
row = st.tuples(
    key,
    st.integers(-640, 640),  # value * 64: sums of these are exact in binary
    st.one_of(st.none(), st.integers(-64, 64)),  # reward * 64, or none
    st.sampled_from(["1", "2"]),  # benchmark version
    st.sampled_from(["1", "1b"]),  # scorer version
    st.booleans(),  # also scored by a second scorer
)
op = st.one_of(
    st.tuples(st.just("write"), st.lists(row, max_size=12)),
    st.tuples(st.just("delete"), st.sampled_from(["a", "b", "c"])),
)


def write(store: Store, batch: list[tuple[Any, ...]]) -> None:
    from results.store import RunRecord

    samples, scores = [], []
    for (run, step, bench, p, j), value, reward, bver, sver, twice in batch:
        pid = f"{bench}/{p:05d}"
        grp = f"task{p % 3}" if bench in GROUPED else None
        samples.append(
            SampleRow(run, step, bench, bver, pid, p, "x", {}, grp, j, p, f"{p:064x}", "x.png")
        )
        r = None if reward is None else reward / 64
        scores.append(
            ScoreRow(run, step, bench, bver, pid, grp, j, BENCH[bench], sver, value / 64, r)
        )
        if twice:
            scores.append(
                ScoreRow(run, step, bench, bver, pid, grp, j, "other", sver, -value / 64, None)
            )
    runs = {s.run_id for s in samples}
    for run in sorted(runs):  # the run record with its first rows, as `harness eval` writes it
        store.add_samples([], [], run=RunRecord(run, "m", None, {}, {}))
    store.add_samples(samples, scores)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=8))
def test_summaries_give_the_numbers_of_a_full_scan(ops: list[tuple[str, Any]]) -> None:
    store = Store(":memory:")
    with store.session() as con:
        full_scan_views(con)
    for kind, arg in ops:
        if kind == "write":
            write(store, arg)
            write(store, arg[: len(arg) // 2])  # existing keys again: skipped, never counted twice
        else:
            store.delete_run(arg)
        assert_same_as_full_scan(store)


def test_existing_keys_are_skipped_and_the_counts_say_so() -> None:
    store = Store(":memory:")
    batch = [
        (("a", 0, "ocr", 0, 0), 64, 32, "1", "1", True),
        (("a", 0, "ocr", 1, 0), 0, None, "1", "1", False),
    ]
    write(store, batch)
    s, c = (
        [SampleRow("a", 0, "ocr", "1", "ocr/00000", 0, "x", {}, None, 0, 0, "0" * 64, "x.png")],
        [ScoreRow("a", 0, "ocr", "1", "ocr/00000", None, 0, "ocr", "1", 99.0, None)],
    )
    assert store.add_samples(s, c) == (
        0,
        0,
    )  # both keys exist: nothing inserted, the sums unchanged
    ocr = next(r for r in store.benchmark_scores(run_ids=["a"]) if r["scorer"] == "ocr")
    assert ocr["n_images"] == 2 and ocr["image_mean"] == 0.5 and ocr["reward_mean"] == 0.5


def test_migration_003_fills_the_summaries_from_existing_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))  # a store as flow-opd wrote it before the summaries (001 + 002)
    con.execute(
        "CREATE TABLE _migrations (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
        "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    for m in migrations()[:2]:
        con.execute(m.sql)
        con.execute("INSERT INTO _migrations (id, name) VALUES (?, ?)", [m.id, m.name])
    con.execute("INSERT INTO runs VALUES ('a', now(), 'm', NULL, '1', '{}', '{}'), "
                "('b', now(), 'm', NULL, '1', '{}', '{}')")  # fmt: skip
    con.execute(
        """INSERT INTO samples SELECT r, s, b, '1', b || '/' || p, p, 'x', '{}',
                  CASE WHEN b = 'geneval' THEN 'task' || (p % 3) END, j, p, 'h', 'x.png', now()
           FROM (VALUES ('a'), ('b')) t(r), range(2) u(s), (VALUES ('geneval'), ('ocr')) v(b),
                range(7) w(p), range(2) x(j)"""
    )
    con.execute(
        """INSERT INTO scores SELECT run_id, step, benchmark, benchmark_version, prompt_id, grp, image_index,
                  benchmark, '1', (hash(prompt_id || image_index || run_id) % 100) / 64, NULL, NULL, now()
           FROM samples"""
    )
    con.execute("DELETE FROM scores WHERE prompt_id = 'ocr/3' AND run_id = 'b'")
    con.close()
    store = Store(path)  # migrates: 003 creates and fills the summaries
    assert [m[0] for m in store.applied_migrations()] == [m.id for m in migrations()]
    with store.session() as con:
        full_scan_views(con)
        assert con.execute("SELECT count(*) FROM score_sums").fetchone() == (8,)
    assert_same_as_full_scan(store)
    with (
        store.session() as con
    ):  # rows written by plain SQL: rebuild_summaries catches the summaries up
        con.execute("DELETE FROM scores WHERE run_id = 'a' AND step = 1")
    store.rebuild_summaries()
    assert_same_as_full_scan(store)
