"""Request-body limits as plain ASGI middleware: size (413) and the time a client may take to send it (408).

uvicorn has neither limit. The middleware reads the whole body before the app sees it, refusing it as soon as the
declared ``Content-Length`` or the bytes received pass ``max_bytes``, and answering 408 when the body has not
arrived within ``timeout`` seconds (a client that opens a request and trickles bytes holds a worker otherwise).
The app then gets the buffered body, so routes are plain synchronous FastAPI routes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyLimits:
    """ASGI middleware bounding request bodies by size and arrival time."""

    def __init__(self, app: Any, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _answer(send, 400, "Content-Length is not a number")
                return
            if size > self.max_bytes:
                await _answer(send, 413, self._too_big(f"{size} bytes"))
                return
        chunks: list[bytes] = []
        total = 0
        more = True
        try:
            with anyio.fail_after(self.timeout):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    total += len(chunk)
                    if total > self.max_bytes:
                        await _answer(send, 413, self._too_big(f"more than {self.max_bytes} bytes"))
                        return
                    chunks.append(chunk)
                    more = message.get("more_body", False)
        except TimeoutError:
            log.info(
                "%s %s: body not received within %g s", scope["method"], scope["path"], self.timeout
            )
            await _answer(
                send,
                408,
                f"the request body did not arrive within {self.timeout:g} s "
                f"({total} bytes received); send it faster or in smaller requests",
            )
            return
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_big(self, what: str) -> str:
        return (
            f"request body of {what} is over this server's limit of {self.max_bytes} bytes; "
            "send fewer or smaller images per request"
        )


async def _answer(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status in (408, 413):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
