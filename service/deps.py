"""FastAPI dependencies: the store, the settings, the scorers' batchers, the read cache and the write token.

The app's ``Store`` holds one connection (``Store.hold``) shared by the request threads: each session gets its
own cursor of it. Between requests the connection is handed over to another process that waits for the file
(a ``harness eval`` taking the write lock, a CLI command: ``results.connections``), and closed after
``store_idle_s`` seconds without a request. Each request gets its own
shallow copy of the app's store (same held connection, its own session slot). A ``:memory:`` store (tests) has
one connection; its requests take turns.

Dependencies that never block are ``async def``: FastAPI runs a sync dependency in its thread pool, a thread hop
per dependency per request that the scoring path does not need.
"""

from __future__ import annotations

import copy
import hmac
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request

from results.store import Store
from service.batching import Batcher
from service.settings import Settings

T = TypeVar("T")


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> Iterator[Store]:
    """This request's handle on the app's store."""
    store: Store = request.app.state.store
    if not store.memory:
        yield copy.copy(store)
        return
    with request.app.state.memory_lock:
        yield store


async def get_batchers(request: Request) -> dict[str, Batcher]:
    """Served scorer name -> its batcher."""
    batchers: dict[str, Batcher] = request.app.state.batchers
    return batchers


async def get_cache(request: Request) -> ReadCache:
    """The app's read cache."""
    cache: ReadCache = request.app.state.cache
    return cache


async def require_token(request: Request) -> None:
    """Allow the request only with ``Authorization: Bearer <the server's token>``: 401 without, 403 wrong."""
    expected: str | None = request.app.state.token
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not header or scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(
            401,
            "this endpoint needs `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if expected is None:
        raise HTTPException(
            403,
            "writes are disabled on this server: start it with FLOW_OPD_TOKEN or "
            "FLOW_OPD_TOKEN_FILE set",
        )
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPException(403, "the bearer token is not this server's write token")


class ReadCache:
    """Query results keyed by name and arguments, valid while the store's files are unchanged.

    The leaderboard is read far more often than it changes. A cached answer is served while the database file
    and its WAL have the same (inode, size, mtime) as when the answer was computed, so most reads open no
    connection at all and a writer in another process finds the file unlocked. The stamp is taken before the
    query: a write that lands during it makes the next read recompute, never serve older data as newer.
    """

    def __init__(self, path: Path | None, size: int = 256) -> None:
        self.path = path
        self.size = size
        self._items: OrderedDict[Any, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._computing: dict[Any, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def stamp(self) -> Any:
        """The store files' identity now, or None when there is nothing to watch (memory store)."""
        if self.path is None:
            return None
        out = []
        for p in (self.path, Path(f"{self.path}.wal")):
            try:
                st = os.stat(p)
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def _cached(self, key: Any, stamp: Any) -> tuple[bool, Any]:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == stamp:
                self._items.move_to_end(key)
                self.hits += 1
                return True, hit[1]
        return False, None

    def get(self, key: Any, compute: Callable[[], T]) -> T:
        """The cached value of ``key`` if the store is unchanged, else ``compute()`` (and cache it).

        Concurrent misses of one key compute it once: the others wait for that answer (no stampede of
        identical queries after every write)."""
        stamp = self.stamp()
        if stamp is None:
            self.misses += 1
            return compute()
        found, value = self._cached(key, stamp)
        if found:
            return value  # type: ignore[no-any-return]
        with self._lock:
            key_lock = self._computing.setdefault(key, threading.Lock())
        with key_lock:
            stamp = self.stamp()
            found, value = self._cached(key, stamp)
            if found:
                return value  # type: ignore[no-any-return]
            value = compute()
            with self._lock:
                self.misses += 1
                self._items[key] = (stamp, value)
                self._items.move_to_end(key)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
                if len(self._computing) > 4 * self.size:
                    self._computing.clear()  # idle locks only matter while held; drop the old ones
        return value

    def clear(self) -> None:
        """Forget everything (after this server's own writes, which may not change the stamp's mtime)."""
        with self._lock:
            self._items.clear()


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
BatchersDep = Annotated[dict[str, Batcher], Depends(get_batchers)]
CacheDep = Annotated[ReadCache, Depends(get_cache)]
TokenDep = Depends(require_token)
