"""Store integrity: a damaged DuckDB file is refused with one line, before anything reads half of it or writes it.

DuckDB (2.0) keeps a checksum per block (256 KiB) and verifies it whenever it reads the block: a changed byte
gives ``Corrupt database file: computed checksum ... does not match stored checksum ... in block at location N``,
a file cut short ``IO Error: Could not read enough bytes from file ...``. It reads a block only when a query
needs it, so without help damage shows up late, as a traceback in the middle of a command. Hence:

- ``check_size``: the file must hold every block in use (three 4 KiB headers, then ``block_size`` per block,
  ``PRAGMA database_size`` / ``pragma_storage_info``). Costs a few ms; finds a truncated file.
- ``read_tables``: reads every row of every table (a hash per row), so DuckDB verifies the checksum of every
  block that holds table data (16 ms for 3,000 samples and 6,000 scores, 47 ms for 100,000 and 200,000 on a
  2-core machine). ``Store`` runs both when it opens a file for writing, before its first write; a read-only
  open runs ``check_size`` alone, so a command that only reads does not pay a full read of a large store:
  damage in a block its query reads is turned into the same one line when it is met (``is_damage``).
- ``is_damage`` / ``damaged``: any later DuckDB error that means damage (a block read lazily, e.g. an index block
  an insert needs) becomes the same one-line ``StoreDamaged``, never a traceback.
- ``check_images``: the sha256 of every image file (``harness store check``), which finds changed or missing PNGs.

Index blocks are read only when an insert or a checkpoint needs them; damage there is refused when it is met
(the same one line), not at open.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import duckdb

from flowbase.errors import UserError

HEADER_BYTES = 3 * 4096  # DuckDB's main header and its two database headers precede the first block
_DAMAGE = ("corrupt database file", "could not read enough bytes", "checksum", "corrupt")


class StoreError(UserError):
    """The store cannot be opened or written as asked; the message says why and what to do."""


class StoreDamaged(StoreError):
    """The store's database file is damaged (truncated, or bytes changed): restore it from a backup."""


def damaged(path: Path, what: str) -> StoreDamaged:
    """The one-line refusal of a damaged store file: what is wrong and what to do."""
    return StoreDamaged(
        f"store {path} is damaged ({what}); it was left untouched. Restore {path.name} from a backup, or "
        f"move it away to start a new store; `harness store check --store {path}` reports what is wrong"
    )


def is_damage(error: BaseException) -> bool:
    """Whether a DuckDB error means the file is damaged (not a lock, a full disk or a bad query)."""
    if not isinstance(error, duckdb.Error):
        return False
    msg = str(error).lower()
    return any(k in msg for k in _DAMAGE)


def first_line(error: BaseException) -> str:
    """A DuckDB message's first line."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def check_size(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """``StoreDamaged`` when ``path`` is shorter than the blocks it uses (a truncated copy or disk): at least
    ``used_blocks`` of ``PRAGMA database_size``, and every block a table's rows or the metadata sit in (free
    blocks at the end may be cut off by DuckDB itself). Skipped while a WAL is pending."""
    if not path.is_file() or Path(f"{path}.wal").exists():
        return
    row = con.execute(
        "SELECT block_size, used_blocks, total_blocks FROM pragma_database_size()"
    ).fetchone()
    if row is None or not row[1]:
        return
    block_size, blocks = int(row[0]), int(row[1])
    have = path.stat().st_size
    if have >= HEADER_BYTES + block_size * int(row[2]):
        return  # every block the file ever held is there (the per-table look below costs ~60 ms at 1M rows)
    ids = [
        con.execute(f"SELECT max(block_id) FROM pragma_storage_info('{name}')").fetchone()
        for name in tables(con)
    ]
    ids.append(con.execute("SELECT max(block_id) FROM pragma_metadata_info()").fetchone())
    blocks = max([blocks] + [int(r[0]) + 1 for r in ids if r and r[0] is not None])
    want = HEADER_BYTES + block_size * blocks
    if have < want:
        raise damaged(
            path, f"the file is {have} bytes but its {blocks} blocks need {want}: truncated"
        )


def tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The store's base tables (views excluded)."""
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
        "ORDER BY table_name"
    ).fetchall()
    return [r[0] for r in rows]


def read_tables(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, int]:
    """Read every row of every table (DuckDB checks each block's checksum); table -> rows. ``StoreDamaged``
    naming the table when a block is damaged."""
    counts: dict[str, int] = {}
    for name in tables(con):
        try:
            row = con.execute(f'SELECT count(*), sum(hash(t)) FROM "{name}" AS t').fetchone()
        except duckdb.Error as e:
            if is_damage(e):
                raise damaged(path, f"table {name}: {first_line(e)}") from None
            raise
        counts[name] = int(row[0]) if row else 0
    return counts


def verify(con: duckdb.DuckDBPyConnection, path: Path, *, full: bool = True) -> dict[str, int]:
    """``check_size``, then with ``full`` ``read_tables`` (table -> rows; {} without): the check a store passes
    before it is written (full) or read (size only)."""
    try:
        check_size(con, path)
    except duckdb.Error as e:
        if is_damage(e):
            raise damaged(path, first_line(e)) from None
        raise
    return read_tables(con, path) if full else {}


def check_images(images_dir: Path, images: Iterable[tuple[str, str]]) -> list[str]:
    """One line per image (relative path, sha256) whose file is missing or does not match its sha256."""
    problems = []
    for rel, sha in images:
        file = images_dir / rel
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            problems.append(f"{file}: missing")
            continue
        except OSError as e:
            problems.append(f"{file}: cannot be read ({e.strerror})")
            continue
        if hashlib.sha256(data).hexdigest() != sha:
            problems.append(f"{file}: its bytes do not match its sha256 {sha[:12]}... (changed)")
    return problems
