"""Opening a store's DuckDB file (waiting out another process's lock), and a connection held across calls.

DuckDB lets one process at a time open a file for writing, and while it is open there (read-write or
read-only) no other process can write it. Opening costs 20-40 ms (and closing a written file checkpoints it),
so the store's long-lived users keep their connection, and hand it over when another process needs the file:

- a command (``harness leaderboard``, ``runs``, ...) opens the file once and keeps it until it exits;
- ``harness eval`` and the service hold one connection (``Held``) for as long as they run, and close it
  between uses (between two batches, between two requests) as soon as another process is waiting for the
  file, opening it again when they next need it;
- a process that finds the file locked says so by touching ``<store>.waiting`` (``waiting_file``) on each try,
  every 50 ms, for up to ``lock_timeout`` seconds; a holder polls that file (a ``stat``) every 25 ms.

So with nobody waiting, a writer pays nothing per batch for the lock; with a reader waiting, it pays one open
per batch, as a store opened per call always did.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from results import integrity
from results.integrity import StoreError

log = logging.getLogger(__name__)

WAIT_S = 0.05  # a waiting process retries (and touches the waiting file) this often
FRESH_S = 1.0  # a waiting file touched longer ago than this is stale (its process gave up or died)


def waiting_file(path: Path) -> Path:
    """The file a process touches while it waits for ``path``'s lock."""
    return path.with_name(path.name + ".waiting")


def someone_waits(path: Path) -> bool:
    """Whether another process has been waiting for ``path``'s lock in the last ``FRESH_S`` seconds."""
    try:
        return time.time() - os.stat(waiting_file(path)).st_mtime < FRESH_S
    except OSError:
        return False


def _touch(path: Path) -> None:
    try:
        waiting_file(path).touch()
    except OSError:  # a read-only folder: holders will not yield early, the wait is just longer
        pass


def open_file(path: Path, *, read_only: bool, lock_timeout: float) -> duckdb.DuckDBPyConnection:
    """Connect to ``path``, retrying while another process holds its lock (up to ``lock_timeout`` s, touching
    ``waiting_file`` so a holder hands it over); damage and other failures are one-line ``StoreError``s."""
    deadline = time.monotonic() + lock_timeout
    waited = False
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            if waited:
                waiting_file(path).unlink(missing_ok=True)
            return con
        except duckdb.IOException as e:
            msg = str(e)
            locked = "could not set lock" in msg.lower() or "conflicting lock" in msg.lower()
            if not locked and integrity.is_damage(
                e
            ):  # the lock message names paths, which may say "corrupt"
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
            _touch(path)
            waited = True
            time.sleep(WAIT_S)
        except duckdb.Error as e:
            if integrity.is_damage(e):
                raise integrity.damaged(path, integrity.first_line(e)) from None
            raise StoreError(
                f"cannot open store {path}: {str(e).splitlines()[0]}; it was left untouched"
            ) from None


class Held:
    """One DuckDB connection shared by threads: each user gets its own cursor (DuckDB's way to use one
    database from several threads). With ``path``, the connection is closed while no cursor is in use and
    another process waits for the file; with ``idle_s`` too, once no cursor has been in use for that long.
    The next user opens it again."""

    def __init__(
        self,
        connect: Callable[[], duckdb.DuckDBPyConnection],
        *,
        path: Path | None = None,
        idle_s: float | None = None,
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> None:
        self._connect = connect
        self.path = path
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._con = con
        self._users = 0
        self._last = time.monotonic()
        self._stop = threading.Event()
        if path is not None:
            threading.Thread(target=self._reap, name="store-hand-over", daemon=True).start()

    @property
    def is_open(self) -> bool:
        """Whether the connection is open now."""
        return self._con is not None

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor on the held connection (opened first if it was closed)."""
        with self._lock:
            if self._con is None:
                if self.path is not None:  # just handed over: let the waiting process in first
                    until = time.monotonic() + FRESH_S
                    while someone_waits(self.path) and time.monotonic() < until:
                        time.sleep(WAIT_S / 5)
                self._con = self._connect()
            try:
                cur = self._con.cursor()
            except (
                duckdb.Error
            ):  # a connection that died (closed under us): the next user opens anew
                self._drop()
                raise
            self._users += 1
        try:
            yield cur
        finally:
            cur.close()
            with self._lock:
                self._users -= 1
                self._last = time.monotonic()

    def _reap(self) -> None:
        assert self.path is not None
        while not self._stop.wait(WAIT_S / 2):
            if self._con is None or self._users:
                continue
            idle = self.idle_s is not None and time.monotonic() - self._last >= self.idle_s
            if idle or someone_waits(self.path):
                with self._lock:
                    if self._con is not None and self._users == 0:
                        self._drop()

    def _drop(self) -> None:
        """Close the connection (an error closing it is logged, never fatal to the holder) and forget it."""
        con, self._con = self._con, None
        if con is not None:
            try:
                con.close()
            except duckdb.Error as e:
                log.warning("closing the store connection failed: %s", e)

    def close(self) -> None:
        """Close the connection and stop the idle timer."""
        self._stop.set()
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
