"""What the routes and pages read from and write to the store, as functions of a ``Store``.

The numbers come from the store's SQL views through ``harness.tables`` (the same code as ``harness
leaderboard``), so the service never computes a metric of its own. The few queries the store has no verb for
(one page of samples, an image by hash, deleting a run) are plain SQL here, run on the store's connection. Each
function runs in one ``store.session()``: a cursor of the connection the service holds between requests
(handed over to a process waiting for the file, see ``service.deps``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flowbase.errors import InputError, UserError
from harness.benchmarks import BENCHMARKS
from harness.standing import run_name
from harness.tables import Table, benchmark_tables, main_table
from results.store import RunRecord, SampleRow, ScoreRow, Store
from service.schemas import (
    BenchmarkInfo,
    Column,
    DeleteResult,
    ImportResult,
    LeaderboardRow,
    LeaderboardTable,
    RunDetail,
    RunImport,
    RunSummary,
    Sample,
    SamplePage,
    SampleScore,
)
from service.wire import WireError, decode_bytes, sniff

MAIN = "main"


class NotFound(UserError, LookupError):
    """A run, benchmark or image that is not in the store; the message lists what is (HTTP 404)."""


class Conflict(UserError):
    """An import that contradicts what the store holds (HTTP 409)."""


def _aware(t: Any) -> Any:
    """A stored TIMESTAMP as an aware datetime: DuckDB wrote it in this machine's local time zone."""
    if isinstance(t, datetime) and t.tzinfo is None:
        return t.astimezone()
    return t


def _json(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) else v


def protocol_summary(protocol: dict[str, Any]) -> str:
    """A short human summary of a stored protocol (sampler, steps, cfg, size, image encoding)."""
    g = protocol.get("generation") if isinstance(protocol.get("generation"), dict) else protocol
    try:
        parts = [
            str(g.get("sampler", "euler-ode")),
            f"{g['steps']} steps",
            f"{g['guidance']} guidance {g['cfg']:g}" if g.get("guidance") else f"cfg {g['cfg']:g}",
            f"{g['height']}x{g['width']}",
            str(g.get("image_encoding", "png")),
        ]
    except (KeyError, TypeError, ValueError):
        return "unknown protocol"
    return ", ".join(parts)


# --- benchmarks and leaderboard ----------------------------------------------------------------------


