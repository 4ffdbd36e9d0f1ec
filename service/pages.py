"""Server-rendered HTML pages: the leaderboard, the runs, a run (tables, training curves, an image grid per
prompt), and two runs side by side.

Jinja2 templates in ``service/templates`` (autoescaped), one stylesheet and one small script in
``service/static`` (column sorting, filter boxes), curves as inline SVG (``service.charts``), nothing from a
CDN: the pages work offline. They read through the same
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
from harness.standing import PASS_FAIL, minute, protocol_diff
from harness.tables import CONTAMINATED_LEGEND, CONTAMINATED_MARK
from service import queries
from service.charts import curves
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
templates.env.filters["minute"] = minute
# scorers whose images are marked pass (1) / fail (0)
templates.env.globals["pass_fail"] = PASS_FAIL
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
    step = store.last_step(run_id)
    keys = queries.prompt_keys(store, run_id, step, benchmark)
    chunk = keys[page * per_page : (page + 1) * per_page]
    return _by_prompt(queries.prompt_samples(store, run_id, step, chunk)), -(-len(keys) // per_page)


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
    rank_all: bool = False,
) -> HTMLResponse:
    """The leaderboard: one tab per benchmark with results, sortable tables (default: the main table), ranked
    by the benchmark's primary metric; partial runs and runs of another protocol apart, below."""
    benches = cache.get(("benchmarks",), lambda: queries.benchmarks(store))
    tabs = [queries.MAIN] + [b.name for b in benches if b.runs]
    if benchmark is None:
        main = cache.get(
            ("leaderboard", queries.MAIN, False), lambda: queries.leaderboard(store, queries.MAIN)
        )
        benchmark = queries.MAIN if main or len(tabs) == 1 else tabs[1]
    try:
        tables = cache.get(
            ("leaderboard", benchmark, rank_all),
            lambda: queries.leaderboard(store, benchmark, rank_all),
        )
    except queries.NotFound as e:
        return _error_page(request, 404, str(e))
    runs = cache.get(("runs",), lambda: queries.runs(store))
    return templates.TemplateResponse(
        request,
        "leaderboard.html",
        {
            "benchmark": benchmark,
            "tabs": tabs,
            "tables": tables,
            "runs": runs,
            "rank_all": rank_all,
        },
    )


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request, store: StoreDep, cache: CacheDep) -> HTMLResponse:
    """Every run, newest first, with a filter box and the form to compare two."""
    runs = cache.get(("runs",), lambda: queries.runs(store))
    return templates.TemplateResponse(request, "runs.html", {"runs": list(reversed(runs))})


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
    charts = cache.get(("curves", run_id), lambda: curves(queries.history(store, run_id)))
    return templates.TemplateResponse(
        request,
        "run.html",
        {
            "curves": charts,
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
            # the images of the prompts both runs hold (what the deltas compare), page by page
            sa, sb = store.last_step(a), store.last_step(b)
            ka = queries.prompt_keys(store, a, sa, benchmark)
            kb = set(queries.prompt_keys(store, b, sb, benchmark))
            common = [k for k in ka if k in kb]
            chunk = common[page * PROMPTS_PER_PAGE : (page + 1) * PROMPTS_PER_PAGE]
            pa = _by_prompt(queries.prompt_samples(store, a, sa, chunk))
            pb = {
                (p["benchmark"], p["id"]): p
                for p in _by_prompt(queries.prompt_samples(store, b, sb, chunk))
            }
        return {
            "a": ra,
            "b": rb,
            "deltas": deltas,
            "problem": problem,
            "pairs": [(p, pb.get((p["benchmark"], p["id"]))) for p in pa],
            "pages": -(-len(common) // PROMPTS_PER_PAGE),
            "shared": len(common),
            "only_a": len(ka) - len(common),
            "only_b": len(kb) - len(common),
            "diff": protocol_diff(ra.protocol, rb.protocol),
        }

    try:
        ctx = cache.get(("compare", a, b, benchmark, page), build)
    except queries.NotFound as e:
        return _error_page(request, 404, str(e))
    return templates.TemplateResponse(
        request, "compare.html", {**ctx, "benchmark": benchmark, "page": page}
    )
