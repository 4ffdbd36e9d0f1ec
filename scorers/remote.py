"""Scorers over HTTP: ``RemoteScorer`` (client) and a small stdlib server, both speaking one JSON wire format.

A scorer whose dependencies conflict with ours (DeQA's mPLUG-Owl2 pinned to transformers 4.36, mmdetection-2.x
GenEval) runs in its own environment behind HTTP; ``RemoteScorer(url, name)`` then behaves like the in-process
scorer (same ``Scorer`` protocol), so the trainer and the harness do not care where a scorer runs. JSON and PNG
only: no pickle on the wire.

Wire format (``service/`` serves exactly this with FastAPI; ``make_server`` below serves it with the stdlib for
workers that live in old environments):

``POST {base_url}/v1/score`` with ``Content-Type: application/json`` and body::

    {"scorer":  "<registry name>",               # e.g. "deqa"
     "images":  ["<base64 PNG>", ...],           # standard base64 (RFC 4648, with padding) of PNG file bytes
     "prompts": ["<prompt>", ...],               # one per image, "" when the scorer ignores prompts
     "meta":    [{...}, ...] | null}             # one JSON object per image, or null

Success is ``200`` with body::

    {"scorer":  "<registry name>",
     "version": "<scorer version>",              # the server-side scorer's version, recorded with every score
     "values":  [float, ...],                    # raw metric value per image, native scale
     "rewards": [float, ...],                    # Flow-GRPO training scale per image
     "details": [{...}, ...] | null}

``values`` and ``rewards`` have one finite number per input image, in input order. Errors are JSON
``{"detail": "<message>"}`` (FastAPI's HTTPException shape): ``400`` for a bad request (malformed JSON, missing
field, undecodable image, mismatched lengths, a prompt the scorer cannot use), ``404`` for an unknown scorer
(the message lists the known ones), ``5xx`` when the scorer or server fails. Only ``POST /v1/score`` is part of the
contract; the stdlib server here also answers ``GET /v1/scorers`` with ``[{"name", "version"}, ...]``.

Client behaviour: requests are split into batches of ``batch_size`` images; each request has a ``timeout``;
connection errors (refused, reset) and 5xx answers are retried at most ``retries`` (<= 3) times with exponential
backoff, a 4xx answer or a timeout is not retried; the final failure raises ``RemoteScorerError`` carrying the
server's message. Optional ``jpeg_quality`` round-trips images through JPEG before sending (Flow-GRPO's reward
server transport is JPEG q75); it is recorded in each image's details.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import difflib
import http.client
import io
import json
import logging
import math
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

from flowbase.errors import InputError, UserError
from scorers import load
from scorers.base import Requirements, Scorer, Scores
from scorers.images import check_lengths, to_rgb_batch

log = logging.getLogger(__name__)

SCORE_PATH = "/v1/score"
MAX_RETRIES = 3


class RemoteScorerError(UserError, RuntimeError):
    """A remote scorer could not be reached or answered with an error."""


# ---------------------------------------------------------------------------------------------------- encoding


def encode_png(image: Image.Image) -> str:
    """PNG file bytes of an image, base64-encoded (the wire form of one image)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # lossless whatever the level; 1 is fastest
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(data: Any, index: int = 0) -> Image.Image:
    """The wire form of one image back to a loaded PIL image; ValueError when it is not an image."""
    if not isinstance(data, str):
        raise InputError(f"image {index}: expected a base64 string, got {type(data).__name__}")
    try:
        raw = base64.b64decode(data, validate=True)
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (binascii.Error, ValueError) as e:
        raise InputError(f"image {index}: not valid base64 ({e})") from None
    except (
        Exception
    ) as e:  # PIL raises UnidentifiedImageError, OSError, DecompressionBombError, ...
        raise InputError(f"image {index}: cannot be decoded as an image ({e})") from None
    return image


