"""The paper's tables, read from the store's views, rendered as terminal text, Markdown, CSV or JSON.

Tables (docs/method.md section 6): the main table (GenEval, OCR, DeQA, PickScore and Avg = mean(GenEval, OCR,
DeQA / 5, PickScore / 26)), the GenEval per-task table (overall = mean of the 6 task accuracies; the image-level
mean is shown separately), the DrawBench image-quality table and the T2I-CompBench per-category table; any other
benchmark (a user prompt file) gets one column per scorer. The numbers come from SQL views (``results/schema.sql``);
this module only picks columns and formats them. A cell computed from fewer images than the benchmark holds (a
``--limit`` run, or one still running) is marked ``*`` and explained in a note: it is not the benchmark's number.
A run whose model was trained on evaluation prompts (``provenance["contaminated"]``, from its training run's
manifest, see ``harness.splits``) is marked ``†`` after its id, with ``CONTAMINATED_LEGEND`` under the table, and
``contaminated`` fields in CSV and JSON; its numbers are not held-out results.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from flowbase.errors import InputError
from harness import geneval2
from harness.benchmarks import BENCHMARKS
from harness.standing import Standing, standings, status
from results.store import Store

F = TypeVar("F", bound=Callable[..., Any])

FORMATS = ("text", "markdown", "csv", "json")

GENEVAL_TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
GENEVAL_TITLES = ("Single", "Two", "Counting", "Colors", "Position", "Color attr.")
COMPBENCH = (
    "color",
    "shape",
    "texture",
    "spatial",
    "3d_spatial",
    "non_spatial",
    "numeracy",
    "complex",
)
COMPBENCH_TITLES = (
    "Color",
    "Shape",
    "Texture",
    "2D-Spatial",
    "3D-Spatial",
    "Non-Spatial",
    "Numeracy",
    "Complex",
)
CONTAMINATED_MARK = "†"
CONTAMINATED_LEGEND = (
    f"{CONTAMINATED_MARK} trained on evaluation prompts (see the run's manifest: contaminated)"
)

QUALITY = (
    ("deqa", "DeQA", 3),
    ("imagereward", "ImageReward", 3),
    ("aesthetic", "Aesthetic", 3),
    ("unifiedreward", "UnifiedReward", 3),
    ("hps", "HPS v2.1", 4),
    ("pickscore", "PickScore", 3),
    ("judge", "Judge", 3),
)


@dataclass
class Table:
    """A titled table: column names, raw rows (numbers stay numbers), decimals per column and notes."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    decimals: list[int | None]  # None = not a number column
    notes: list[str] = field(default_factory=list)
    partial: list[set[int]] = field(default_factory=list)  # per row: indexes of partial cells
    # run id -> why its model counts as trained on evaluation prompts: only such runs of this table, marked in
    # the ``run`` column (the compare table names its runs in the title instead, and marks them there)
    contaminated: dict[str, list[str]] = field(default_factory=dict)
    # per row: '' for a ranked row, else why it is shown apart ('partial', 'other protocol', both); the ranked
    # rows come first, best first by ``ranked_by``; ``rank`` numbers them (None for a row shown apart)
    status: list[str] = field(default_factory=list)
    rank: list[int | None] = field(default_factory=list)
    ranked_by: str = ""

    def records(self) -> list[dict[str, Any]]:
        """Rows as dicts (for JSON and the service)."""
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]

    def row_contaminated(self, i: int) -> bool:
        """Whether row ``i`` shows numbers of a contaminated run (its ``run`` cell; any, without that column)."""
        if "run" not in self.columns:
            return bool(self.contaminated)
        return str(self.rows[i][self.columns.index("run")]) in self.contaminated


def marked(run_id: str, contaminated: Any) -> str:
    """``run_id`` with the contamination mark when it is among ``contaminated`` (a mapping or set of run ids)."""
    return f"{run_id}{CONTAMINATED_MARK}" if run_id in contaminated else run_id


def mark_contaminated(store: Store, table: Table) -> Table:
    """Record which of ``table``'s runs (its ``run`` column) were trained on evaluation prompts; returns it."""
    if "run" in table.columns and table.rows:
        j = table.columns.index("run")
        table.contaminated = store.contaminated_runs(sorted({str(r[j]) for r in table.rows}))
    return table


