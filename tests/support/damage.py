"""Damaging a store file the ways disks and copies do: cut short, or random bytes inside a table's data."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import duckdb

HEADER_BYTES = 3 * 4096  # DuckDB's file header and two database headers precede block 0


def digest(path: Path) -> tuple[int, str]:
    """(size, sha256) of a file: what must not change when a damaged store is refused."""
    data = path.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def truncate_half(path: Path) -> None:
    """Cut the file to half its size (an interrupted copy)."""
    os.truncate(path, path.stat().st_size // 2)


def table_offset(path: Path, table: str = "samples") -> int:
    """The file offset of a block holding ``table``'s rows (located with a read-only connection)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        (block_size,) = con.execute("SELECT block_size FROM pragma_database_size()").fetchone()
        row = con.execute(
            f"SELECT block_id, block_offset FROM pragma_storage_info('{table}') "
            "WHERE block_id >= 0 ORDER BY count DESC LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    assert row is not None, f"table {table} has no rows on disk"
    return HEADER_BYTES + row[0] * block_size + 8 + row[1]


def scribble(
    path: Path, table: str = "samples", n: int = 64, seed: int = 0, offset: int | None = None
) -> int:
    """Overwrite ``n`` random bytes inside a block holding ``table``'s rows (at ``offset`` when given, e.g.
    located before a process in this one opened the file); returns the file offset."""
    offset = table_offset(path, table) if offset is None else offset
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(random.Random(seed).randbytes(n))
    return offset
