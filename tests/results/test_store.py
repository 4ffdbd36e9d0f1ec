"""The DuckDB store: schema vs migrations, refusing unreadable or foreign files, idempotent writes, locking."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from results.store import RunRecord, SampleRow, ScoreRow, Store, StoreError, migrations


def _catalog(con: duckdb.DuckDBPyConnection) -> tuple[list[tuple], list[str]]:
    cols = con.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_name <> '_migrations' ORDER BY table_name, ordinal_position"
    ).fetchall()
    views = [
        r[0]
        for r in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
        ).fetchall()
    ]
    return cols, views


def test_schema_sql_equals_the_migrations_applied_in_order(tmp_path: Path) -> None:
    fresh = Store(tmp_path / "fresh.duckdb")  # built from schema.sql
    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))  # a store that only ever saw migration 001
    con.execute(
        "CREATE TABLE _migrations (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    first = migrations()[0]
    con.execute(first.sql)
    con.execute("INSERT INTO _migrations (id, name) VALUES (1, ?)", [first.name])
    con.close()
    upgraded = Store(old)
    assert (
        upgraded.applied_migrations()
        == fresh.applied_migrations()
        == [(m.id, m.name) for m in migrations()]
    )
    with fresh.session() as a, upgraded.session() as b:
        assert _catalog(a) == _catalog(b)
        assert {"runs", "samples", "scores"} <= {r[0] for r in _catalog(a)[0]}
        assert {"sample_scores", "group_scores", "benchmark_scores", "main_table"} <= set(
            _catalog(a)[1]
        )


def test_unreadable_files_are_refused_and_left_untouched(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"PK\x03\x04 this is a zip, not a database" * 50)
    before = garbage.read_bytes()
    with pytest.raises(StoreError, match="not a DuckDB database"):
        Store(garbage)
    assert garbage.read_bytes() == before

    # a real DuckDB file cut short: DuckDB cannot open it, and we do not "repair" it by recreating
    good = tmp_path / "good.duckdb"
    s = Store(good)
    s.add_samples([_sample("r", "p/0")], [])
    cut = tmp_path / "cut.duckdb"
    cut.write_bytes(good.read_bytes()[:5000])
    before = cut.read_bytes()
    with pytest.raises(StoreError, match="left untouched"):
        Store(cut)
    assert cut.read_bytes() == before

    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.close()
    before = other.read_bytes()
    with pytest.raises(StoreError, match="not a flow-opd results store"):
        Store(other)
    assert other.read_bytes() == before

    with pytest.raises(StoreError, match="no results store"):
        Store(tmp_path / "missing.duckdb", read_only=True)
    assert not (tmp_path / "missing.duckdb").exists()


def test_a_store_from_a_newer_flow_opd_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    Store(path)
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO _migrations (id, name) VALUES (999, 'future')")
    con.close()
    with pytest.raises(StoreError, match="newer flow-opd"):
        Store(path)
    with pytest.raises(StoreError, match="newer flow-opd"):
        Store(path, read_only=True)


def _sample(run: str, pid: str, j: int = 0, grp: str | None = None) -> SampleRow:
    return SampleRow(
        run,
        0,
        "b",
        "1",
        pid,
        int(pid.split("/")[1]),
        "a prompt",
        {"k": 1},
        grp,
        j,
        7,
        "ab" * 32,
        "ab/x.png",
    )


def _score(run: str, pid: str, value: float, j: int = 0, scorer: str = "s") -> ScoreRow:
    return ScoreRow(
        run, 0, "b", "1", pid, None, j, scorer, "1", value, value / 2, {"text": "hi", "n": 2}
    )


def test_writes_are_idempotent_and_keep_details(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.duckdb")
    rows = (
        [_sample("r", f"b/{i}") for i in range(3)],
        [_score("r", f"b/{i}", i / 10) for i in range(3)],
    )
    assert s.add_samples(*rows) == (3, 3)  # rows inserted
    assert s.add_samples(*rows) == (0, 0)  # a resumed batch that had in fact committed: nothing new
    # a second write with another value for an existing key does not overwrite the first
    assert s.add_samples([], [_score("r", "b/0", 99.0)]) == (0, 0)
    assert s.count_rows() == {"runs": 0, "samples": 3, "scores": 3}
    got = s.sample_scores("r")
    assert [r["value"] for r in got] == [0.0, 0.1, 0.2]
    assert got[1]["details"] == '{"n": 2, "text": "hi"}' and got[1]["reward"] == 0.05


def test_delete_run_removes_that_run_only_and_a_rerun_writes_afresh(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.duckdb")
    for run in ("old", "keep"):
        s.add_run(RunRecord(run, "mini", None, {"steps": 10}, {}))
        s.add_samples(
            [_sample(run, f"b/{i}") for i in range(3)],
            [_score(run, f"b/{i}", i / 10) for i in range(3)],
        )
    assert s.delete_run("old") == {"scores": 3, "samples": 3, "runs": 1}
    assert s.count_rows() == {"runs": 1, "samples": 3, "scores": 3}
    assert s.run_ids() == ["keep"] and s.get_run("old") is None
    assert s.delete_run("never") == {"scores": 0, "samples": 0, "runs": 0}
    # the same keys can be written again: new values, not the deleted run's
    s.add_samples([_sample("old", "b/0")], [_score("old", "b/0", 0.9)])
    assert [r["value"] for r in s.sample_scores("old")] == [0.9]


def test_images_are_content_addressed(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.duckdb")
    sha, rel = s.put_image(b"\x89PNG fake bytes")
    assert sha == hashlib.sha256(b"\x89PNG fake bytes").hexdigest()
    assert rel == f"{sha[:2]}/{sha}.png" and s.image_file(rel) == tmp_path / "images" / rel
    assert s.put_image(b"\x89PNG fake bytes") == (sha, rel)
    assert s.read_image(rel, sha) == b"\x89PNG fake bytes"
    s.image_file(rel).write_bytes(b"tampered")
    with pytest.raises(StoreError, match="modified"):
        s.read_image(rel, sha)


def test_a_reader_waits_for_the_writer_then_gives_up_clearly(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    Store(path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('ok', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="locked by another process"):
            Store(path, read_only=True, lock_timeout=0.5)
        assert time.monotonic() - t0 >= 0.5
    finally:
        holder.kill()
        holder.wait()
    assert (
        Store(path, read_only=True).count_rows()["runs"] == 0
    )  # free again once the writer is gone