def jpeg_roundtrip(image: Image.Image, quality: int) -> Image.Image:
    """The image after a PIL JPEG save at ``quality`` and reload (Flow-GRPO's reward-server transport)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out


def score_request(
    name: str, images: Sequence[Image.Image], prompts: Sequence[str], meta: Sequence[Any] | None
) -> dict[str, Any]:
    """The JSON body of one ``POST /v1/score`` request."""
    return {
        "scorer": name,
        "images": [encode_png(im) for im in images],
        "prompts": list(prompts),
        "meta": None if meta is None else list(meta),
    }


def parse_response(name: str, body: Any, n: int) -> tuple[Scores, str]:
    """Validate a ``/v1/score`` answer for ``n`` images; return its Scores and the server's scorer version."""
    if not isinstance(body, dict):
        raise RemoteScorerError(
            f"remote scorer {name!r} answered {type(body).__name__}, not a JSON object"
        )
    missing = [k for k in ("scorer", "version", "values", "rewards") if k not in body]
    if missing:
        raise RemoteScorerError(f"remote scorer {name!r} answer lacks {', '.join(missing)}")
    if body["scorer"] != name:
        raise RemoteScorerError(
            f"asked for scorer {name!r}, the server answered for {body['scorer']!r}"
        )
    out: dict[str, list[float]] = {}
    for key in ("values", "rewards"):
        col = body[key]
        if not isinstance(col, list) or len(col) != n:
            got = len(col) if isinstance(col, list) else type(col).__name__
            raise RemoteScorerError(f"remote scorer {name!r} returned {got} {key} for {n} images")
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in col
        ):
            raise RemoteScorerError(
                f"remote scorer {name!r} returned non-finite or non-numeric {key}"
            )
        out[key] = [float(v) for v in col]
    details = body.get("details")
    if details is not None and (not isinstance(details, list) or len(details) != n):
        raise RemoteScorerError(
            f"remote scorer {name!r} returned details not aligned with {n} images"
        )
    return Scores(out["values"], out["rewards"], details), str(body["version"])


# ---------------------------------------------------------------------------------------------------- client


