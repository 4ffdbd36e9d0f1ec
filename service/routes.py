"""The JSON API under ``/v1`` (and ``/health``): scoring, benchmarks, leaderboard, runs, samples and images.

Routes are synchronous ``def`` (FastAPI runs them in its thread pool), except ``/v1/score``, which awaits its
scorer's batch; each one parses, calls one function of ``service.queries`` or a scorer's batcher, and maps
failures to an HTTP status with a message that says what to do. Writes need the bearer token
(``deps.require_token``).
"""

from __future__ import annotations

import asyncio
import difflib
import io
import json
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from flowbase.errors import InputError, UserError, one_line
from results.store import StoreError, to_json
from scorers.base import Requirements, check_meta
from service import queries
from service.batching import ScorerBug
from service.deps import BatchersDep, CacheDep, SettingsDep, StoreDep, TokenDep
from service.schemas import (
    SHA256,
    BenchmarkInfo,
    DeleteResult,
    Error,
    Health,
    ImportResult,
    Leaderboard,
    RunDetail,
    RunImport,
    RunList,
    SamplePage,
    ScoreRequest,
    ScoreResponse,
    ScorerInfo,
)
from service.wire import WireError, decode_image

log = logging.getLogger(__name__)

router = APIRouter()


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": Error} for c in (400, *codes)}


RunId = Annotated[
    str, Path(pattern=r"^.{1,200}$", description="run id (see GET /v1/runs); may contain '/'")
]


@router.get("/health")
def health(request: Request, batchers: BatchersDep) -> Health:
    """Liveness: the store path, the served scorers and whether writes are enabled."""
    store = request.app.state.store
    return Health(
        status="ok",
        store=str(store.path),
        scorers=list(batchers),
        writes=request.app.state.token is not None,
    )


@router.get("/v1/scorers")
def list_scorers(batchers: BatchersDep) -> list[ScorerInfo]:
    """The served scorers with their versions and batching counters."""
    return [
        ScorerInfo(
            name=name,
            version=str(b.scorer.version),
            gpu_gb=float(getattr(getattr(b.scorer, "requires", None), "gpu_gb", 0.0)),
            batching=b.enabled,
            queued=b.pending,
            requests=b.stats.requests,
            calls=b.stats.calls,
        )
        for name, b in batchers.items()
    ]


def _decode_all(data: list[str], max_pixels: int) -> list[Any]:
    return [decode_image(d, i, max_pixels) for i, d in enumerate(data)]


@router.post("/v1/score", responses=_errors(404, 408, 413, 500, 503))
async def score(body: ScoreRequest, batchers: BatchersDep, settings: SettingsDep) -> ScoreResponse:
    """Score images with one served scorer (``scorers/remote.py``'s wire format).

    The one ``async`` route: images are decoded in the thread pool, then the request awaits its batch without
    holding a thread, so a queue of reward requests behind a slow scorer never starves the leaderboard."""
    batcher = batchers.get(body.scorer)
    if batcher is None:
        hint = difflib.get_close_matches(body.scorer, list(batchers), n=3)
        maybe = f" (did you mean {', '.join(hint)}?)" if hint else ""
        served = ", ".join(batchers) or "none"
        raise HTTPException(
            404, f"scorer {body.scorer!r} is not served here{maybe}; served: {served}"
        )
    n = len(body.images)
    if n > settings.max_images:
        raise HTTPException(
            413,
            f"{n} images in one request; this server takes at most {settings.max_images}: "
            "split the batch",
        )
    if len(body.prompts) != n:
        raise HTTPException(
            400, f"got {n} images but {len(body.prompts)} prompts; send one per image"
        )
    if body.meta is not None and len(body.meta) != n:
        raise HTTPException(
            400, f"got {n} images but {len(body.meta)} metadata entries; send one per image or null"
        )
    version = str(batcher.scorer.version)
    if n == 0:
        return ScoreResponse(
            scorer=body.scorer, version=version, values=[], rewards=[], details=None
        )
    requires = getattr(batcher.scorer, "requires", None)
    if isinstance(requires, Requirements):  # the metadata it declares it needs, before any decoding
        try:
            check_meta(body.scorer, requires, body.meta)
        except InputError as e:
            raise HTTPException(400, one_line(e)) from None
    try:
        images = await run_in_threadpool(_decode_all, body.images, settings.max_pixels)
    except WireError as e:
        raise HTTPException(e.status, e.message) from None
    future = batcher.submit(images, body.prompts, body.meta)
    try:  # on timeout wait_for cancels the wrapper, which cancels the job (skipped if still queued)
        scores = await asyncio.wait_for(asyncio.wrap_future(future), settings.score_timeout_s)
    except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11 on
        raise HTTPException(
            503,
            f"scorer {body.scorer} did not answer within {settings.score_timeout_s:g} s "
            f"({batcher.pending} requests queued); retry later or send fewer images",
            headers={"Retry-After": "5"},
        ) from None
    except ScorerBug as e:
        log.error("%s", e)
        raise HTTPException(500, str(e)) from None
    except InputError as e:  # the scorer refused this input (a prompt it cannot use, missing meta)
        raise HTTPException(400, f"scorer {body.scorer}: {one_line(e)}") from None
    except UserError as e:
        # missing weights, an extra or a remote worker on this server: the operator's to fix, not the client's
        log.error("scorer %s: %s", body.scorer, one_line(e))
        raise HTTPException(500, f"scorer {body.scorer}: {one_line(e)}") from None
    except ValueError as e:
        # a scorer from outside this package refusing its input the old way, with a plain ValueError
        raise HTTPException(400, f"scorer {body.scorer}: {e}") from None
    except Exception as e:
        log.exception("scorer %s failed", body.scorer)
        raise HTTPException(500, f"scorer {body.scorer} failed: {type(e).__name__}: {e}") from None
    try:
        details = None if scores.details is None else json.loads(to_json(list(scores.details)))
    except ValueError as e:
        raise HTTPException(
            500, f"scorer {body.scorer} returned details that are not JSON: {e}"
        ) from None
    return ScoreResponse(
        scorer=body.scorer,
        version=version,
        values=[float(v) for v in scores.values],
        rewards=[float(r) for r in scores.rewards],
        details=details,
    )