def _expected(store: Store, run_ids: Sequence[str] | None) -> dict[tuple[str, str], int]:
    """(run, benchmark) -> images the full benchmark holds under the run's protocol."""
    out = {}
    for rid, protocol in store.protocols(run_ids).items():
        for name, spec in protocol.get("benchmarks", {}).items():
            out[(rid, name)] = int(spec["prompts"]) * int(spec["images_per_prompt"])
    return out


def _one_connection(fn: F) -> F:
    """Run a table builder's several queries over one store connection (opening one costs ~50 ms)."""

    @functools.wraps(fn)
    def wrapper(store: Store, *args: Any, **kwargs: Any) -> Any:
        with store.session():
            return fn(store, *args, **kwargs)

    return cast(F, wrapper)


def _note_partial(table: Table, cells: dict[tuple[int, int], tuple[str, str, int, int]]) -> None:
    table.partial = [set() for _ in table.rows]
    seen = set()
    for (r, c), (rid, bench, have, want) in sorted(cells.items()):
        table.partial[r].add(c)
        if (rid, bench) not in seen:
            seen.add((rid, bench))
            table.notes.append(f"* partial: {rid} has {have} of {want} {bench} images")


def _primary(
    store: Store, benchmark: str, ids: Sequence[str] | None
) -> tuple[str, dict[str, float]]:
    """(the benchmark's primary scorer, run -> its score at the run's last step); ('', {}) outside the
    registry."""
    bench = BENCHMARKS.get(benchmark)
    if bench is None:
        return "", {}
    scorer = bench.primary_scorer
    rows = store.benchmark_scores(run_ids=ids, benchmark=benchmark)
    return scorer, {r["run_id"]: r["score"] for r in rows if r["scorer"] == scorer}


def rank_rows(
    table: Table,
    keys: Sequence[float | None],
    verdicts: Sequence[Standing],
    *,
    ranked_by: str,
    rank_all: bool = False,
) -> Table:
    """Order ``table``'s rows: ranked rows (complete, standard protocol) best first by ``keys``, then the rows
    shown apart (partial or of another protocol), best first too; ``rank_all`` ranks every row together. Notes
    say which runs are apart and why."""
    if not table.partial:
        table.partial = [set() for _ in table.rows]
    marks = [status(v) for v in verdicts]
    run = table.columns.index("run") if "run" in table.columns else None

    def order(i: int) -> tuple[bool, bool, float, str]:
        k = keys[i]
        apart = bool(marks[i]) and not rank_all
        return (apart, k is None, -(k or 0.0), str(table.rows[i][run]) if run is not None else "")

    idx = sorted(range(len(table.rows)), key=order)
    table.rows = [table.rows[i] for i in idx]
    table.partial = [table.partial[i] for i in idx]
    table.status = [marks[i] for i in idx]
    n = 0
    table.rank = []
    for i in idx:
        if rank_all or not marks[i]:
            n += 1
            table.rank.append(n)
        else:
            table.rank.append(None)
    table.ranked_by = ranked_by
    if any(marks):
        how = (
            "ranked together with the partial runs and runs of another protocol (--rank-all)"
            if rank_all
            else "partial runs and runs of another protocol are not ranked: they are listed apart, below"
        )
        table.notes.insert(0, f"Ranked by {ranked_by}; {how}")
        seen = set()
        for pos, i in enumerate(idx):
            v = verdicts[i]
            rid = str(table.rows[pos][run]) if run is not None else ""
            for why in v.other:
                if (rid, why) not in seen:
                    seen.add((rid, why))
                    table.notes.append(f"other protocol: {rid}: {why}")
    return table


def _verdict(stand: dict[tuple[str, str], Standing], rid: str, benches: Sequence[str]) -> Standing:
    out = Standing()
    for b in benches:
        out = out.merge(stand.get((rid, b), Standing()))
    return out


def _run_ids(store: Store, run_ids: Sequence[str] | None) -> list[str] | None:
    return list(run_ids) if run_ids is not None else None