def _server_message(raw: bytes) -> str:
    """The ``detail`` of a JSON error body, else the (trimmed) text of the body."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:2000] or "(empty body)"
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            if key in body:
                value = body[key]
                if (
                    isinstance(value, dict) and "message" in value
                ):  # OpenAI-style {"error": {"message": ...}}
                    value = value["message"]
                return value if isinstance(value, str) else json.dumps(value)
    return text[:2000]


def _is_timeout(e: BaseException) -> bool:
    reason = getattr(e, "reason", e)
    return isinstance(reason, (TimeoutError, socket.timeout))


def post_json(
    url: str,
    body: Any,
    *,
    timeout: float,
    retries: int = MAX_RETRIES,
    backoff: float = 0.5,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """POST a JSON body and return the decoded JSON answer, retrying connection errors and 5xx."""
    if not 0 <= retries <= MAX_RETRIES:
        raise InputError(f"retries={retries}: must be between 0 and {MAX_RETRIES}")
    try:
        data = json.dumps(body, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"request body is not JSON-serialisable: {e}") from None
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    problem = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            problem = f"{url} answered HTTP {e.code}: {_server_message(e.read())}"
            if 500 <= e.code < 600:
                log.warning("%s (attempt %d of %d)", problem, attempt + 1, retries + 1)
                continue
            raise RemoteScorerError(problem) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            if _is_timeout(e):
                raise RemoteScorerError(f"{url} did not answer within {timeout:g} s") from None
            problem = f"cannot reach {url}: {getattr(e, 'reason', e)}"
            log.warning("%s (attempt %d of %d)", problem, attempt + 1, retries + 1)
            continue
        try:
            return json.loads(raw)
        except ValueError:
            raise RemoteScorerError(
                f"{url} answered with something that is not JSON: {raw[:200]!r}"
            ) from None
    raise RemoteScorerError(f"{problem} (gave up after {retries + 1} attempts)")


def score_url(url: str) -> str:
    """The full ``/v1/score`` URL for a base URL (a URL already ending in it is kept)."""
    url = url.rstrip("/")
    return url if url.endswith(SCORE_PATH) else url + SCORE_PATH


class RemoteScorer:
    """Any scorer served over HTTP (see the module docstring for the wire format)."""

    requires = Requirements()

    def __init__(
        self,
        url: str,
        name: str,
        *,
        timeout: float = 120.0,
        retries: int = MAX_RETRIES,
        backoff: float = 0.5,
        batch_size: int = 64,
        jpeg_quality: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size={batch_size}: must be >= 1")
        if not 0 <= retries <= MAX_RETRIES:
            raise InputError(f"retries={retries}: must be between 0 and {MAX_RETRIES}")
        if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
            raise InputError(f"jpeg_quality={jpeg_quality}: must be between 1 and 100")
        self.name = name
        self.url = score_url(url)
        self.version = "remote"  # replaced by the server's scorer version after the first call
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.batch_size, self.jpeg_quality = batch_size, jpeg_quality

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        check_lengths(images, prompts, meta)
        rgb = to_rgb_batch(images)
        if self.jpeg_quality is not None:
            rgb = [jpeg_roundtrip(im, self.jpeg_quality) for im in rgb]
        values: list[float] = []
        rewards: list[float] = []
        details: list[dict[str, Any]] = []
        any_details = False
        for start in range(0, len(rgb), self.batch_size):
            stop = start + self.batch_size
            chunk_meta = None if meta is None else meta[start:stop]
            body = score_request(self.name, rgb[start:stop], prompts[start:stop], chunk_meta)
            answer = post_json(
                self.url, body, timeout=self.timeout, retries=self.retries, backoff=self.backoff
            )
            scores, version = parse_response(self.name, answer, len(body["images"]))
            if self.version not in ("remote", version):
                log.warning("remote %s changed version %s -> %s", self.name, self.version, version)
            self.version = version
            values += scores.values
            rewards += scores.rewards
            any_details |= scores.details is not None
            details += scores.details or [{} for _ in scores.values]
        if self.jpeg_quality is not None:
            details = [{**d, "transport": f"jpeg{self.jpeg_quality}"} for d in details]
            any_details = True
        return Scores(values, rewards, details if any_details else None)


# ---------------------------------------------------------------------------------------------------- server


class RequestError(UserError):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def handle_score(scorers: Mapping[str, Scorer], body: Any) -> dict[str, Any]:
    """Serve one decoded ``/v1/score`` body with the given scorers; raises RequestError for bad requests."""
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object")
    name = body.get("scorer")
    if not isinstance(name, str):
        raise RequestError(400, "missing field 'scorer' (a registry name)")
    if name not in scorers:
        hint = difflib.get_close_matches(name, list(scorers), n=3)
        maybe = f" (did you mean {', '.join(hint)}?)" if hint else ""
        raise RequestError(
            404, f"scorer {name!r} is not served here{maybe}; served: {', '.join(scorers)}"
        )
    images, prompts, meta = body.get("images"), body.get("prompts"), body.get("meta")
    if not isinstance(images, list) or not isinstance(prompts, list):
        raise RequestError(400, "fields 'images' and 'prompts' must be lists")
    if not all(isinstance(p, str) for p in prompts):
        raise RequestError(400, "every prompt must be a string")
    if meta is not None and not (isinstance(meta, list) and all(isinstance(m, dict) for m in meta)):
        raise RequestError(400, "field 'meta' must be null or a list of objects")
    try:
        decoded = [decode_image(data, i) for i, data in enumerate(images)]
        check_lengths(decoded, prompts, meta)
        scores = scorers[name](decoded, prompts, meta)
    except ValueError as e:  # bad images, mismatched lengths, prompts the scorer cannot use
        raise RequestError(400, str(e)) from None
    return {
        "scorer": name,
        "version": scorers[name].version,
        "values": [float(v) for v in scores.values],
        "rewards": [float(r) for r in scores.rewards],
        "details": scores.details,
    }


class _Handler(BaseHTTPRequestHandler):
    server: ScoreServer

    def _send(self, status: int, body: Any) -> None:
        try:
            data = json.dumps(body, allow_nan=False).encode("utf-8")
        except ValueError as e:
            status, data = (
                500,
                json.dumps({"detail": f"scorer output is not valid JSON: {e}"}).encode(),
            )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        if self.path.rstrip("/") == "/v1/scorers":
            self._send(
                200, [{"name": n, "version": s.version} for n, s in self.server.scorers.items()]
            )
        else:
            self._send(404, {"detail": f"no route GET {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") != SCORE_PATH:
            self._send(404, {"detail": f"no route POST {self.path}; use {SCORE_PATH}"})
            return
        try:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError as e:
                raise RequestError(400, f"body is not valid JSON: {e}") from None
            with self.server.lock:  # scorers (GPU models, OCR engines) are not assumed thread-safe
                answer = handle_score(self.server.scorers, body)
            self._send(200, answer)
        except RequestError as e:
            self._send(e.status, {"detail": e.message})
        except Exception as e:
            log.exception("scorer failed")
            self._send(500, {"detail": f"{type(e).__name__}: {e}"})

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class ScoreServer(ThreadingHTTPServer):
    """A stdlib HTTP server for the wire format; ``serve_forever`` in a thread or the main loop."""

    daemon_threads = True

    def __init__(
        self, scorers: Mapping[str, Scorer], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__((host, port), _Handler)
        self.scorers = dict(scorers)
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that left (timeout, ctrl-c) is not a server error; everything else is logged."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            log.debug("client %s left before the answer", client_address)
        else:
            log.exception("error while serving %s", client_address)

    @property
    def url(self) -> str:
        """Base URL to hand to RemoteScorer."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def main(argv: list[str] | None = None) -> None:
    """``python -m scorers.remote --scorers jpeg ocr --port 18080``: serve registered scorers (stdlib server)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--scorers", nargs="+", required=True, help="registry names to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    server = ScoreServer({n: load(n) for n in args.scorers}, args.host, args.port)
    log.info("serving %s on %s%s", ", ".join(args.scorers), server.url, SCORE_PATH)
    server.serve_forever()


if __name__ == "__main__":  # pragma: no cover
    main()
