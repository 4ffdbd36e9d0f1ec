"""A store that holds its connection (the service, `harness eval`) hands the file over to another process that
waits for it, serves threads through cursors, and a command opens the file once."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from results import connections
from results.store import Store
from tests.support.runs import put

ROOT = Path(__file__).resolve().parents[2]


def test_a_held_store_is_handed_over_to_a_process_waiting_for_it(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    holder = Store(path).hold()
    put(holder, "a", "ocr", "ocr", [0.5, 1.0])  # opens the held connection and keeps it
    assert holder._held is not None and holder._held.is_open
    reader = subprocess.run(
        [sys.executable, "-c", "from results.store import Store; import sys; "
         "print(Store(sys.argv[1], read_only=True, lock_timeout=20).count_rows()['scores'])", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert reader.returncode == 0, reader.stderr
    assert reader.stdout.strip() == "2"
    put(holder, "b", "ocr", "ocr", [0.25])  # the holder opens it again for its next write
    assert holder.count_rows()["scores"] == 3
    holder.close()


def test_a_held_store_serves_threads_each_on_its_own_cursor(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb").hold()
    put(store, "a", "ocr", "ocr", [0.5, 1.0])
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(20):
                (row,) = store.benchmark_scores(benchmark="ocr")
                assert row["n_images"] == 2
        except BaseException as e:  # noqa: BLE001 - collected for the main thread
            errors.append(e)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    assert errors == []


def test_a_command_store_opens_the_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.duckdb"
    put(Store(path), "a", "ocr", "ocr", [0.5, 1.0])
    opened: list[str] = []
    real = duckdb.connect

    def counting(*args: object, **kw: object) -> duckdb.DuckDBPyConnection:
        opened.append(str(args[0]))
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(connections.duckdb, "connect", counting)
    with Store(path, read_only=True, keep_open=True) as st:
        st.runs()
        st.leaderboard()
        st.benchmark_scores()
        st.history("a")
    assert opened == [str(path)]


def test_a_command_store_is_handed_over_to_a_writer_waiting_for_it(tmp_path: Path) -> None:
    """A long read command (a report's thumbnails) holds its store; an eval waiting to write gets the file."""
    path = tmp_path / "s.duckdb"
    put(Store(path), "a", "ocr", "ocr", [0.5, 1.0])
    with Store(path, read_only=True, keep_open=True) as reader:
        assert reader.count_rows()["scores"] == 2
        writer = subprocess.run(
            [sys.executable, "-c", "from results.store import Store, RunRecord; import sys; "
             "Store(sys.argv[1], lock_timeout=20).add_run(RunRecord('b', 'm', None, {}, {}, '1'))",
             str(path)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert writer.returncode == 0, writer.stderr
        assert reader.count_rows()["runs"] == 1  # opened again after the hand-over: b is there