@_one_connection
def main_table(
    store: Store, run_ids: Sequence[str] | None = None, *, rank_all: bool = False
) -> Table:
    """GenEval, OCR, DeQA, PickScore and Avg per run (each run's last step), best Avg first; partial runs and
    runs of another protocol apart, below (``rank_rows``)."""
    ids = _run_ids(store, run_ids)
    stand = standings(store, ids)
    rows = store.main_table(run_ids=ids)
    counts = {
        (r["run_id"], r["step"], r["benchmark"], r["scorer"]): r["n_images"]
        for r in store.benchmark_scores(run_ids=ids)
    }
    expected = _expected(store, ids)
    cols = (
        ("geneval", "geneval", 4),
        ("ocr", "ocr", 4),
        ("drawbench", "deqa", 3),
        ("pickscore", "pickscore", 3),
    )
    table = Table(
        "Main table (Avg = mean(GenEval, OCR, DeQA/5, PickScore/26))",
        ["run", "step", "GenEval", "OCR", "DeQA", "PickScore", "Avg"],
        [],
        [None, None, 4, 4, 3, 3, 4],
    )
    partial = {}
    verdicts = []
    for r in rows:
        if all(r[k] is None for _, k, _ in cols):
            continue
        verdicts.append(_verdict(stand, r["run_id"], [b for b, k, _ in cols if r[k] is not None]))
        i = len(table.rows)
        table.rows.append(
            [r["run_id"], r["step"], r["geneval"], r["ocr"], r["deqa"], r["pickscore"], r["avg"]]
        )
        for c, (bench, scorer, _) in enumerate(cols, start=2):
            have = counts.get((r["run_id"], r["step"], bench, scorer))
            want = expected.get((r["run_id"], bench))
            if have is not None and want is not None and have < want:
                partial[(i, c)] = (r["run_id"], bench, have, want)
                if r["avg"] is not None:
                    partial[(i, 6)] = (r["run_id"], bench, have, want)
    _note_partial(table, partial)
    if table.rows and any(r[6] is None for r in table.rows):
        table.notes.append(
            "Avg is empty until a run has all four of GenEval, OCR, DeQA and PickScore"
        )
    keys = [r[6] for r in table.rows]
    rank_rows(table, keys, verdicts, ranked_by="Avg", rank_all=rank_all)
    return mark_contaminated(store, table)


@_one_connection
def group_table(
    store: Store,
    benchmark: str,
    scorer: str,
    groups: Sequence[str],
    titles: Sequence[str],
    title: str,
    run_ids: Sequence[str] | None = None,
    *,
    image_mean: bool = False,
    rank_all: bool = False,
) -> Table:
    """One row per run: the overall score (mean of group means) and each group's mean; ranked by the
    benchmark's primary metric (this table's Overall when it has none)."""
    ids = _run_ids(store, run_ids)
    stand = standings(store, ids)
    primary, prim = _primary(store, benchmark, ids)
    overall = {
        r["run_id"]: r
        for r in store.benchmark_scores(run_ids=ids, benchmark=benchmark)
        if r["scorer"] == scorer
    }
    per = {}
    for g in store.group_scores(benchmark, run_ids=ids):
        if g["scorer"] == scorer:
            per[(g["run_id"], g["grp"])] = g["mean"]
    columns = ["run", "step", "Overall", *titles] + (["Images"] if image_mean else [])
    table = Table(
        title, columns, [], [None, None, 4, *[4] * len(groups)] + ([4] if image_mean else [])
    )
    expected = _expected(store, ids)
    partial = {}
    order = sorted(overall.values(), key=lambda r: (-r["score"], r["run_id"]))
    for r in order:
        i = len(table.rows)
        row = [r["run_id"], r["step"], r["score"], *[per.get((r["run_id"], g)) for g in groups]]
        if image_mean:
            row.append(r["image_mean"])
        table.rows.append(row)
        want = expected.get((r["run_id"], benchmark))
        if want is not None and r["n_images"] < want:
            for c in [2] + ([len(row) - 1] if image_mean else []):
                partial[(i, c)] = (r["run_id"], benchmark, r["n_images"], want)
    _note_partial(table, partial)
    # the primary metric where these runs have it; else (no run scored by it) this table's Overall
    use = primary and primary != scorer and any(str(r[0]) in prim for r in table.rows)
    keys = [prim.get(str(r[0])) if use else r[2] for r in table.rows]
    verdicts = [stand.get((str(r[0]), benchmark), Standing()) for r in table.rows]
    by = primary if use else "Overall"
    rank_rows(table, keys, verdicts, ranked_by=by, rank_all=rank_all)
    return mark_contaminated(store, table)


