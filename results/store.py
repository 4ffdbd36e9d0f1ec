"""The results store: one DuckDB file of runs, samples and scores, and a folder of images named by their hash.

``Store(path)`` is a handful of verbs over plain SQL (no ORM). Aggregates are SQL views (``schema.sql``), so the
numbers in a table, the leaderboard and the service all come from one place. Layout next to the database file::

    results/flow-opd.duckdb        runs, samples, scores, _migrations (+ the .wal DuckDB keeps while writing)
    results/images/ab/ab12....png  every generated image, named by the sha256 of its PNG bytes

Concurrency: DuckDB lets one process write a file, and while a process has it open (read-write or read-only)
no other process can write it. What each user keeps open is therefore chosen (``results.connections``): a
``Store`` opens a connection per verb and closes it straight after, unless it holds one: ``with
store.session():`` for a burst of queries, ``keep_open=True`` for a command's lifetime (the CLI opens once per
command), ``store.holding()`` for a whole evaluation (``harness eval``) and ``store.hold(idle_s)`` for the
service (one connection shared by threads through cursors). A held connection is closed between uses
while another process waits for the file, and reopened by the next use. A process that finds the file locked
retries for ``lock_timeout`` seconds before it gives up with a clear error. Each batch
of rows is written in one transaction with the summaries it changes (``results.writes``): a process killed at any
point leaves whole batches only (DuckDB replays or discards its WAL on the next open), and re-inserting an
existing key is a no-op, so a resumed run never duplicates a row.

Aggregates read the summaries (``sample_sums``, ``score_sums``, ``group_sums``: counts and sums per run, step,
benchmark, scorer and group), not the millions of score rows: the views in ``schema.sql`` give the numbers a
full scan of ``scores`` gives.

Safety: a file that is not a DuckDB database, or a DuckDB database that is not a flow-opd store, or a store
written by a newer flow-opd, is refused with one line saying so; it is never overwritten or migrated blindly.
A damaged file is refused the same way (``results.integrity``): one opened for writing is read in full before
the first write; one opened read-only gets the cheap size check, and damage in a block a read meets is the same
one line when it is met.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from results import integrity, writes
from results.connections import Held, open_file
from results.imagefiles import read_image_file, write_image_file
from results.integrity import StoreDamaged, StoreError
from results.records import (
    RunRecord,
    SampleRow,
    ScoreRow,
    check_run_id,
    contamination,
    to_json,
)

__all__ = [
    "RunRecord",
    "SampleRow",
    "ScoreRow",
    "Store",
    "StoreDamaged",
    "StoreError",
    "contamination",
    "to_json",
]

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SCHEMA = HERE / "schema.sql"
MIGRATIONS = HERE / "migrations"
DEFAULT_STORE = Path("results") / "flow-opd.duckdb"


def default_store() -> Path:
    """The store every command uses when none is named: ``$FLOW_OPD_STORE``, else ``results/flow-opd.duckdb``."""
    return Path(os.environ.get("FLOW_OPD_STORE", str(DEFAULT_STORE)))


_MAGIC = b"DUCK"  # DuckDB's file header carries this at byte 8


@dataclass(frozen=True)
class Migration:
    id: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The numbered migrations shipped in ``results/migrations`` (``NNN_<what>.sql``), in order."""
    out = []
    for p in sorted(MIGRATIONS.glob("*.sql")):
        m = re.fullmatch(r"(\d{3})_(\w+)\.sql", p.name)
        if not m:
            raise RuntimeError(
                f"migration file {p.name} is not named NNN_<what>.sql"
            )  # a packaging bug
        out.append(Migration(int(m.group(1)), m.group(2), p.read_text(encoding="utf-8")))
    ids = [m.id for m in out]
    if ids != list(range(1, len(ids) + 1)):
        raise RuntimeError(f"migrations must be numbered 001, 002, ... without gaps; found {ids}")
    return out


