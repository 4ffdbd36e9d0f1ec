"""RemoteScorer against real HTTP servers on loopback: the stdlib ScoreServer serving the real ``jpeg`` scorer,
plus scripted servers for payload capture, retries, errors and timeouts."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from PIL import Image

from scorers.base import Requirements, Scores
from scorers.jpeg import JpegCompressibility
from scorers.remote import (
    RemoteScorer,
    RemoteScorerError,
    RequestError,
    ScoreServer,
    handle_score,
    jpeg_roundtrip,
    post_json,
)


def images(n: int, size: int = 24) -> list[Image.Image]:
    rng = np.random.default_rng(n)
    return [
        Image.fromarray(rng.integers(0, 255, (size, size + 3, 3), dtype=np.uint8)) for _ in range(n)
    ]


@pytest.fixture
def jpeg_server() -> Iterator[ScoreServer]:
    server = ScoreServer({"jpeg": JpegCompressibility()})
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_remote_jpeg_equals_in_process(jpeg_server: ScoreServer) -> None:
    imgs, prompts = images(5), [f"p{i}" for i in range(5)]
    remote = RemoteScorer(jpeg_server.url, "jpeg", batch_size=2)  # 3 requests: 2 + 2 + 1
    assert remote.version == "remote"
    got = remote(imgs, prompts)
    want = JpegCompressibility()(imgs, prompts)
    assert got.values == want.values and got.rewards == want.rewards and got.details == want.details
    assert remote.version == "1"  # adopted from the server


def test_remote_scorer_with_url_already_naming_the_route(jpeg_server: ScoreServer) -> None:
    remote = RemoteScorer(jpeg_server.url + "/v1/score/", "jpeg")
    assert remote.url == jpeg_server.url + "/v1/score"
    assert len(remote(images(1), [""]).values) == 1


def test_server_side_errors_are_surfaced(jpeg_server: ScoreServer) -> None:
    with pytest.raises(
        RemoteScorerError,
        match=r"HTTP 404: scorer 'jpg' is not served here \(did you mean jpeg\?\)",
    ):
        RemoteScorer(jpeg_server.url, "jpg")(images(1), [""])
    with pytest.raises(RemoteScorerError, match="HTTP 404: no route POST /nope"):
        post_json(jpeg_server.url + "/nope", {}, timeout=5)
    bad = {"scorer": "jpeg", "images": ["not base64!"], "prompts": [""], "meta": None}
    with pytest.raises(RemoteScorerError, match="HTTP 400: image 0: not valid base64"):
        post_json(jpeg_server.url + "/v1/score", bad, timeout=5)
    text = base64.b64encode(b"hello, not a png").decode()
    bad = {"scorer": "jpeg", "images": [text], "prompts": [""], "meta": None}
    with pytest.raises(RemoteScorerError, match="HTTP 400: image 0: cannot be decoded as an image"):
        post_json(jpeg_server.url + "/v1/score", bad, timeout=5)
    body = {"scorer": "jpeg", "images": [], "prompts": ["one"], "meta": None}
    with pytest.raises(RemoteScorerError, match="HTTP 400: got 0 images but 1 prompts"):
        post_json(jpeg_server.url + "/v1/score", body, timeout=5)


def test_client_side_checks_before_any_request() -> None:
    remote = RemoteScorer(
        "http://127.0.0.1:9", "jpeg"
    )  # nothing listens there; no request must happen
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        remote(images(2), [""])
    with pytest.raises(ValueError, match="has zero size"):
        remote([Image.new("RGB", (0, 3))], [""])
    with pytest.raises(ValueError, match="retries=4"):
        RemoteScorer("http://x", "jpeg", retries=4)


# ------------------------------------------------------------------------------------------ scripted servers


class Scripted:
    """A loopback server whose answers come from a list of (status, body) or callables; records requests."""

    def __init__(self, script: list[Any], delay: float = 0.0) -> None:
        self.script, self.delay, self.requests = list(script), delay, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": json.loads(raw)}
                )
                time.sleep(outer.delay)
                step = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                status, body = step(outer.requests[-1]["body"]) if callable(step) else step
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    made: list[Scripted] = []

    def make(script: list[Any], delay: float = 0.0) -> Scripted:
        made.append(Scripted(script, delay))
        return made[-1]

    yield make
    for s in made:
        s.close()


def ok(n_values: float = 0.5) -> Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]:
    def answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        n = len(body["images"])
        return 200, {
            "scorer": body["scorer"],
            "version": "7",
            "values": [n_values] * n,
            "rewards": [0.1] * n,
        }

    return answer


def test_golden_request_payload(scripted: Callable[..., Scripted]) -> None:
    server = scripted([ok()])
    imgs = images(2)
    meta = [{"tag": "counting", "include": [{"class": "cat", "count": 2}]}, {"tag": "x"}]
    scores = RemoteScorer(server.url, "deqa")(imgs, ["a cat", "two cats"], meta)
    assert scores == Scores([0.5, 0.5], [0.1, 0.1], None)
    (request,) = server.requests
    assert request["path"] == "/v1/score"
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["body"]
    assert set(body) == {"scorer", "images", "prompts", "meta"}
    assert (
        body["scorer"] == "deqa"
        and body["prompts"] == ["a cat", "two cats"]
        and body["meta"] == meta
    )
    for sent, original in zip(body["images"], imgs, strict=True):
        raw = base64.b64decode(sent, validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"  # PNG file bytes
        assert np.array_equal(
            np.asarray(Image.open(io.BytesIO(raw))), np.asarray(original)
        )  # lossless


def test_jpeg_transport_sends_jpeg_roundtripped_pixels(scripted: Callable[..., Scripted]) -> None:
    server = scripted([ok()])
    imgs = images(1, size=32)
    scores = RemoteScorer(server.url, "deqa", jpeg_quality=75)(imgs, [""])
    sent = Image.open(io.BytesIO(base64.b64decode(server.requests[0]["body"]["images"][0])))
    assert np.array_equal(np.asarray(sent), np.asarray(jpeg_roundtrip(imgs[0], 75)))
    assert not np.array_equal(np.asarray(sent), np.asarray(imgs[0]))
    assert scores.details == [{"transport": "jpeg75"}]


def test_5xx_is_retried_then_succeeds(scripted: Callable[..., Scripted]) -> None:
    server = scripted([(503, {"detail": "warming up"}), (500, b"Traceback: boom"), ok()])
    scores = RemoteScorer(server.url, "deqa", backoff=0.01)(images(1), [""])
    assert scores.values == [0.5] and len(server.requests) == 3


def test_5xx_gives_up_after_three_retries_with_the_server_message(
    scripted: Callable[..., Scripted],
) -> None:
    server = scripted([(500, {"detail": "CUDA out of memory"})])
    with pytest.raises(
        RemoteScorerError, match="HTTP 500: CUDA out of memory .gave up after 4 attempts"
    ):
        RemoteScorer(server.url, "deqa", backoff=0.01)(images(1), [""])
    assert len(server.requests) == 4


def test_4xx_is_not_retried(scripted: Callable[..., Scripted]) -> None:
    server = scripted([(422, {"detail": "prompts must be strings"})])
    with pytest.raises(RemoteScorerError, match="HTTP 422: prompts must be strings"):
        RemoteScorer(server.url, "deqa", backoff=0.01)(images(1), [""])
    assert len(server.requests) == 1


def test_timeout_is_bounded_and_not_retried(scripted: Callable[..., Scripted]) -> None:
    server = scripted([ok()], delay=1.5)
    start = time.monotonic()
    with pytest.raises(RemoteScorerError, match="did not answer within 0.3 s"):
        RemoteScorer(server.url, "deqa", timeout=0.3, backoff=0.01)(images(1), [""])
    assert time.monotonic() - start < 1.4 and len(server.requests) == 1


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        RemoteScorerError, match=r"cannot reach http://127.0.0.1:\d+/v1/score: .*gave up after 4"
    ):
        RemoteScorer(f"http://127.0.0.1:{port}", "deqa", backoff=0.01)(images(1), [""])


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            {"scorer": "deqa", "version": "1", "values": [1.0, 2.0], "rewards": [0.2]},
            "returned 2 values for 1",
        ),
        (
            {"scorer": "other", "version": "1", "values": [1.0], "rewards": [0.2]},
            "answered for 'other'",
        ),
        ({"scorer": "deqa", "values": [1.0], "rewards": [0.2]}, "lacks version"),
        (
            {"scorer": "deqa", "version": "1", "values": ["high"], "rewards": [0.2]},
            "non-numeric values",
        ),
        ([1, 2], "not a JSON object"),
    ],
)
def test_malformed_answers_are_rejected(
    scripted: Callable[..., Scripted], answer: Any, message: str
) -> None:
    server = scripted([(200, answer)])
    with pytest.raises(RemoteScorerError, match=message):
        RemoteScorer(server.url, "deqa")(images(1), [""])


def test_non_json_answer_and_nan_answer(scripted: Callable[..., Scripted]) -> None:
    server = scripted([(200, b"<html>proxy page</html>")])
    with pytest.raises(RemoteScorerError, match="not JSON"):
        RemoteScorer(server.url, "deqa")(images(1), [""])
    nan = b'{"scorer": "deqa", "version": "1", "values": [NaN], "rewards": [0.1]}'
    server = scripted([(200, nan)])
    with pytest.raises(RemoteScorerError, match="non-finite"):
        RemoteScorer(server.url, "deqa")(images(1), [""])


# ------------------------------------------------------------------------------------------ server-side logic


class NaNScorer:
    name, version, requires = "nan", "0", Requirements()

    def __call__(self, images: list[Image.Image], prompts: list[str], meta: Any = None) -> Scores:
        return Scores([float("nan")] * len(images), [0.0] * len(images))


def test_handle_score_validation() -> None:
    scorers = {"jpeg": JpegCompressibility()}
    for body, status, message in [
        ([], 400, "JSON object"),
        ({"images": []}, 400, "missing field 'scorer'"),
        ({"scorer": "jpeg", "images": "x", "prompts": []}, 400, "must be lists"),
        ({"scorer": "jpeg", "images": [], "prompts": [1]}, 400, "must be a string"),
        ({"scorer": "jpeg", "images": [], "prompts": [], "meta": [1]}, 400, "list of objects"),
        ({"scorer": "pickscore", "images": [], "prompts": []}, 404, "served: jpeg"),
    ]:
        with pytest.raises(RequestError, match=message) as info:
            handle_score(scorers, body)
        assert info.value.status == status


def test_server_refuses_to_send_nan() -> None:
    server = ScoreServer({"nan": NaNScorer()})
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with pytest.raises(RemoteScorerError, match="HTTP 500: scorer output is not valid JSON"):
            RemoteScorer(server.url, "nan", retries=0)(images(1), [""])
    finally:
        server.shutdown()
        server.server_close()