def geneval_table(
    store: Store,
    run_ids: Sequence[str] | None = None,
    scorer: str = "geneval",
    *,
    rank_all: bool = False,
) -> Table:
    """GenEval per task; Overall is the mean of the 6 task accuracies, Images the image-level mean."""
    label = "GenEval" if scorer == "geneval" else f"GenEval prompts scored by {scorer}"
    t = group_table(
        store,
        "geneval",
        scorer,
        GENEVAL_TASKS,
        GENEVAL_TITLES,
        f"{label} (Overall = mean of the task means; Images = mean over all images)",
        run_ids,
        image_mean=True,
        rank_all=rank_all,
    )
    rows = store.benchmark_scores(run_ids=run_ids, benchmark="geneval")
    if any(r["n_groups"] not in (None, 6) for r in rows if r["scorer"] == scorer):
        t.notes.append("Overall averages only the tasks present (fewer than 6 in a partial run)")
    return t


def compbench_table(
    store: Store,
    run_ids: Sequence[str] | None = None,
    scorer: str = "compbench",
    *,
    rank_all: bool = False,
) -> Table:
    """T2I-CompBench: one column per category (Overall = mean of the categories present)."""
    label = (
        "T2I-CompBench" if scorer == "compbench" else f"T2I-CompBench prompts scored by {scorer}"
    )
    return group_table(
        store,
        "compbench",
        scorer,
        COMPBENCH,
        COMPBENCH_TITLES,
        f"{label} (val, per category)",
        run_ids,
        rank_all=rank_all,
    )


@_one_connection
def scorer_table(
    store: Store,
    benchmark: str,
    title: str,
    columns: Sequence[tuple[str, str, int]] | None = None,
    run_ids: Sequence[str] | None = None,
    *,
    rank_all: bool = False,
) -> Table:
    """One row per run, one column per scorer of ``benchmark`` (the mean raw value); ranked by the benchmark's
    primary metric, even where it is not a column here (its first column outside the registry)."""
    ids = _run_ids(store, run_ids)
    stand = standings(store, ids)
    primary, prim = _primary(store, benchmark, ids)
    rows = store.benchmark_scores(run_ids=ids, benchmark=benchmark)
    present = {r["scorer"] for r in rows}
    if columns is None:
        columns = [(s, s, 4) for s in sorted(present)]
    else:
        known = {c[0] for c in columns}
        columns = [c for c in columns if c[0] in present] + [
            (s, s, 4) for s in sorted(present - known)
        ]
    by_run: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_run.setdefault((r["run_id"], r["step"]), {})[r["scorer"]] = r
    table = Table(
        title, ["run", "step", *[c[1] for c in columns]], [], [None, None, *[c[2] for c in columns]]
    )
    expected = _expected(store, ids)
    partial = {}
    first = columns[0][0] if columns else None
    keys: list[float | None] = []
    # the primary metric where these runs have it; else (no run scored by it) this table's first column
    use = bool(primary) and any(rid in prim for rid, _ in by_run)
    for (rid, step), cells in sorted(by_run.items()):
        own = cells.get(first, {}).get("score") if first else None
        keys.append(prim.get(rid) if use else own)
        i = len(table.rows)
        table.rows.append(
            [rid, step, *[cells[c[0]]["score"] if c[0] in cells else None for c in columns]]
        )
        want = expected.get((rid, benchmark))
        for c, (s, _, _) in enumerate(columns, start=2):
            if s in cells and want is not None and cells[s]["n_images"] < want:
                partial[(i, c)] = (rid, benchmark, cells[s]["n_images"], want)
    _note_partial(table, partial)
    verdicts = [stand.get((str(r[0]), benchmark), Standing()) for r in table.rows]
    by = (primary if use else first) or ""
    rank_rows(table, keys, verdicts, ranked_by=by, rank_all=rank_all)
    return mark_contaminated(store, table)


def quality_table(
    store: Store, run_ids: Sequence[str] | None = None, *, rank_all: bool = False
) -> Table:
    """The DrawBench image-quality table (mean raw score per scorer)."""
    return scorer_table(
        store,
        "drawbench",
        "Image quality (DrawBench, mean raw score)",
        QUALITY,
        run_ids,
        rank_all=rank_all,
    )