def stored_benchmarks(store: Store) -> dict[str, int]:
    """Benchmark -> number of runs with scores for it."""
    with store.session() as con:
        rows = con.execute(
            "SELECT benchmark, count(DISTINCT run_id) FROM score_sums GROUP BY benchmark"
        ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def benchmarks(store: Store) -> list[BenchmarkInfo]:
    """The registry's benchmarks plus any prompt-file benchmark found in the store."""
    stored = stored_benchmarks(store)
    out = [
        BenchmarkInfo(
            name=b.name,
            version=b.version,
            description=b.description,
            images_per_prompt=b.images_per_prompt,
            scorers=list(b.scorers),
            group_by=b.group_by,
            runs=stored.get(b.name, 0),
        )
        for b in BENCHMARKS.values()
    ]
    for name in sorted(set(stored) - set(BENCHMARKS)):
        out.append(
            BenchmarkInfo(
                name=name,
                version=None,
                description="prompt file evaluated with `harness eval --prompts`",
                images_per_prompt=None,
                scorers=[],
                group_by=None,
                runs=stored[name],
            )
        )
    return out


def check_benchmark(store: Store, name: str) -> None:
    """NotFound unless ``name`` is ``main``, a registry benchmark or one the store holds."""
    known = {MAIN, *BENCHMARKS, *stored_benchmarks(store)}
    if name not in known:
        hint = difflib.get_close_matches(name, sorted(known), n=3)
        maybe = f" (did you mean {', '.join(hint)}?)" if hint else ""
        raise NotFound(f"no benchmark {name!r}{maybe}; known: {', '.join(sorted(known))}")


def _runs_meta(store: Store) -> dict[str, dict[str, Any]]:
    with store.session() as con:
        rows = con.execute("SELECT run_id, model, lora, protocol, created_at FROM runs").fetchall()
    return {
        r[0]: {
            "model": r[1],
            "lora": r[2],
            "protocol": protocol_summary(_json(r[3]) or {}),
            "name": run_name(r[1], r[2], _aware(r[4])),
        }
        for r in rows
    }


def to_leaderboard(
    tables: Sequence[Table], meta: dict[str, dict[str, Any]]
) -> list[LeaderboardTable]:
    """harness.tables Tables (first columns ``run``, ``step``) as API tables with model and protocol, and each
    row's contamination verdict (the table's ``contaminated`` runs)."""
    out = []
    for t in tables:
        names = t.columns[2:]
        cols = [
            Column(name=c, numeric=d is not None, decimals=d)
            for c, d in zip(names, t.decimals[2:], strict=True)
        ]
        rows = []
        for i, row in enumerate(t.rows):
            run_id, step = str(row[0]), int(row[1])
            m = meta.get(run_id, {})
            marks = t.partial[i] if i < len(t.partial) else set()
            rows.append(
                LeaderboardRow(
                    run_id=run_id,
                    model=m.get("model"),
                    lora=m.get("lora"),
                    protocol=m.get("protocol", "unknown protocol"),
                    step=step,
                    cells={c: _cell(v) for c, v in zip(names, row[2:], strict=True)},
                    partial=[t.columns[j] for j in sorted(marks)],
                    contaminated=run_id in t.contaminated,
                    contamination=list(t.contaminated.get(run_id, [])),
                    name=m.get("name") or run_id,
                    rank=t.rank[i] if i < len(t.rank) else None,
                    status=t.status[i] if i < len(t.status) else "",
                )
            )
        out.append(
            LeaderboardTable(
                title=t.title, columns=cols, rows=rows, notes=list(t.notes), ranked_by=t.ranked_by
            )
        )
    return out


def _cell(v: Any) -> float | int | str | None:
    if v is None or isinstance(v, (int, float, str)):
        return v
    return str(v)


def leaderboard(store: Store, benchmark: str, rank_all: bool = False) -> list[LeaderboardTable]:
    """Every run's last step on ``benchmark`` (``main``: the paper's main table), best first by its primary
    metric; partial runs and runs of another protocol after the ranked ones unless ``rank_all``."""
    with store.session():
        check_benchmark(store, benchmark)
        tables = (
            [main_table(store, rank_all=rank_all)]
            if benchmark == MAIN
            else benchmark_tables(store, benchmark, rank_all=rank_all)
        )
        return to_leaderboard([t for t in tables if t.rows], _runs_meta(store))


SORT_FIXED = ("run_id", "model", "protocol", "step")


def sort_and_filter(
    tables: list[LeaderboardTable],
    *,
    sort: str | None,
    descending: bool,
    model: str | None,
    protocol: str | None,
    complete: bool,
) -> list[LeaderboardTable]:
    """Filter rows (model / protocol substring, only complete rows) and sort by a column (None last); the rows
    shown apart (``rank`` None: partial, other protocol) stay after the ranked ones."""
    if sort is not None:
        have = {c.name for t in tables for c in t.columns} | set(SORT_FIXED)
        if sort not in have:
            raise InputError(f"cannot sort by {sort!r}; columns: {', '.join(sorted(have))}")
    out = []
    for t in tables:
        rows = [
            r
            for r in t.rows
            if (model is None or model.lower() in (r.model or "").lower())
            and (protocol is None or protocol.lower() in r.protocol.lower())
            and (not complete or not r.partial)
        ]
        if sort is not None and (sort in SORT_FIXED or any(c.name == sort for c in t.columns)):

            def key(r: LeaderboardRow) -> Any:
                v = getattr(r, sort) if sort in SORT_FIXED else r.cells.get(sort)
                return (0, str(v)) if isinstance(v, str) else (1, v)

            def ordered(part: list[LeaderboardRow]) -> list[LeaderboardRow]:
                present = [r for r in part if key(r)[1] is not None]
                missing = [r for r in part if key(r)[1] is None]
                return sorted(present, key=key, reverse=descending) + missing

            rows = ordered([r for r in rows if r.rank is not None]) + ordered(
                [r for r in rows if r.rank is None]
            )
        out.append(t.model_copy(update={"rows": rows}))
    return out


# --- runs --------------------------------------------------------------------------------------------


def _suggest(store: Store, run_id: str) -> str:
    with store.session() as con:
        ids = [r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()]
    hint = difflib.get_close_matches(run_id, ids, n=3)
    return f"no run {run_id!r}" + (f" (did you mean {', '.join(hint)}?)" if hint else "")


def runs(store: Store) -> list[RunSummary]:
    """Every run, oldest first."""
    return [
        RunSummary(
            run_id=r["run_id"],
            created_at=_aware(r["created_at"]),
            model=r["model"],
            lora=r["lora"],
            git_sha=r["git_sha"],
            images=int(r["images"]),
            scores=int(r["scores"]),
            benchmarks=[b for b in (r["benchmarks"] or "").split(",") if b],
            last_step=r["last_step"],
            contaminated=r["contaminated"],
            contamination=r["contamination"],
            name=run_name(r["model"], r["lora"], _aware(r["created_at"])),
        )
        for r in store.runs()
    ]


def run_detail(store: Store, run_id: str) -> RunDetail:
    """One run: its record, last step and tables."""
    with store.session():
        run = store.get_run(run_id)
        if run is None:
            raise NotFound(_suggest(store, run_id))
        tables = to_leaderboard(benchmark_tables(store, run_ids=[run_id]), _runs_meta(store))
        return RunDetail(
            run_id=run.run_id,
            created_at=_aware(run.created_at),
            model=run.model,
            lora=run.lora,
            protocol_version=run.protocol_version,
            protocol=run.protocol,
            provenance=run.provenance,
            last_step=store.last_step(run_id),
            tables=tables,
            contaminated=run.contaminated,
            contamination=run.contamination,
            name=run_name(run.model, run.lora, _aware(run.created_at)),
        )


def sample_page(
    store: Store,
    run_id: str,
    *,
    step: int | None,
    benchmark: str | None,
    offset: int,
    limit: int,
) -> SamplePage:
    """One page of a run's images (prompt order) with every score; ``step`` defaults to the last one."""
    with store.session() as con:
        if store.get_run(run_id) is None:
            raise NotFound(_suggest(store, run_id))
        if step is None:
            step = store.last_step(run_id)
        where = "run_id = ? AND step = ?"
        params: list[Any] = [run_id, step]
        if benchmark is not None:
            where += " AND benchmark = ?"
            params.append(benchmark)
        total = con.execute(f"SELECT count(*) FROM samples WHERE {where}", params).fetchone()
        n_total = int(total[0]) if total else 0
        rows = con.execute(
            f"""
            WITH page AS (
                SELECT * FROM samples WHERE {where}
                ORDER BY benchmark, prompt_index, image_index LIMIT ? OFFSET ?
            )
            SELECT p.step, p.benchmark, p.benchmark_version, p.prompt_id, p.prompt_index, p.prompt,
                   p.meta, p.grp, p.image_index, p.seed, p.image_sha256,
                   c.scorer, c.scorer_version, c.value, c.reward, c.details
            FROM page p
            LEFT JOIN scores c USING (run_id, step, benchmark, prompt_id, image_index)
            ORDER BY p.benchmark, p.prompt_index, p.image_index, c.scorer
            """,
            [*params, limit, offset],
        ).fetchall()
    samples = _samples(rows)
    nxt = offset + limit
    return SamplePage(
        run_id=run_id,
        step=step,
        benchmark=benchmark,
        total=n_total,
        offset=offset,
        limit=limit,
        next_offset=nxt if nxt < n_total else None,
        samples=samples,
    )


_SAMPLE_COLUMNS = """
    p.step, p.benchmark, p.benchmark_version, p.prompt_id, p.prompt_index, p.prompt, p.meta, p.grp,
    p.image_index, p.seed, p.image_sha256, c.scorer, c.scorer_version, c.value, c.reward, c.details
"""


def _samples(rows: Sequence[Sequence[Any]]) -> list[Sample]:
    """Rows of ``_SAMPLE_COLUMNS`` (one per image and scorer) as Samples, each with its scores."""
    samples: dict[tuple[str, str, int], Sample] = {}
    for r in rows:
        key = (r[1], r[3], r[8])
        s = samples.get(key)
        if s is None:
            s = samples[key] = Sample(
                step=r[0],
                benchmark=r[1],
                benchmark_version=r[2],
                prompt_id=r[3],
                prompt_index=r[4],
                prompt=r[5],
                meta=_json(r[6]) or {},
                grp=r[7],
                image_index=r[8],
                seed=r[9],
                image_sha256=r[10],
                image_url=f"/v1/images/{r[10]}",
                scores=[],
            )
        if r[11] is not None:
            s.scores.append(
                SampleScore(
                    scorer=r[11],
                    scorer_version=r[12],
                    value=r[13],
                    reward=r[14],
                    details=_json(r[15]),
                )
            )
    return list(samples.values())


def prompt_keys(
    store: Store, run_id: str, step: int | None, benchmark: str | None
) -> list[tuple[str, str]]:
    """(benchmark, prompt id) of every prompt a run holds at ``step``, in benchmark and prompt order: the
    unit the pages paginate by, whatever each benchmark's images per prompt."""
    where, params = "run_id = ? AND step = ?", [run_id, step]
    if benchmark is not None:
        where += " AND benchmark = ?"
        params.append(benchmark)
    with store.session() as con:
        rows = con.execute(
            f"SELECT benchmark, prompt_id, min(prompt_index) AS i FROM samples WHERE {where} "
            "GROUP BY benchmark, prompt_id ORDER BY benchmark, i, prompt_id",
            params,
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def prompt_samples(
    store: Store, run_id: str, step: int | None, keys: Sequence[tuple[str, str]]
) -> list[Sample]:
    """The images of a run's given prompts at ``step`` (in prompt order), each with every score."""
    if not keys:
        return []
    pairs = ", ".join("(?, ?)" for _ in keys)
    with store.session() as con:
        rows = con.execute(
            f"""
            SELECT {_SAMPLE_COLUMNS}
            FROM samples p
            LEFT JOIN scores c USING (run_id, step, benchmark, prompt_id, image_index)
            WHERE p.run_id = ? AND p.step = ? AND (p.benchmark, p.prompt_id) IN ({pairs})
            ORDER BY p.benchmark, p.prompt_index, p.image_index, c.scorer
            """,
            [run_id, step, *[v for k in keys for v in k]],
        ).fetchall()
    return _samples(rows)


def history(store: Store, run_id: str) -> list[dict[str, Any]]:
    """A run's headline score per evaluated step (``Store.history``): the points of its training curves."""
    return store.history(run_id)


def image_bytes(store: Store, sha256: str) -> bytes:
    """The PNG bytes of a stored image by its sha256 (checked); NotFound if no sample has it."""
    with store.session() as con:
        row = con.execute(
            "SELECT image_path FROM samples WHERE image_sha256 = ? LIMIT 1", [sha256]
        ).fetchone()
    if row is None:
        raise NotFound(f"no image {sha256[:12]}... in this store")
    return store.read_image(row[0], sha256)


# --- writes ------------------------------------------------------------------------------------------


def import_run(store: Store, body: RunImport, max_pixels: int) -> ImportResult:
    """Store one chunk of a run (see ``RunImport``); rows already stored are skipped, never duplicated.

    Every image is checked first (sha256, PNG, at most ``max_pixels``, a full decode), then the run record and
    the rows go in one transaction: a refused chunk leaves nothing, not even an empty run."""
    r = body.run
    record = RunRecord(r.run_id, r.model, r.lora, r.protocol, r.provenance, r.protocol_version)
    pngs: dict[str, bytes] = {}
    for i, s in enumerate(body.samples):
        raw = _png(s.image, i)
        if hashlib.sha256(raw).hexdigest() != s.image_sha256:
            raise WireError(400, f"sample {i}: the image's sha256 is not image_sha256")
        if s.image_sha256 not in pngs:
            decode_bytes(raw, f"sample {i}: image", max_pixels, ("PNG",)).close()
        pngs[s.image_sha256] = raw
    with store.session():
        existing = store.get_run(r.run_id)
        if existing is not None:
            same = (
                existing.model,
                existing.lora,
                existing.protocol_version,
                existing.protocol,
            ) == (
                r.model,
                r.lora,
                r.protocol_version,
                json.loads(json.dumps(r.protocol)),
            )
            if not same:
                raise Conflict(
                    f"run {r.run_id!r} is stored with another model, LoRA or protocol; delete it "
                    "first (DELETE /v1/runs/{id}) or import under another run id"
                )
        have_samples: set[tuple[Any, ...]] = set()
        have_scores: set[tuple[Any, ...]] = set()
        parts = {(s.step, s.benchmark) for s in body.samples} | {
            (c.step, c.benchmark) for c in body.scores
        }
        for step, bench in sorted(parts):
            ss, cs = store.existing(r.run_id, step, bench)
            have_samples |= {(step, bench, x["prompt_id"], x["image_index"]) for x in ss}
            have_scores |= {
                (step, bench, x["prompt_id"], x["image_index"], x["scorer"]) for x in cs
            }
        chunk_keys = {(s.step, s.benchmark, s.prompt_id, s.image_index) for s in body.samples}
        for i, c in enumerate(body.scores):
            key = (c.step, c.benchmark, c.prompt_id, c.image_index)
            if key not in chunk_keys and key not in have_samples:
                raise WireError(
                    400,
                    f"score {i} ({c.benchmark} {c.prompt_id} image {c.image_index} step {c.step}) "
                    "has no sample in this chunk or in the store; send its sample with it",
                )
        sample_rows, score_rows = [], []
        new_samples = {}
        for s in body.samples:
            key = (s.step, s.benchmark, s.prompt_id, s.image_index)
            if key in have_samples or key in new_samples:
                continue
            _, rel = store.put_image(pngs[s.image_sha256])
            new_samples[key] = SampleRow(
                r.run_id, s.step, s.benchmark, s.benchmark_version, s.prompt_id, s.prompt_index,
                s.prompt, s.meta, s.grp, s.image_index, s.seed, s.image_sha256, rel,
            )  # fmt: skip
        sample_rows = list(new_samples.values())
        seen: set[tuple[Any, ...]] = set()
        for c in body.scores:
            key = (c.step, c.benchmark, c.prompt_id, c.image_index, c.scorer)
            if key in have_scores or key in seen:
                continue
            seen.add(key)
            score_rows.append(
                ScoreRow(
                    r.run_id,
                    c.step,
                    c.benchmark,
                    c.benchmark_version,
                    c.prompt_id,
                    c.grp,
                    c.image_index,
                    c.scorer,
                    c.scorer_version,
                    c.value,
                    c.reward,
                    c.details,
                )  # fmt: skip
            )
        store.add_samples(sample_rows, score_rows, run=None if existing else record)
    return ImportResult(
        run_id=r.run_id,
        created=existing is None,
        samples_added=len(sample_rows),
        scores_added=len(score_rows),
        samples_skipped=len(body.samples) - len(sample_rows),
        scores_skipped=len(body.scores) - len(score_rows),
    )


def _png(data: str, index: int) -> bytes:
    import base64
    import binascii

    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise WireError(400, f"sample {index}: image is not valid base64 ({e})") from None
    if sniff(raw) != "PNG":
        raise WireError(400, f"sample {index}: stored images must be PNG files")
    return raw


def delete_run(store: Store, run_id: str) -> DeleteResult:
    """Delete a run's scores, samples and record in one transaction (image files stay: they may be shared)."""
    if store.get_run(run_id) is None:
        raise NotFound(_suggest(store, run_id))
    counts = store.delete_run(run_id)
    return DeleteResult(
        run_id=run_id, runs=counts["runs"], samples=counts["samples"], scores=counts["scores"]
    )
