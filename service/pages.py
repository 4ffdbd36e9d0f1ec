"""Server-rendered HTML pages: the leaderboard, a run (tables and an image grid per prompt), and two runs side by side.

Jinja2 templates in ``service/templates`` (autoescaped), one stylesheet and one small script in
``service/static`` (column sorting), nothing from a CDN: the pages work offline. They read through the same
``service.queries`` functions as the JSON API, so a page and ``/v1`` never disagree. A run whose model was
trained on evaluation prompts carries a red ``†`` badge (the reasons in its tooltip) wherever it is shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from flowbase.errors import InputError
from harness.compare import compare_runs
from harness.tables import CONTAMINATED_LEGEND, CONTAMINATED_MARK
from service import queries
from service.deps import CacheDep, StoreDep
from service.schemas import Sample

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)

PROMPTS_PER_PAGE = 12


def fmt(v: Any, decimals: int | None = 4) -> str:
    """A table cell as text (numbers with their column's decimals, '-' for missing)."""
    if v is None:
        return "-"
    if decimals is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:.{decimals}f}"
    return str(v)


templates.env.filters["fmt"] = fmt
# the mark and legend of a run trained on evaluation prompts: the same words as the CLI tables
templates.env.globals["contaminated_mark"] = CONTAMINATED_MARK
templates.env.globals["contaminated_legend"] = CONTAMINATED_LEGEND


def _by_prompt(samples: list[Sample]) -> list[dict[str, Any]]:
    """Samples grouped per (benchmark, prompt), in order."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for s in samples:
        p = out.setdefault(
            (s.benchmark, s.prompt_id),
            {"benchmark": s.benchmark, "id": s.prompt_id, "prompt": s.prompt, "grp": s.grp,
             "images": []},
        )  # fmt: skip
        p["images"].append(s)
    return list(out.values())


def _prompt_page(
    store: Any, run_id: str, benchmark: str | None, page: int, per_page: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of prompts of a run's last step: (prompts with their images, number of prompt pages)."""
    first = queries.sample_page(store, run_id, step=None, benchmark=benchmark, offset=0, limit=1)
    if first.total == 0:
        return [], 0
    k = _images_per_prompt(store, run_id, first.step, benchmark)
    limit = per_page * k
    rows = queries.sample_page(
        store, run_id, step=first.step, benchmark=benchmark, offset=page * limit, limit=limit
    )
    pages = -(-rows.total // limit)
    return _by_prompt(rows.samples), pages


def _images_per_prompt(store: Any, run_id: str, step: int | None, benchmark: str | None) -> int:
    with store.session() as con:
        sql = "SELECT max(image_index) + 1 FROM samples WHERE run_id = ? AND step = ?"
        params: list[Any] = [run_id, step]
        if benchmark is not None:
            sql += " AND benchmark = ?"
            params.append(benchmark)
        row = con.execute(sql, params).fetchone()
    return int(row[0]) if row and row[0] else 1


def _error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """A page saying what went wrong (pages answer HTML, the API answers JSON)."""
    return templates.TemplateResponse(
        request, "error.html", {"status": status, "message": message}, status_code=status
    )


@router.get("/", response_class=HTMLResponse)
def leaderboard_page(
    request: Request,
    store: StoreDep,
    cache: CacheDep,
    benchmark: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    """The leaderboard: one tab per benchmark with results, sortable tables (default: the main table)."""
    benches = cache.get(("benchmarks",), lambda: queries.benchmarks(store))
    tabs = [queries.MAIN] + [b.name for b in benches if b.runs]
    if benchmark is None:
        main = cache.get(
            ("leaderboard", queries.MAIN), lambda: queries.leaderboard(store, queries.MAIN)
        )
        benchmark = queries.MAIN if main or len(tabs) == 1 else tabs[1]
    try:
        tables = cache.get(
            ("leaderboard", benchmark), lambda: queries.leaderboard(store, benchmark)
        )
    except queries.NotFound as e:
        return _error_page(request, 404, str(e))
    runs = cache.get(("runs",), lambda: queries.runs(store))
    return templates.TemplateResponse(
        request,
        "leaderboard.html",
        {"benchmark": benchmark, "tabs": tabs, "tables": tables, "runs": runs},
    )


@router.get("/runs/{run_id:path}", response_class=HTMLResponse)
def run_page(
    request: Request,
    run_id: str,
    store: StoreDep,
    cache: CacheDep,
    benchmark: Annotated[str | None, Query(max_length=200)] = None,
    page: Annotated[int, Query(ge=0, le=10**6)] = 0,
) -> HTMLResponse:
    """A run: its record, tables, and an image grid per prompt with every score."""
    try:
        run = cache.get(("run", run_id), lambda: queries.run_detail(store, run_id))
        prompts, pages = cache.get(
            ("run-grid", run_id, benchmark, page),
            lambda: _prompt_page(store, run_id, benchmark, page, PROMPTS_PER_PAGE),
        )
    except queries.NotFound as e:
        return _error_page(request, 404, str(e))
    runs = cache.get(("runs",), lambda: queries.runs(store))
    benches = sorted({b for s in runs if s.run_id == run_id for b in s.benchmarks})
    return templates.TemplateResponse(
        request,
        "run.html",
        {
            "run": run,
            "prompts": prompts,
            "page": page,
            "pages": pages,
            "benchmark": benchmark,
            "benchmarks": benches,
        },
    )


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    store: StoreDep,
    cache: CacheDep,
    a: Annotated[str, Query(max_length=200)],
    b: Annotated[str, Query(max_length=200)],
    benchmark: Annotated[str | None, Query(max_length=200)] = None,
    page: Annotated[int, Query(ge=0, le=10**6)] = 0,
) -> HTMLResponse:
    """Two runs side by side: per-metric A - B with bootstrap intervals, and their images per prompt."""

    def build() -> dict[str, Any]:
        with store.session():
            ra, rb = queries.run_detail(store, a), queries.run_detail(store, b)
            try:
                deltas = compare_runs(store, a, b, benchmark=benchmark, resamples=1000)
                problem = None
            except InputError as e:  # nothing to compare; a bug in compare_runs stays a 500
                deltas, problem = [], str(e)
            pa, pages_a = _prompt_page(store, a, benchmark, page, PROMPTS_PER_PAGE)
            pb, pages_b = _prompt_page(store, b, benchmark, page, PROMPTS_PER_PAGE)
        right = {(p["benchmark"], p["id"]): p for p in pb}
        pairs = [(p, right.get((p["benchmark"], p["id"]))) for p in pa]
        only_b = [
            p
            for p in pb
            if (p["benchmark"], p["id"]) not in {(q["benchmark"], q["id"]) for q in pa}
        ]
        pairs += [(None, p) for p in only_b]
        return {
            "a": ra,
            "b": rb,
            "deltas": deltas,
            "problem": problem,
            "pairs": pairs,
            "pages": max(pages_a, pages_b),
        }

    try:
        ctx = cache.get(("compare", a, b, benchmark, page), build)
    except queries.NotFound as e:
        return _error_page(request, 404, str(e))
    return templates.TemplateResponse(
        request, "compare.html", {**ctx, "benchmark": benchmark, "page": page}
    )