def _rows(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


class Store:
    """The DuckDB results store at ``path`` (``":memory:"`` for a throwaway one), migrated on first open."""

    def __init__(
        self,
        path: str | Path = DEFAULT_STORE,
        *,
        read_only: bool = False,
        images_dir: str | Path | None = None,
        lock_timeout: float = 30.0,
        keep_open: bool = False,
    ) -> None:
        self.memory = str(path) == ":memory:"
        self.path = Path(path) if not self.memory else Path(":memory:")
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        if images_dir is not None:
            self.images_dir: Path | None = Path(images_dir)
        else:
            self.images_dir = None if self.memory else self.path.parent / "images"
        self._memory: duckdb.DuckDBPyConnection | None = None
        self._sessions = threading.local()  # each thread's open session, if any
        self._held: Held | None = None
        self._remembered: dict[tuple[str, tuple[Any, ...]], list[dict[str, Any]]] | None = None
        if self.memory:
            self._memory = duckdb.connect(":memory:")
            self._migrate(self._memory)
            return
        self._check_file()
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                why = (
                    "part of the path is a file"
                    if isinstance(e, FileExistsError | NotADirectoryError)
                    else e.strerror
                )
                raise StoreError(
                    f"cannot create the folder of store {self.path} ({why}); pass --store with a path "
                    "you can write"
                ) from None
        con = self._open()
        try:
            with self._damage_is_one_line():
                # damaged files are refused before they are read (size) or written (every block)
                integrity.verify(con, self.path, full=not read_only)
                if read_only:
                    applied = self._check_schema(con, write=False)
                else:
                    self._migrate(con)
            if read_only and max(applied, default=0) < max(m.id for m in migrations()):
                con.close()
                con = (
                    self._upgrade()
                )  # written by an older flow-opd: its tables lack what reads need
        except BaseException:
            con.close()
            raise
        if keep_open:
            # handed over like the service's: a long command (a report's thumbnails) never stalls an eval
            self._held = Held(self._open, con=con, path=self.path)
            self._remembered = {} if read_only else None
        else:
            con.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def _upgrade(self) -> duckdb.DuckDBPyConnection:
        """Apply the missing migrations of a store opened read-only (once, read-write), then reopen it read-only."""
        self.read_only = False
        try:
            con = self._open()
        except StoreError as e:
            raise StoreError(
                f"{self.path} was written by an older flow-opd and needs a one-time upgrade by a process that "
                f"can write it ({e})"
            ) from None
        finally:
            self.read_only = True
        try:
            with self._damage_is_one_line():
                integrity.verify(con, self.path, full=True)
                self._migrate(con)
        finally:
            con.close()
        return self._open()

    # --- connections -------------------------------------------------------------------------------

    def _check_file(self) -> None:
        p = self.path
        if p.exists():
            if p.is_dir():
                raise StoreError(f"store {p} is a folder; pass the path of a .duckdb file")
            try:
                with p.open("rb") as fh:
                    head = fh.read(12)
            except OSError as e:
                raise StoreError(
                    f"store {p} cannot be read ({e.strerror}); fix its permissions"
                ) from None
            if head and head[8:12] != _MAGIC:
                raise StoreError(
                    f"{p} is not a DuckDB database (unknown header); it was left untouched. "
                    "Move it away or pass --store with another path"
                )
        elif self.read_only:
            raise StoreError(
                f"no results store at {p}; run `harness eval` first or pass --store PATH"
            )

    def _open(self) -> duckdb.DuckDBPyConnection:
        return open_file(self.path, read_only=self.read_only, lock_timeout=self.lock_timeout)

    @contextmanager
    def _damage_is_one_line(self) -> Iterator[None]:
        try:
            yield
        except duckdb.Error as e:  # a block read lazily (an index, a page) that turns out damaged
            if integrity.is_damage(e):
                raise integrity.damaged(self.path, integrity.first_line(e)) from None
            raise

    @property
    def _con(self) -> duckdb.DuckDBPyConnection | None:
        """The connection of this thread's open session (the in-memory store: its one connection)."""
        return self._memory or getattr(self._sessions, "con", None)

    @_con.setter
    def _con(self, con: duckdb.DuckDBPyConnection | None) -> None:
        self._sessions.con = con

    @contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One connection for a burst of statements (re-entrant); closed, and the file unlocked, at the end,
        unless the store holds its connection (``keep_open``, ``hold``): then a cursor of the held one."""
        if self._con is not None:
            yield self._con
            return
        if self._held is not None:
            with self._held.cursor() as cur:
                self._con = cur
                try:
                    with self._damage_is_one_line():
                        yield cur
                finally:
                    self._con = None
            return
        con = self._open()
        self._con = con
        try:
            with self._damage_is_one_line():
                yield con
        finally:
            self._con = None
            con.close()

    def hold(self, idle_s: float | None = None) -> Store:
        """Keep one connection open across verbs, shared safely by threads (each session gets a cursor). It is
        closed between verbs while another process waits for the file (and, with ``idle_s``, after that many
        seconds without use), and opened again by the next verb (``results.connections``)."""
        if not self.memory and self._held is None:
            self._held = Held(self._open, path=self.path, idle_s=idle_s)
        return self

    @contextmanager
    def holding(self) -> Iterator[Store]:
        """``hold()`` for the duration of a ``with`` block (a no-op where the store holds one already)."""
        if self.memory or self._held is not None:
            yield self
            return
        self.hold()
        try:
            yield self
        finally:
            self.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the store's connection (the in-memory one, or the one ``keep_open``/``hold`` keeps)."""
        if self._held is not None:
            self._held.close()
            self._held = None
        if self._memory is not None:
            self._memory.close()
            self._memory = None

    # --- schema ------------------------------------------------------------------------------------

    def _applied(self, con: duckdb.DuckDBPyConnection) -> list[int] | None:
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        if "_migrations" not in tables:
            if tables:
                raise StoreError(
                    f"{self.path} is a DuckDB database but not a flow-opd results store "
                    f"(tables: {', '.join(sorted(tables)[:5])}); it was left untouched"
                )
            return None
        return [r[0] for r in con.execute("SELECT id FROM _migrations ORDER BY id").fetchall()]

    def _check_schema(self, con: duckdb.DuckDBPyConnection, *, write: bool) -> list[int]:
        applied = self._applied(con)
        if applied is None:
            raise StoreError(f"{self.path} is an empty database, not a results store yet")
        known = max(m.id for m in migrations())
        if applied and max(applied) > known:
            raise StoreError(
                f"{self.path} was written by a newer flow-opd (schema migration {max(applied)}, this one "
                f"knows up to {known}); upgrade flow-opd to {'write' if write else 'read'} it"
            )
        return applied

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        applied = self._applied(con)
        all_migrations = migrations()
        if applied is None:  # a new store: the current schema in one go, every migration recorded
            con.execute("BEGIN")
            con.execute(
                "CREATE TABLE _migrations (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
            )
            con.execute(SCHEMA.read_text(encoding="utf-8"))
            con.executemany(
                "INSERT INTO _migrations (id, name) VALUES (?, ?)",
                [[m.id, m.name] for m in all_migrations],
            )
            con.execute("COMMIT")
            return
        self._check_schema(con, write=True)
        for m in all_migrations:
            if m.id in applied:
                continue
            log.info("store %s: applying migration %03d_%s", self.path, m.id, m.name)
            con.execute("BEGIN")
            con.execute(m.sql)
            con.execute("INSERT INTO _migrations (id, name) VALUES (?, ?)", [m.id, m.name])
            con.execute("COMMIT")

    def applied_migrations(self) -> list[tuple[int, str]]:
        """(id, name) of every migration recorded in ``_migrations``."""
        with self.session() as con:
            return [
                (r[0], r[1])
                for r in con.execute("SELECT id, name FROM _migrations ORDER BY id").fetchall()
            ]

    # --- images ------------------------------------------------------------------------------------

    def put_image(self, png: bytes) -> tuple[str, str]:
        """Write PNG bytes under their sha256 (atomically, idempotently); returns (sha256, relative path)."""
        return write_image_file(self._images(), png)

    def image_file(self, rel: str) -> Path:
        """The file of a stored image path."""
        return self._images() / rel

    def read_image(self, rel: str, sha256: str) -> bytes:
        """The PNG bytes of a stored image, checked against its hash."""
        return read_image_file(self._images(), rel, sha256)

    def _images(self) -> Path:
        if self.images_dir is None:
            raise StoreError("this store has no images folder; pass images_dir=... to Store")
        return self.images_dir

    # --- runs --------------------------------------------------------------------------------------

    def add_run(self, run: RunRecord) -> None:
        """Insert a run (an existing run id is left as it is); ``check_run_id`` first."""
        check_run_id(run.run_id)
        with self.session() as con:
            con.execute(
                "INSERT INTO runs (run_id, model, lora, protocol_version, protocol, provenance) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    run.run_id,
                    run.model,
                    run.lora,
                    run.protocol_version,
                    to_json(run.protocol),
                    to_json(run.provenance),
                ],
            )

    def delete_run(self, run_id: str) -> dict[str, int]:
        """Remove a run's record, samples and scores in one transaction (image files stay: content-addressed,
        maybe shared), with its summaries. Returns how many rows of each went; all zeros for an unknown run."""
        with self.session() as con:
            return writes.delete_run(con, run_id)

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run called ``run_id``, or None."""
        with self.session() as con:
            rows = _rows(con, "SELECT * FROM runs WHERE run_id = ?", [run_id])
        if not rows:
            return None
        r = rows[0]
        return RunRecord(
            run_id=r["run_id"],
            model=r["model"],
            lora=r["lora"],
            protocol=json.loads(r["protocol"]),
            provenance=json.loads(r["provenance"]),
            protocol_version=r["protocol_version"],
            created_at=r["created_at"],
        )

    def protocols(self, run_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """run id -> stored protocol, for all runs or the given ones (one query)."""
        where, params = _filters(run_ids, None)
        rows = self._aggregate(f"SELECT run_id, protocol FROM runs {where}", params)
        return {r["run_id"]: json.loads(r["protocol"]) for r in rows}

    def update_run_protocol(self, run_id: str, protocol: dict[str, Any]) -> None:
        """Replace a run's stored protocol (used to record benchmarks added to an existing run)."""
        with self.session() as con:
            con.execute(
                "UPDATE runs SET protocol = ? WHERE run_id = ?", [to_json(protocol), run_id]
            )

    def update_run_provenance(self, run_id: str, provenance: dict[str, Any]) -> None:
        """Replace a run's provenance (a resumed run appends its session)."""
        with self.session() as con:
            con.execute(
                "UPDATE runs SET provenance = ? WHERE run_id = ?", [to_json(provenance), run_id]
            )

    def run_ids(self) -> list[str]:
        """All run ids, oldest first."""
        with self.session() as con:
            return [
                r[0]
                for r in con.execute(
                    "SELECT run_id FROM runs ORDER BY created_at, run_id"
                ).fetchall()
            ]

    def runs(self) -> list[dict[str, Any]]:
        """One summary row per run: model, created, steps, benchmarks, images and score rows, and whether its
        model was trained on evaluation prompts (``contaminated``, with the reasons in ``contamination``)."""
        with self.session() as con:
            rows = _rows(
                con,
                """
                SELECT r.run_id, r.created_at, r.model, r.lora,
                       json_extract_string(r.provenance, '$.git_sha') AS git_sha,
                       json_extract(r.provenance, '$.contaminated') AS contamination,
                       coalesce(s.n_images, 0) AS images, coalesce(c.n_scores, 0) AS scores,
                       s.benchmarks, s.last_step
                FROM runs r
                LEFT JOIN (SELECT run_id, sum(n_samples)::BIGINT AS n_images, max(step) AS last_step,
                                  string_agg(DISTINCT benchmark, ',' ORDER BY benchmark) AS benchmarks
                           FROM sample_sums GROUP BY run_id) s USING (run_id)
                LEFT JOIN (SELECT run_id, sum(n_images)::BIGINT AS n_scores FROM score_sums GROUP BY run_id)
                     c USING (run_id)
                ORDER BY r.created_at, r.run_id
                """,
            )
        for r in rows:
            raw = r["contamination"]
            r["contamination"] = contamination({"contaminated": json.loads(raw) if raw else None})
            r["contaminated"] = bool(r["contamination"])
        return rows

    def contaminated_runs(self, run_ids: Sequence[str] | None = None) -> dict[str, list[str]]:
        """run id -> why its model counts as trained on evaluation prompts, for the contaminated runs only (all
        runs, or those of ``run_ids``); the tables mark these runs."""
        where, params = _filters(run_ids, None)
        where = f"{where} AND" if where else "WHERE"
        with self.session() as con:
            rows = con.execute(
                "SELECT run_id, json_extract(provenance, '$.contaminated') FROM runs "
                f"{where} json_extract(provenance, '$.contaminated') IS NOT NULL",
                params,
            ).fetchall()
        out = {r[0]: contamination({"contaminated": json.loads(r[1])}) for r in rows}
        return {rid: reasons for rid, reasons in out.items() if reasons}

    # --- samples and scores ------------------------------------------------------------------------

    def add_samples(
        self,
        samples: Sequence[SampleRow],
        scores: Sequence[ScoreRow],
        run: RunRecord | None = None,
    ) -> tuple[int, int]:
        """Write images and their scores in one transaction; rows whose key exists already are skipped.

        ``run``, when given, is written (inserted, or its protocol and provenance replaced) in the same
        transaction, so a run's record appears with its first rows (and a write that fails leaves no
        empty run); the summaries the new rows change are updated in it too. Returns (samples, scores)
        inserted."""
        if not samples and not scores and run is None:
            return 0, 0
        with self.session() as con:
            return writes.write_batch(con, samples, scores, run)

    def rebuild_summaries(self) -> None:
        """Fill the summaries again from every stored row (after rows were written by plain SQL)."""
        with self.session() as con:
            writes.rebuild(con, next(MIGRATIONS.glob("003_*.sql")))

    def existing(
        self, run_id: str, step: int, benchmark: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(samples, scores) already stored for one run, step and benchmark (keys and versions only)."""
        with self.session() as con:
            samples = _rows(
                con,
                "SELECT prompt_id, image_index, benchmark_version, seed, image_sha256, image_path "
                "FROM samples WHERE run_id = ? AND step = ? AND benchmark = ?",
                [run_id, step, benchmark],
            )
            scores = _rows(
                con,
                "SELECT prompt_id, image_index, scorer, scorer_version, benchmark_version "
                "FROM scores WHERE run_id = ? AND step = ? AND benchmark = ?",
                [run_id, step, benchmark],
            )
        return samples, scores

    def sample_scores(
        self, run_id: str, step: int | None = None, benchmark: str | None = None
    ) -> list[dict[str, Any]]:
        """Every (image, scorer) row of a run (the ``sample_scores`` view), in prompt order."""
        sql = "SELECT * FROM sample_scores WHERE run_id = ?"
        params: list[Any] = [run_id]
        if step is not None:
            sql += " AND step = ?"
            params.append(step)
        if benchmark is not None:
            sql += " AND benchmark = ?"
            params.append(benchmark)
        sql += " ORDER BY step, benchmark, prompt_index, image_index, scorer"
        with self.session() as con:
            return _rows(con, sql, params)

    def count_rows(self) -> dict[str, int]:
        """Row counts of runs, samples and scores."""
        with self.session() as con:
            return {
                t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                for t in ("runs", "samples", "scores")
            }

    def check(self, images: bool = True) -> dict[str, Any]:
        """Read every table fully (DuckDB verifies each block's checksum) and, with ``images``, hash every image
        file: ``{"rows": {table: n}, "images": n, "problems": [one line each]}``; ``StoreDamaged`` when the
        database file is damaged (``harness store check``)."""
        with self.session() as con:
            rows = {
                t: n
                for t, n in integrity.verify(con, self.path).items()
                if t not in writes.SUMMARY_TABLES  # read (checked) too; the counts are of the rows
            }
            sql = "SELECT DISTINCT image_path, image_sha256 FROM samples ORDER BY image_path"
            files = [(r[0], r[1]) for r in con.execute(sql).fetchall()] if images else []
        problems = integrity.check_images(self._images(), files) if files else []
        return {"rows": rows, "images": len(files), "problems": problems}

    # --- aggregates (views) ------------------------------------------------------------------------

    def _aggregate(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        """Rows of a view query. A read-only store that keeps its connection (a command) remembers them: no
        other process can write the file while it is held, so the same query gives the same rows."""
        key = (sql, tuple(params))
        if self._remembered is not None and key in self._remembered:
            return [dict(r) for r in self._remembered[key]]
        with self.session() as con:
            rows = _rows(con, sql, params)
        if self._remembered is not None:
            self._remembered[key] = rows
            return [dict(r) for r in rows]
        return rows

    def benchmark_scores(
        self,
        *,
        run_ids: Sequence[str] | None = None,
        benchmark: str | None = None,
        latest: bool = True,
    ) -> list[dict[str, Any]]:
        """Rows of the ``benchmark_scores`` view; ``latest`` keeps each run's last evaluated step."""
        where, params = _filters(run_ids, benchmark)
        qualify = "QUALIFY step = max(step) OVER (PARTITION BY run_id, benchmark)" if latest else ""
        return self._aggregate(
            f"SELECT * FROM benchmark_scores {where} {qualify} "
            "ORDER BY run_id, step, benchmark, scorer",
            params,
        )

    def group_scores(
        self,
        benchmark: str,
        *,
        run_ids: Sequence[str] | None = None,
        latest: bool = True,
    ) -> list[dict[str, Any]]:
        """Rows of the ``group_scores`` view for one benchmark (per GenEval task, T2I-CompBench category)."""
        where, params = _filters(run_ids, benchmark)
        qualify = "QUALIFY step = max(step) OVER (PARTITION BY run_id)" if latest else ""
        return self._aggregate(
            f"SELECT * FROM group_scores {where} {qualify} ORDER BY run_id, step, scorer, grp",
            params,
        )

    def main_table(
        self, *, run_ids: Sequence[str] | None = None, latest: bool = True
    ) -> list[dict[str, Any]]:
        """Rows of the ``main_table`` view (GenEval, OCR, DeQA, PickScore, Avg), best Avg first."""
        where, params = _filters(run_ids, None)
        qualify = "QUALIFY step = max(step) OVER (PARTITION BY run_id)" if latest else ""
        return self._aggregate(
            f"SELECT * FROM main_table {where} {qualify} "
            "ORDER BY avg DESC NULLS LAST, run_id, step",
            params,
        )

    def leaderboard(self, benchmark: str | None = None) -> list[dict[str, Any]]:
        """Each run's last step, best first: the main table, or one benchmark's per-scorer scores."""
        if benchmark is None:
            return self.main_table()
        rows = self.benchmark_scores(benchmark=benchmark)
        return sorted(rows, key=lambda r: (r["scorer"], -r["score"], r["run_id"]))

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """Every evaluated step of a run (for training curves), step by step."""
        return self.benchmark_scores(run_ids=[run_id], latest=False)

    def prompt_values(
        self, run_id: str, step: int, benchmark: str, scorer: str
    ) -> list[dict[str, Any]]:
        """Per prompt: its group, number of images and sum of values (the unit the bootstrap resamples)."""
        with self.session() as con:
            return _rows(
                con,
                "SELECT prompt_id, any_value(grp) AS grp, count(*) AS n, sum(value) AS total "
                "FROM scores WHERE run_id = ? AND step = ? AND benchmark = ? AND scorer = ? "
                "GROUP BY prompt_id ORDER BY prompt_id",
                [run_id, step, benchmark, scorer],
            )

    def last_step(self, run_id: str) -> int | None:
        """The last step a run has samples for."""
        with self.session() as con:
            row = con.execute(
                "SELECT max(step) FROM sample_sums WHERE run_id = ?", [run_id]
            ).fetchone()
        return None if row is None else row[0]


def _filters(run_ids: Sequence[str] | None, benchmark: str | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if run_ids is not None:
        clauses.append(f"run_id IN ({', '.join('?' for _ in run_ids) or 'NULL'})")
        params.extend(run_ids)
    if benchmark is not None:
        clauses.append("benchmark = ?")
        params.append(benchmark)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params
