"""Opening a store's DuckDB file (waiting out another process's lock), and a connection held across calls.

DuckDB lets one process at a time open a file for writing, and while it is open there (read-write or
read-only) no other process can write it. So what a process keeps open decides who else can use the store:

- a command (``harness leaderboard``, ``runs``, ...) opens the file once and keeps it until it exits;
- ``harness eval`` keeps its connection for the whole run (readers in other processes wait for it);
- the service keeps one connection between requests and closes it after ``idle_s`` seconds without one,
  so an evaluation started next to it gets the file within ``idle_s`` (plus its lock wait).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from results import integrity
from results.integrity import StoreError


def open_file(path: Path, *, read_only: bool, lock_timeout: float) -> duckdb.DuckDBPyConnection:
    """Connect to ``path``, retrying while another process holds its lock (up to ``lock_timeout`` s); damage
    and other failures are one-line ``StoreError``s."""
    deadline = time.monotonic() + lock_timeout
    wait = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as e:
            msg = str(e)
            if integrity.is_damage(e):
                raise integrity.damaged(path, integrity.first_line(e)) from None
            if "lock" not in msg.lower():
                raise StoreError(
                    f"cannot open store {path}: {msg.splitlines()[0]}; it was left untouched"
                ) from None
            if time.monotonic() > deadline:
                raise StoreError(
                    f"store {path} is locked by another process (a running `harness eval`?) "
                    f"for more than {lock_timeout:.0f} s; try again when it is done"
                ) from None
            time.sleep(wait)
            wait = min(wait * 2, 1.0)
        except duckdb.Error as e:
            if integrity.is_damage(e):
                raise integrity.damaged(path, integrity.first_line(e)) from None
            raise StoreError(
                f"cannot open store {path}: {str(e).splitlines()[0]}; it was left untouched"
            ) from None


class Held:
    """One DuckDB connection shared by threads: each user gets its own cursor (DuckDB's way to use one
    database from several threads); with ``idle_s``, the connection is closed once no cursor has been in use
    for that long, and opened again by the next user."""

    def __init__(
        self,
        connect: Callable[[], duckdb.DuckDBPyConnection],
        *,
        idle_s: float | None = None,
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> None:
        self._connect = connect
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._con = con
        self._users = 0
        self._last = time.monotonic()
        self._stop = threading.Event()
        if idle_s is not None:
            threading.Thread(target=self._reap, name="store-idle-close", daemon=True).start()

    @property
    def is_open(self) -> bool:
        """Whether the connection is open now."""
        return self._con is not None

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor on the held connection (opened first if it was closed)."""
        with self._lock:
            if self._con is None:
                self._con = self._connect()
            self._users += 1
            cur = self._con.cursor()
        try:
            yield cur
        finally:
            cur.close()
            with self._lock:
                self._users -= 1
                self._last = time.monotonic()

    def _reap(self) -> None:
        assert self.idle_s is not None
        while not self._stop.wait(max(self.idle_s / 4, 0.01)):
            with self._lock:
                if (
                    self._con is not None
                    and self._users == 0
                    and time.monotonic() - self._last >= self.idle_s
                ):
                    self._con.close()
                    self._con = None

    def close(self) -> None:
        """Close the connection and stop the idle timer."""
        self._stop.set()
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