@router.get("/v1/benchmarks", responses=_errors(503))
def list_benchmarks(store: StoreDep, cache: CacheDep) -> list[BenchmarkInfo]:
    """The benchmarks (registry and prompt files found in the store) and how many runs have scores."""
    return cache.get(("benchmarks",), lambda: queries.benchmarks(store))


@router.get("/v1/leaderboard/{benchmark}", responses=_errors(404, 503))
def leaderboard(
    benchmark: Annotated[str, Path(max_length=200, description="`main` or a benchmark name")],
    store: StoreDep,
    cache: CacheDep,
    sort: Annotated[str | None, Query(max_length=200, description="column to sort by")] = None,
    order: Literal["asc", "desc"] = "desc",
    model: Annotated[str | None, Query(max_length=500, description="model contains")] = None,
    protocol: Annotated[str | None, Query(max_length=500, description="protocol contains")] = None,
    complete: Annotated[bool, Query(description="only rows over the whole benchmark")] = False,
    rank_all: Annotated[
        bool, Query(description="rank partial runs and runs of another protocol with the others")
    ] = False,
) -> Leaderboard:
    """Each run's last step on a benchmark, one row per model and protocol, per-task columns; ranked by the
    benchmark's primary metric (``rank``), partial runs and runs of another protocol after them with
    ``rank`` null and ``status`` saying why, unless ``rank_all``."""
    tables = cache.get(
        ("leaderboard", benchmark, rank_all),
        lambda: queries.leaderboard(store, benchmark, rank_all),
    )
    try:
        tables = queries.sort_and_filter(
            tables,
            sort=sort,
            descending=order == "desc",
            model=model,
            protocol=protocol,
            complete=complete,
        )
    except InputError as e:  # an unknown sort column
        raise HTTPException(400, str(e)) from None
    return Leaderboard(benchmark=benchmark, tables=tables)


@router.get("/v1/runs", responses=_errors(503))
def list_runs(
    store: StoreDep,
    cache: CacheDep,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> RunList:
    """The runs in the store, oldest first, paginated."""
    runs = cache.get(("runs",), lambda: queries.runs(store))
    return RunList(total=len(runs), offset=offset, runs=runs[offset : offset + limit])


@router.get("/v1/runs/{run_id:path}/samples", responses=_errors(404, 503))
def get_samples(
    run_id: RunId,
    store: StoreDep,
    cache: CacheDep,
    settings: SettingsDep,
    benchmark: Annotated[str | None, Query(max_length=200)] = None,
    step: Annotated[int | None, Query(ge=0, le=2**31 - 1, description="default: last")] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=500)] = None,
) -> SamplePage:
    """A page of a run's images in prompt order, each with every scorer's value and details."""
    n = limit or settings.page_size
    key = ("samples", run_id, benchmark, step, offset, n)
    return cache.get(
        key,
        lambda: queries.sample_page(
            store, run_id, step=step, benchmark=benchmark, offset=offset, limit=n
        ),
    )


@router.get("/v1/runs/{run_id:path}", responses=_errors(404, 503))
def get_run(run_id: RunId, store: StoreDep, cache: CacheDep) -> RunDetail:
    """One run: model, protocol, provenance and its tables."""
    return cache.get(("run", run_id), lambda: queries.run_detail(store, run_id))


@router.get(
    "/v1/images/{sha256}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **_errors(404, 500, 503)},
)
def get_image(
    sha256: Annotated[str, Path(pattern=SHA256)],
    store: StoreDep,
    size: Annotated[int | None, Query(ge=16, le=1024, description="thumbnail side")] = None,
) -> Response:
    """A stored image (PNG) by its sha256, or a thumbnail of at most ``size`` pixels a side."""
    data = queries.image_bytes(store, sha256)
    if size is not None:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("RGB")
                if max(im.size) > size:
                    im.thumbnail((size, size))
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                data = buf.getvalue()
        except Exception as e:  # noqa: BLE001 - a stored file PIL cannot decode (imported before checks)
            raise StoreError(
                f"stored image {sha256[:12]}... cannot be decoded ({type(e).__name__}: {e}); "
                "`harness store check` lists damaged images: restore or delete its run"
            ) from None
    return Response(
        data,
        media_type="image/png",
        headers={"Cache-Control": "public, max-age=31536000, immutable", "ETag": f'"{sha256}"'},
    )


@router.post(
    "/v1/runs",
    dependencies=[TokenDep],
    status_code=201,
    responses=_errors(401, 403, 409, 413, 503),
)
def import_run(
    body: RunImport, request: Request, store: StoreDep, cache: CacheDep, settings: SettingsDep
) -> ImportResult:
    """Import (a chunk of) a finished run: its record, samples with PNGs, and scores. Needs the token."""
    with request.app.state.write_lock:
        result = queries.import_run(store, body, settings.max_pixels)
    cache.clear()
    return result


@router.delete(
    "/v1/runs/{run_id:path}", dependencies=[TokenDep], responses=_errors(401, 403, 404, 503)
)
def delete_run(run_id: RunId, request: Request, store: StoreDep, cache: CacheDep) -> DeleteResult:
    """Delete a run's record, samples and scores (image files stay). Needs the token."""
    with request.app.state.write_lock:
        result = queries.delete_run(store, run_id)
    cache.clear()
    return result