@_one_connection
def geneval2_tables(
    store: Store, run_ids: Sequence[str] | None = None, *, rank_all: bool = False
) -> list[Table]:
    """GenEval 2 (``harness.geneval2``, x100): Soft-TIFA GM and AM; AM per skill; GM per atomicity 3-10."""
    ids = _run_ids(store, run_ids)
    stand = standings(store, ids)
    bench = "geneval2"
    runs = [
        r
        for r in store.benchmark_scores(run_ids=ids, benchmark=bench)
        if r["scorer"] == "soft_tifa"
    ]
    stats = [geneval2.summarise(store.sample_scores(r["run_id"], r["step"], bench)) for r in runs]
    expected = _expected(store, ids)
    tables = []
    for k, (title, cols) in enumerate(geneval2.TABLES):
        t = Table(title, ["run", "step", *cols], [], [None, None, *[2] * len(cols)])
        partial = {}
        for i, (r, s) in enumerate(zip(runs, stats, strict=True)):
            t.rows.append([r["run_id"], r["step"], *geneval2.cells(s)[k]])
            want = expected.get((r["run_id"], bench))
            if want is not None and r["n_images"] < want:
                partial.update(
                    {
                        (i, c): (r["run_id"], bench, r["n_images"], want)
                        for c in range(2, 2 + len(cols))
                    }
                )
        _note_partial(t, partial)
        verdicts = [stand.get((str(r["run_id"]), bench), Standing()) for r in runs]
        rank_rows(t, [s.gm for s in stats], verdicts, ranked_by="soft_tifa (GM)", rank_all=rank_all)
        tables.append(mark_contaminated(store, t))
    return tables


@_one_connection
def benchmark_tables(
    store: Store,
    benchmark: str | None = None,
    run_ids: Sequence[str] | None = None,
    *,
    rank_all: bool = False,
) -> list[Table]:
    """The table(s) for one benchmark, or for every benchmark the runs hold (main table first).

    GenEval and T2I-CompBench get a per-group table per scorer, DrawBench the image-quality table; OCR and
    PickScore's own scorers appear in the main table; any other (benchmark, scorer) gets a per-scorer table.
    Rows are ranked by the benchmark's primary metric, partial runs and runs of another protocol apart below
    them unless ``rank_all``.
    """
    ra = {"rank_all": rank_all}
    ids = _run_ids(store, run_ids)
    rows = store.benchmark_scores(run_ids=ids)
    present: dict[str, set[str]] = {}
    for r in rows:
        present.setdefault(r["benchmark"], set()).add(r["scorer"])
    names = [benchmark] if benchmark is not None else sorted(present)
    tables = []
    in_main = {
        ("geneval", "geneval"),
        ("ocr", "ocr"),
        ("drawbench", "deqa"),
        ("pickscore", "pickscore"),
    }
    show_main = benchmark is None and any(s in present.get(b, set()) for b, s in in_main)
    if show_main:
        tables.append(main_table(store, ids, **ra))
    for name in names:
        scorers_here = sorted(present.get(name, set()))
        if name == "geneval":
            tables += [geneval_table(store, ids, s, **ra) for s in scorers_here]
        elif name == "compbench":
            tables += [compbench_table(store, ids, s, **ra) for s in scorers_here]
        elif name == "drawbench":
            tables.append(quality_table(store, ids, **ra))
        else:
            if name == "geneval2" and "soft_tifa" in scorers_here:
                tables += geneval2_tables(store, ids, **ra)
                scorers_here = [s for s in scorers_here if s != "soft_tifa"]
            if name == "mini_geneval" and "mini_geneval" in scorers_here:
                tables.append(
                    group_table(
                        store,
                        name,
                        "mini_geneval",
                        GENEVAL_TASKS,
                        GENEVAL_TITLES,
                        "mini GenEval (official rules on exact detections; Overall = mean of the task "
                        "means; Images = mean over all images)",
                        ids,
                        image_mean=True,
                        **ra,
                    )
                )
                scorers_here = [s for s in scorers_here if s != "mini_geneval"]
            rest = [s for s in scorers_here if not (show_main and (name, s) in in_main)]
            if rest:
                cols = [(s, s, 4) for s in rest]
                tables.append(
                    scorer_table(store, name, f"{name} (mean per scorer)", cols, ids, **ra)
                )
    return [t for t in tables if t.rows]


def _cell(v: Any, decimals: int | None) -> str:
    if v is None:
        return "-"
    if decimals is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:.{decimals}f}"
    return str(v)


def _cells(t: Table) -> list[list[str]]:
    out = []
    run = t.columns.index("run") if "run" in t.columns else None
    for i, row in enumerate(t.rows):
        marks = t.partial[i] if i < len(t.partial) else set()
        cells = [
            _cell(v, d) + ("*" if j in marks else "")
            for j, (v, d) in enumerate(zip(row, t.decimals, strict=True))
        ]
        if run is not None:
            cells[run] = marked(cells[run], t.contaminated)
        out.append(cells)
    return out


