"""One evaluation of a run at a time on a store: an exclusive lock file next to the store.

``evaluate`` holds the lock of its run from planning to its last commit. A second evaluation of the same run on
the same store (another ``harness eval``, a trainer's in-loop evaluation) waits for it, then plans against what
the first one stored and does only what is still missing: two concurrent evaluations never both do the work.
Evaluations of different runs do not wait for each other.

The lock is ``flock`` on ``<store>.locks/<run>-<hash>.lock``. The kernel releases it when its process ends,
SIGKILL included, so a lock is never stale; the small file stays and is reused. On a system without ``fcntl``
(Windows) evaluations are not serialised.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


def lock_path(store_path: Path, run_id: str) -> Path:
    """Where the lock of ``run_id`` in the store at ``store_path`` lives."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")[:60] or "run"
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return store_path.with_name(store_path.name + ".locks") / f"{slug}-{digest}.lock"


@contextmanager
def run_lock(store_path: Path, run_id: str) -> Iterator[None]:
    """Hold the lock of ``run_id`` on the store at ``store_path``; waits (saying so once) while another process
    holds it."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = lock_path(store_path, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 100, 0).decode(errors="replace").strip() or "another process"
            log.warning(
                "run %s is being evaluated into %s by %s; waiting for it to finish",
                run_id,
                store_path,
                holder,
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
