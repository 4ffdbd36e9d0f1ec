"""A minimal Chrome DevTools Protocol client for the page tests: headless Chromium over ``--remote-debugging-pipe``.

No websocket library and no browser download: Debian's ``chromium`` reads CDP messages (JSON, each ending in a NUL
byte) on file descriptor 3 and writes on 4. ``Browser`` starts it with a throwaway profile, opens one tab, and
records what a person would notice: console errors, uncaught exceptions, failed requests and HTTP errors.
``find_chromium()`` is None where Chromium is not installed (the page tests then skip, saying how to install it).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

INSTALL = "apt-get install -y chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    """The Chromium binary: $CHROMIUM, or chromium / chromium-browser on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _above_nine(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class CDPError(RuntimeError):
    """The browser answered a command with an error, or did not answer in time."""


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(
        self, binary: str, width: int = 1400, height: int = 1000, timeout: float = 30
    ) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="cdp-profile-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # move the child's ends above 9, so that the redirections below never close what they just made
        to_browser_r, from_browser_w = (_above_nine(to_browser_r), _above_nine(from_browser_w))
        # bash (dash takes one-digit fds only) puts our pipe ends on the descriptors 3 and 4 that --remote-debugging-pipe expects
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self.proc = subprocess.Popen(
            [
                "bash",
                "-c",
                script,
                binary,
                *FLAGS,
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    # --- protocol ----------------------------------------------------------------------------------

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                data = os.read(self._from_browser, 1 << 16)
            except OSError:
                data = b""
            if not data:
                with self._lock:
                    for f in self._pending.values():
                        f.set_exception(CDPError("the browser closed the pipe"))
                    self._pending.clear()
                return
            buf += data
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._lock:
                        fut = self._pending.pop(msg["id"], None)
                    if fut is None:
                        continue
                    if "error" in msg:
                        fut.set_exception(CDPError(str(msg["error"])))
                    else:
                        fut.set_result(msg.get("result", {}))
                else:
                    self.events.append(msg)

    def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        """Send one command (to the page session if ``session``) and wait for its result."""
        with self._lock:
            self._next_id += 1
            mid = self._next_id
            fut: Future[Any] = Future()
            self._pending[mid] = fut
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        try:
            return fut.result(timeout=self.timeout)
        except TimeoutError:
            raise CDPError(f"no answer to {method} within {self.timeout} s") from None

    def send(self, method: str, **params: Any) -> Any:
        """A command to the page."""
        return self.call(method, session=self.session, **params)

    def wait_event(
        self, method: str, since: int = 0, timeout: float | None = None
    ) -> dict[str, Any]:
        """The first event called ``method`` at or after index ``since`` of ``events``."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            for e in self.events[since:]:
                if e.get("method") == method:
                    return e
            time.sleep(0.02)
        raise CDPError(f"no {method} event within {timeout or self.timeout} s")

    # --- what tests use ----------------------------------------------------------------------------

    def goto(self, url: str) -> None:
        """Open ``url`` and wait for its load event."""
        mark = len(self.events)
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise CDPError(f"cannot open {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired", since=mark)

    def js(self, expression: str) -> Any:
        """Evaluate JavaScript in the page (promises awaited) and return its JSON value."""
        r = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in r:
            raise CDPError(f"JavaScript error: {r['exceptionDetails']}")
        return r["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed + released) at the centre of the element ``selector``."""
        box = self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )

    def load_all_images(self) -> list[dict[str, Any]]:
        """Scroll through the page so lazy images load, wait for them; each image's src and natural size."""
        return self.js(
            """(async () => {
                 for (let y = 0; y < document.body.scrollHeight; y += window.innerHeight / 2) {
                   window.scrollTo(0, y); await new Promise(r => setTimeout(r, 30));
                 }
                 const imgs = Array.from(document.images);
                 imgs.forEach(i => { i.loading = 'eager'; });
                 await Promise.all(imgs.map(i => i.complete ? null
                   : new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })));
                 window.scrollTo(0, 0);
                 return imgs.map(i => ({src: i.src, w: i.naturalWidth, h: i.naturalHeight}));
               })()"""
        )

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, failed loads and HTTP error answers seen so far."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console." + p["type"] + ": " + json.dumps(p.get("args"))[:300])
            elif m == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p.get("exceptionDetails"))[:300])
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: " + p["entry"].get("text", "") + " " + p["entry"].get("url", ""))
            elif m == "Network.loadingFailed" and not p.get("canceled"):
                out.append("failed load: " + json.dumps(p)[:300])
            elif m == "Network.responseReceived" and p.get("response", {}).get("status", 0) >= 400:
                out.append(f"HTTP {p['response']['status']}: {p['response'].get('url')}")
        return out

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page."""
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """End the browser and remove its profile."""
        try:
            self.call("Browser.close")
        except CDPError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