def _notes(t: Table) -> list[str]:
    """The table's notes, then the contamination legend when a run of it is marked."""
    return [*t.notes, CONTAMINATED_LEGEND] if t.contaminated else list(t.notes)


def _aligned(row: Sequence[str], widths: Sequence[int], decimals: Sequence[int | None]) -> str:
    return "  ".join(
        s.ljust(w) if d is None else s.rjust(w)
        for s, w, d in zip(row, widths, decimals, strict=True)
    ).rstrip()


def check_format(fmt: str) -> str:
    """``fmt`` when ``render`` knows it, else an ``InputError`` listing the formats (``--format``)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return fmt


def _status(t: Table, i: int) -> str:
    return t.status[i] if i < len(t.status) else ""


def _apart_from(t: Table) -> int | None:
    """The index of the first row shown apart (None when every row is ranked)."""
    for i in range(len(t.rows)):
        if i < len(t.rank) and t.rank[i] is None:
            return i
    return None


APART_LINE = "not ranked (partial or other protocol):"


def render(tables: Table | Sequence[Table], fmt: str = "text") -> str:
    """Tables as ``text`` (aligned), ``markdown``, ``csv`` (raw numbers) or ``json``. Rows shown apart
    (partial, other protocol) follow the ranked ones under a ``not ranked`` line, with a ``status`` column."""
    ts = [tables] if isinstance(tables, Table) else list(tables)
    check_format(fmt)
    if fmt == "json":
        return json.dumps([_json_table(t) for t in ts], indent=2, default=str)
    parts = []
    for t in ts:
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            # the column only in a table with a contaminated run: a clean table is as it always was
            flag = ["contaminated"] if t.contaminated else []
            w.writerow([*t.columns, "rank", "status", "partial", *flag])
            for i, row in enumerate(t.rows):
                p = t.partial[i] if i < len(t.partial) else set()
                rank = t.rank[i] if i < len(t.rank) else None
                w.writerow(
                    ["" if v is None else v for v in row]
                    + ["" if rank is None else rank, _status(t, i) or "ranked"]
                    + [";".join(t.columns[j] for j in sorted(p))]
                    + ([str(t.row_contaminated(i)).lower()] if flag else [])
                )
            parts.append(f"# {t.title}\n{buf.getvalue()}")
            continue
        cells = _cells(t)
        columns, decimals = list(t.columns), list(t.decimals)
        if any(t.status):
            columns.append("status")
            decimals.append(None)
            cells = [[*c, _status(t, i)] for i, c in enumerate(cells)]
        apart = _apart_from(t)
        if fmt == "markdown":
            lines = [f"**{t.title}**", "", "| " + " | ".join(columns) + " |"]
            lines.append("|" + "|".join("---" if d is None else "---:" for d in decimals) + "|")
            for i, r in enumerate(cells):
                if i == apart:
                    lines.append(
                        "| " + " | ".join([f"*{APART_LINE}*"] + [""] * (len(r) - 1)) + " |"
                    )
                lines.append("| " + " | ".join(r) + " |")
            if _notes(t):
                lines.append("")
        else:
            widths = [max([len(c)] + [len(r[j]) for r in cells]) for j, c in enumerate(columns)]
            lines = [
                t.title,
                _aligned(columns, widths, decimals),
                "  ".join("-" * w for w in widths),
            ]
            for i, r in enumerate(cells):
                if i == apart:
                    lines.append(APART_LINE)
                lines.append(_aligned(r, widths, decimals))
        lines += _notes(t)
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _json_table(t: Table) -> dict[str, Any]:
    """One table for ``--format json``; a table with a contaminated run adds ``contaminated`` to every row
    (true / false) and ``contamination`` (run id -> reasons) to the table."""
    rows = t.records()
    out: dict[str, Any] = {
        "title": t.title,
        "columns": t.columns,
        "rows": rows,
        "partial": [sorted(t.columns[j] for j in p) for p in t.partial],
        "notes": t.notes,
        "ranked_by": t.ranked_by,
    }
    for i, r in enumerate(rows):
        r["rank"] = t.rank[i] if i < len(t.rank) else None
        r["status"] = _status(t, i) or "ranked"
    if t.contaminated:
        for i, r in enumerate(rows):
            r["contaminated"] = t.row_contaminated(i)
        out["contamination"] = t.contaminated
    return out
