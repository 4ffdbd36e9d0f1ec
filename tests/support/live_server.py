"""A real uvicorn server on loopback, in a thread of the test process: ``with LiveServer(app) as url: ...``.

Port 0 lets the kernel pick a free port; the bound one is read back from the listening socket. Tests then talk
HTTP over a real socket (httpx, urllib, ``RemoteScorer``, Chromium), which is what a TestClient skips.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn


class LiveServer:
    """Run an ASGI app under uvicorn on 127.0.0.1 until the ``with`` block ends."""

    def __init__(self, app: Any, **config: Any) -> None:
        cfg = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **config)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn exited during start-up (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 30 s")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
