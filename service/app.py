"""``create_app(settings)``: the FastAPI app that puts the scorers and the results store behind HTTP.

One process serves the whole team: the reward server a Flow-GRPO run calls (``POST /v1/score``, the wire format
of ``scorers/remote.py``) and the shared leaderboard (JSON under ``/v1`` and HTML pages). Nothing heavy happens at
import: the ``lifespan`` opens the store (creating it if missing) and loads the scorers named in the settings, one
batching worker each. ``harness serve`` runs it under uvicorn.

Error answers are always ``{"detail": "<message>"}``; a request the server cannot parse is a 400 (as the wire
format says), not FastAPI's default 422.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from flowbase.errors import InputError, UnknownNameError, UserError, one_line
from results.store import Store, StoreError
from scorers import load
from scorers.base import Scorer
from service import pages, routes
from service.batching import Batcher
from service.deps import ReadCache
from service.limits import BodyLimits
from service.queries import Conflict, NotFound
from service.settings import Settings, load_settings
from service.wire import WireError

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
VERSION = "1"


def load_scorers(settings: Settings) -> dict[str, Batcher]:
    """Instantiate the settings' scorers, each behind its own batching worker."""
    return batch({name: load(name) for name in settings.scorers}, settings)


def batch(scorers: Mapping[str, Scorer], settings: Settings) -> dict[str, Batcher]:
    """A batching worker per scorer, with the settings' window and size."""
    out = {}
    for name, scorer in scorers.items():
        out[name] = Batcher(
            scorer,
            window=settings.batch_window_ms / 1000,
            max_images=settings.batch_max_images,
            enabled=settings.batching,
        )
        log.info("serving scorer %s (version %s)", name, scorer.version)
    return out


def serve(settings: Settings) -> None:
    """Check the settings, open the store, load the scorers, then run the app under uvicorn until stopped."""
    import uvicorn

    settings.write_token()  # an unreadable token file fails here, in one line
    Store(settings.store, lock_timeout=settings.lock_timeout_s)  # creates or checks the store
    logging.getLogger("service").setLevel(logging.INFO)
    loaded = {name: load(name) for name in settings.scorers}
    app = create_app(settings, loaded)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")


def create_app(
    settings: Settings | None = None, scorers: Mapping[str, Scorer] | None = None
) -> FastAPI:
    """The service app for ``settings`` (default: from the environment).

    The lifespan loads the scorers named in ``settings``; ``scorers`` hands it loaded ones instead (``serve``
    loads them first so a missing weight is one error line, tests pass fakes).
    """
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        token = settings.write_token()
        store = Store(settings.store, lock_timeout=settings.lock_timeout_s)
        store.hold(
            idle_s=settings.store_idle_s
        )  # one connection between requests, closed when idle
        app.state.settings = settings
        app.state.token = token
        app.state.store = store
        app.state.memory_lock = threading.Lock()
        app.state.write_lock = threading.Lock()
        app.state.cache = ReadCache(None if store.memory or not settings.read_cache else store.path)
        app.state.batchers = load_scorers(settings) if scorers is None else batch(scorers, settings)
        if not settings.loopback:
            log.warning(
                "listening on %s, not loopback: anyone who can reach it can score and read",
                settings.host,
            )
        log.info("store %s; writes %s", store.path, "enabled" if token else "disabled (no token)")
        try:
            yield
        finally:
            for b in app.state.batchers.values():
                b.close()
            store.close()

    app = FastAPI(
        title="Flow-OPD service",
        version=VERSION,
        summary="Scorers (a reward server) and the results leaderboard over HTTP.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI loads from a CDN; the service works offline. Schema: /openapi.json
        redoc_url=None,
    )
    app.add_middleware(
        BodyLimits, max_bytes=settings.max_request_bytes, timeout=settings.body_timeout_s
    )
    _add_error_handlers(app)

    app.include_router(routes.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    return app


def _add_error_handlers(app: FastAPI) -> None:
    def answer(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()))
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        more = f" (and {len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
        return answer(400, "; ".join(parts) + more)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return answer(404, str(exc))

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        return answer(409, str(exc))

    @app.exception_handler(WireError)
    async def wire(request: Request, exc: WireError) -> JSONResponse:
        return answer(exc.status, exc.message)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        msg = str(exc)
        if "locked" in msg:
            return answer(503, msg, {"Retry-After": "5"})
        log.error("store error on %s: %s", request.url.path, msg)
        return answer(500, msg)

    # The rest of the UserError family (the handlers above are its more specific members): a bad value in the
    # request is the client's (400), an unknown name too (404); missing weights, an extra or a file on this
    # server are the operator's (500, logged as one line). Any other exception is a bug: Starlette answers 500
    # and logs its traceback.
    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        if isinstance(exc, InputError):
            return answer(400, one_line(exc))
        if isinstance(exc, UnknownNameError):
            return answer(404, one_line(exc))
        log.error("%s on %s: %s", type(exc).__name__, request.url.path, one_line(exc))
        return answer(500, one_line(exc))
