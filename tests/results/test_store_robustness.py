"""A store written by an older flow-opd opened read-only, identical images written at once, a lock message that
names a path saying "corrupt", and a ROLLBACK that must not hide the error it follows."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import duckdb
import pytest

from results import writes
from results.connections import Held, open_file
from results.imagefiles import write_image_file
from results.integrity import StoreDamaged, StoreError
from results.store import RunRecord, Store, migrations


def _old_store(path: Path, upto: int) -> None:
    """A store as a flow-opd that knew migrations 1..upto left it (each applied in turn, as it would have)."""
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE _migrations (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
        "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    for m in migrations()[:upto]:
        con.execute(m.sql)
        con.execute("INSERT INTO _migrations (id, name) VALUES (?, ?)", [m.id, m.name])
    con.execute(
        "INSERT INTO runs (run_id, model, lora, protocol_version, protocol, provenance) "
        "VALUES ('old', 'mini', NULL, '1', '{}', '{}')"
    )
    con.close()


def test_a_read_only_open_upgrades_a_store_of_an_older_flow_opd(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    _old_store(path, len(migrations()) - 1)
    store = Store(
        path, read_only=True
    )  # reading it used to fail on a table the last migration adds
    assert [r["run_id"] for r in store.runs()] == ["old"]
    assert [m[0] for m in store.applied_migrations()] == [m.id for m in migrations()]


def test_an_older_store_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    _old_store(path, len(migrations()) - 1)
    path.chmod(0o444)
    if os.access(path, os.W_OK):  # root writes anyway: nothing to test
        pytest.skip("this user can write a read-only file")
    with pytest.raises(StoreError, match="older flow-opd and needs a one-time upgrade"):
        Store(path, read_only=True)


def test_identical_images_written_by_many_threads_at_once(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def write() -> None:
        start.wait()
        for _ in range(20):
            try:
                write_image_file(tmp_path, png)
            except BaseException as e:  # noqa: BLE001 - collected for the assertion
                errors.append(e)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [
        f"{hashlib.sha256(png).hexdigest()}.png"
    ]


def test_a_lock_held_on_a_path_that_says_corrupt_is_a_lock_not_damage(tmp_path: Path) -> None:
    folder = tmp_path / "corrupt-checksum"
    folder.mkdir()
    path = folder / "s.duckdb"
    Store(path).add_run(RunRecord("r", "mini", None, {}, {}, "1"))
    # the lock message DuckDB gives another process names both paths; the classifier must see a lock in it
    msg = (
        f'IO Error: Could not set lock on file "{path}": Conflicting lock is held in '
        f"/usr/bin/python (PID 1) by user root. corrupt checksum"
    )
    calls = {"n": 0}

    def connect(*_args: object, **_kwargs: object) -> duckdb.DuckDBPyConnection:
        calls["n"] += 1
        raise duckdb.IOException(msg)

    real = duckdb.connect
    duckdb.connect = connect  # type: ignore[assignment]
    try:
        with pytest.raises(StoreError, match="locked by another process") as info:
            open_file(path, read_only=True, lock_timeout=0.0)
    finally:
        duckdb.connect = real  # type: ignore[assignment]
    assert not isinstance(info.value, StoreDamaged) and calls["n"] >= 1


def test_rollback_after_an_ended_transaction_does_not_hide_the_error() -> None:
    con = duckdb.connect(":memory:")
    writes.rollback(con)  # no transaction active: DuckDB raises, the helper must not
    con.close()


def test_a_held_connection_that_died_is_opened_anew_by_the_next_user(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    Store(path)
    opened: list[duckdb.DuckDBPyConnection] = []

    def connect() -> duckdb.DuckDBPyConnection:
        opened.append(duckdb.connect(str(path)))
        return opened[-1]

    held = Held(connect)
    with held.cursor() as cur:
        assert cur.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    opened[0].close()  # dies under the holder (e.g. a failed checkpoint)
    with pytest.raises(duckdb.Error), held.cursor():
        pass
    with held.cursor() as cur:  # before: every later user failed with "Connection already closed!"
        assert cur.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    assert len(opened) == 2
    held.close()
