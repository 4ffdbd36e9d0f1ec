"""The service against a real uvicorn server on loopback: scoring, batching, leaderboard, pagination, images,
tokens, imports, every refused input, and reads while another process writes the store."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from results.store import Store
from scorers import remote
from scorers.base import Requirements, Scores
from scorers.jpeg import JpegCompressibility
from scorers.mini import MiniGenEval, MiniQuality
from service.app import create_app
from service.bundle import push_run, run_chunks
from service.settings import Settings, load_settings
from tests.support.fakes import FakeScorer, pixel_value
from tests.support.live_server import LiveServer
from tests.support.service_data import add_mini_run, b64, draw, mini_prompts, png_bytes

TOKEN = "test-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]


class Picky:
    """Refuses the prompt "reject me" (ValueError, as real scorers refuse unusable input); else FakeScorer's value."""

    name = "picky"
    version = "7"
    requires = Requirements()

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[int] = []

    def __call__(
        self, images: list[Image.Image], prompts: list[str], meta: list[dict] | None = None
    ) -> Scores:
        self.calls.append(len(images))
        time.sleep(self.delay)
        if "reject me" in prompts:
            raise ValueError("the prompt 'reject me' is not allowed")
        values = [pixel_value(im) for im in images]
        tags = [None if meta is None else m.get("tag") for m in (meta or [None] * len(images))]
        return Scores(values, [v / 2 for v in values], [{"tag": t} for t in tags])


class Sleepy(FakeScorer):
    """Takes ``delay`` seconds per call (the scorer-timeout test)."""

    name = "sleepy"

    def __init__(self) -> None:
        super().__init__()
        self.delay = 3.0


class Live:
    def __init__(self, url: str, store: Path, scorers: dict[str, Any]) -> None:
        self.url, self.store, self.scorers = url, store, scorers
        self.http = httpx.Client(base_url=url, timeout=30)

    def score(
        self, scorer: str, images: list[str], prompts: list[str], meta: Any = None
    ) -> httpx.Response:
        return self.http.post(
            "/v1/score", json={"scorer": scorer, "images": images, "prompts": prompts, "meta": meta}
        )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A store with three mini runs (skills 1.0, 0.7, 0.3) behind a live server with small limits."""
    tmp = tmp_path_factory.mktemp("service")
    store_path = tmp / "store" / "results.duckdb"
    store = Store(store_path)
    add_mini_run(store, "good", model="mini-good", skill=1.0, prompts=6)
    add_mini_run(store, "mid", model="mini-mid", skill=0.7, prompts=6)
    add_mini_run(store, "bad", model="mini-bad", skill=0.3, prompts=6)
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    settings = Settings(
        store=store_path,
        token_file=token_file,
        max_request_bytes=2 * 1024 * 1024,
        max_images=8,
        max_pixels=512 * 512,
        body_timeout_s=1.0,
        score_timeout_s=1.5,
        batch_window_ms=20,
    )
    fake = FakeScorer()
    fake.delay = 0.1
    scorers = {
        "mini_geneval": MiniGenEval(),
        "mini_quality": MiniQuality(),
        "fake": fake,
        "picky": Picky(delay=0.1),
        "sleepy": Sleepy(),
        "jpeg": JpegCompressibility(),
    }
    with LiveServer(create_app(settings, scorers)) as url:
        yield Live(url, store_path, scorers)


# --- scoring -------------------------------------------------------------------------------------


def test_health_and_scorers(live: Live) -> None:
    h = live.http.get("/health").json()
    assert h["status"] == "ok" and h["writes"] is True
    assert set(h["scorers"]) == set(live.scorers)
    listed = {s["name"]: s for s in live.http.get("/v1/scorers").json()}
    assert listed["picky"]["version"] == "7" and listed["mini_geneval"]["batching"] is True


def test_score_matches_in_process_scorer(live: Live) -> None:
    """Right scenes pass mini GenEval (1.0), wrong ones fail (0.0); numbers equal an in-process call."""
    import random

    items = mini_prompts(6, seed=3)
    rng = random.Random(1)
    images = [draw(m, correct=i % 2 == 0, rng=rng) for i, m in enumerate(items)]
    prompts = [m["prompt"] for m in items]
    r = live.score("mini_geneval", [b64(im) for im in images], prompts, items)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scorer"] == "mini_geneval" and body["version"] == MiniGenEval.version
    assert body["values"][0::2] == [1.0, 1.0, 1.0]
    assert body["values"][1::2] == [0.0, 0.0, 0.0]
    local = MiniGenEval()(images, prompts, items)
    assert body["values"] == local.values and body["rewards"] == local.rewards
    assert [d["tag"] for d in body["details"]] == [m["tag"] for m in items]


def test_score_accepts_jpeg(live: Live) -> None:
    im = draw(mini_prompts(1)[0], True, __import__("random").Random(0)).resize((64, 64))
    data = b64(im, "JPEG", quality=60)
    r = live.score("mini_quality", [data], ["x"])
    assert r.status_code == 200, r.text
    decoded = Image.open(io.BytesIO(base64.b64decode(data)))
    assert r.json()["values"] == MiniQuality()([decoded], ["x"]).values
    assert r.json()["values"][0] < 1.0  # JPEG ringing puts pixels off the palette


def test_empty_request_is_answered_without_calling_the_scorer(live: Live) -> None:
    before = len(live.scorers["picky"].calls)
    r = live.score("picky", [], [])
    assert r.status_code == 200 and r.json()["values"] == []
    assert len(live.scorers["picky"].calls) == before


def _solid(i: int, size: int = 8) -> Image.Image:
    return Image.new("RGB", (size, size), (i * 7 % 256, i * 13 % 256, i * 29 % 256))


def test_concurrent_requests_are_batched_and_each_gets_its_own_slice(live: Live) -> None:
    """12 concurrent requests to a scorer that costs 0.1 s per call: fewer calls than requests, right slices."""
    fake = live.scorers["fake"]
    calls0 = fake.calls
    results: dict[int, httpx.Response] = {}

    def one(i: int) -> None:
        n = 1 + i % 3
        imgs = [_solid(10 * i + j) for j in range(n)]
        meta = [{"tag": f"r{i}"} for _ in imgs] if i % 2 else None
        with httpx.Client(base_url=live.url, timeout=30) as c:
            results[i] = c.post(
                "/v1/score",
                json={"scorer": "fake", "images": [b64(x) for x in imgs], "prompts": ["p"] * n,
                      "meta": meta},
            )  # fmt: skip

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, r in results.items():
        assert r.status_code == 200, r.text
        n = 1 + i % 3
        want = [pixel_value(_solid(10 * i + j)) for j in range(n)]
        assert r.json()["values"] == want
        assert [d["tag"] for d in r.json()["details"]] == [f"r{i}" if i % 2 else None] * n
    calls = fake.calls - calls0
    assert calls < 12, f"{calls} scorer calls for 12 concurrent requests: nothing was batched"
    info = {s["name"]: s for s in live.http.get("/v1/scorers").json()}["fake"]
    assert info["calls"] < info["requests"]


def test_a_refused_request_does_not_fail_the_requests_batched_with_it(live: Live) -> None:
    results: dict[int, httpx.Response] = {}

    def one(i: int) -> None:
        prompt = "reject me" if i == 3 else "fine"
        with httpx.Client(base_url=live.url, timeout=30) as c:
            results[i] = c.post(
                "/v1/score",
                json={"scorer": "picky", "images": [b64(_solid(i))], "prompts": [prompt]},
            )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[3].status_code == 400
    assert "reject me" in results[3].json()["detail"]
    for i in (0, 1, 2, 4, 5):
        assert results[i].status_code == 200, results[i].text
        assert results[i].json()["values"] == [pixel_value(_solid(i))]


def test_remote_scorer_client_end_to_end(live: Live) -> None:
    items = mini_prompts(4, seed=5)
    rng = __import__("random").Random(2)
    images = [draw(m, correct=True, rng=rng) for m in items]
    client = remote.RemoteScorer(live.url, "mini_geneval", batch_size=3, timeout=30)
    got = client(images, [m["prompt"] for m in items], items)
    assert got.values == [1.0] * 4
    assert client.version == MiniGenEval.version
    with pytest.raises(remote.RemoteScorerError, match="not served"):
        remote.RemoteScorer(live.url, "nope", retries=0)(images[:1], ["x"])
    # Flow-GRPO's JPEG-compressibility reward, through the JPEG q75 transport, equals the in-process scorer
    photos = [Image.effect_noise((48, 48), 20 + 30 * i).convert("RGB") for i in range(3)]
    far = remote.RemoteScorer(live.url, "jpeg", jpeg_quality=75)(photos, ["", "", ""])
    near = JpegCompressibility()([remote.jpeg_roundtrip(p, 75) for p in photos], ["", "", ""])
    assert far.values == near.values and far.rewards == near.rewards
    assert len(set(far.values)) == 3 and all(d["transport"] == "jpeg75" for d in far.details or [])


def test_waiting_score_requests_do_not_starve_reads(live: Live) -> None:
    """45 requests wait on a slow scorer (more than the server's 40 worker threads); reads stay fast."""
    done: list[int] = []

    def one() -> None:
        with httpx.Client(base_url=live.url, timeout=30) as c:
            done.append(c.post("/v1/score", json={"scorer": "sleepy", "images": [b64(_solid(5))],
                                                  "prompts": ["x"]}).status_code)  # fmt: skip

    threads = [threading.Thread(target=one) for _ in range(45)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # they are all queued now, each waiting for its answer
    t0 = time.monotonic()
    assert live.http.get("/v1/leaderboard/geneval").status_code == 200
    assert live.http.get("/health").status_code == 200
    waited = time.monotonic() - t0
    for t in threads:
        t.join()
    # starved reads would wait for the 1.5 s scoring deadline to free a thread; 1.2 s leaves room for a loaded box
    # (0.5 s failed once with both cores busy training)
    assert waited < 1.2, f"reads took {waited:.2f} s while scoring requests waited"
    assert len(done) == 45 and set(done) == {503}  # sleepy takes 3 s, the deadline is 1.5 s


# --- refused inputs ------------------------------------------------------------------------------


def _png_bomb(w: int, h: int) -> str:
    """A real, tiny PNG file of w x h black pixels (zlib squeezes the zeros)."""
    raw = b"".join(b"\0" + b"\0" * w for _ in range(h))  # filter byte + one grey row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
        )

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
    return base64.b64encode(png + chunk(b"IEND", b"")).decode()


def test_too_many_pixels_is_refused_before_decoding(live: Live) -> None:
    bomb = _png_bomb(3000, 3000)  # 9 MP from a few KB
    assert len(bomb) < 40_000
    r = live.score("mini_quality", [bomb], ["x"])
    assert r.status_code == 413
    assert "3000 x 3000" in r.json()["detail"] and "262144" in r.json()["detail"]


def test_too_many_images(live: Live) -> None:
    img = b64(_solid(1))
    r = live.score("mini_quality", [img] * 9, ["x"] * 9)
    assert r.status_code == 413 and "at most 8" in r.json()["detail"]


def test_body_over_the_size_limit(live: Live) -> None:
    big = base64.b64encode(os.urandom(2 * 1024 * 1024)).decode()
    r = live.score("mini_quality", [big], ["x"])
    assert r.status_code == 413 and "limit of 2097152 bytes" in r.json()["detail"]


def test_chunked_body_over_the_size_limit(live: Live) -> None:
    """No Content-Length (chunked transfer): the bytes are counted as they arrive."""

    def body() -> Iterator[bytes]:
        yield b'{"scorer": "mini_quality", "prompts": ["x"], "images": ["'
        for _ in range(48):
            yield b"A" * 65536
        yield b'"]}'

    r = live.http.post("/v1/score", content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "more than 2097152 bytes" in r.json()["detail"]


def test_declared_size_over_the_limit_is_refused_without_reading(live: Live) -> None:
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 999999999\r\n\r\n"
        )
        head = s.recv(4096).decode()
    assert head.startswith("HTTP/1.1 413"), head


def test_slow_body_times_out_with_408(live: Live) -> None:
    host, port = live.url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"scorer": '
        )
        answer = b""
        while chunk := s.recv(4096):  # the server closes the connection after a 408
            answer += chunk
    answer = answer.decode()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "did not arrive within 1 s" in answer
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    ("image", "status", "says"),
    [
        ("not base64 !!", 400, "not valid base64"),
        (base64.b64encode(b"hello, not an image").decode(), 400, "not a PNG or JPEG"),
        ("gif", 400, "not a PNG or JPEG"),
        ("truncated", 400, "cannot be decoded"),
    ],
)
def test_bad_images(live: Live, image: str, status: int, says: str) -> None:
    if image == "gif":
        buf = io.BytesIO()
        _solid(2).save(buf, format="GIF")
        image = base64.b64encode(buf.getvalue()).decode()
    elif image == "truncated":
        raw = png_bytes(Image.effect_noise((64, 64), 50).convert("RGB"))
        image = base64.b64encode(raw[: len(raw) // 2]).decode()
    r = live.score("mini_quality", [b64(_solid(1)), image], ["x", "y"])
    assert r.status_code == status
    assert says in r.json()["detail"] and "image 1" in r.json()["detail"]


def test_unknown_scorer_suggests_the_near_name(live: Live) -> None:
    r = live.score("mini_qualty", [b64(_solid(1))], ["x"])
    assert r.status_code == 404
    assert "did you mean mini_quality" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"scorer": "fake", "images": ["a"], "prompts": []}, "1 images but 0 prompts"),
        ({"scorer": "fake", "images": [], "prompts": [], "meta": [{}]}, "0 images but 1 metadata"),
        ({"scorer": "fake", "prompts": []}, "images: Field required"),
        (
            {"scorer": "fake", "images": [1], "prompts": ["x"]},
            "images.0: Input should be a valid string",
        ),
        ({"scorer": "fake", "images": [], "prompts": [], "extra": 1}, "extra: Extra inputs"),
    ],
)
def test_malformed_requests_are_400_with_a_message(live: Live, body: Any, says: str) -> None:
    if body["scorer"] == "fake" and body.get("images") == ["a"]:
        body["images"] = [b64(_solid(1))]
    r = live.http.post("/v1/score", json=body)
    assert r.status_code == 400, r.text
    assert says in r.json()["detail"]


def test_invalid_json_is_400(live: Live) -> None:
    r = live.http.post(
        "/v1/score", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "JSON" in r.json()["detail"]


def test_a_scorer_past_the_deadline_is_503_with_retry_after(live: Live) -> None:
    t0 = time.monotonic()
    r = live.score("sleepy", [b64(_solid(1))], ["x"])
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert "did not answer within 1.5 s" in r.json()["detail"]
    assert time.monotonic() - t0 < 3


# --- leaderboard, runs, samples, images ----------------------------------------------------------


def _all_samples(live: Live, run_id: str, limit: int) -> list[dict]:
    out, offset, pages = [], 0, 0
    while offset is not None:
        page = live.http.get(
            f"/v1/runs/{run_id}/samples", params={"offset": offset, "limit": limit}
        )
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["samples"]) <= limit
        out += body["samples"]
        offset = body["next_offset"]
        pages += 1
    assert pages == -(-body["total"] // limit)
    return out


def test_leaderboard_rows_and_numbers(live: Live) -> None:
    board = live.http.get("/v1/leaderboard/geneval").json()
    (table,) = board["tables"]
    assert [c["name"] for c in table["columns"]] == [
        "Overall", "Single", "Two", "Counting", "Colors", "Position", "Color attr.", "Images"
    ]  # fmt: skip
    rows = table["rows"]
    assert [r["run_id"] for r in rows] == ["good", "mid", "bad"]  # best Overall first
    assert rows[0]["model"] == "mini-good"
    assert rows[0]["protocol"] == "euler-ode, 10 steps, cfg 4.5, 32x32, png"
    assert rows[0]["cells"]["Overall"] == 1.0
    # Overall = mean over tasks of the task's mean, recomputed here from the raw sample rows
    for r in rows:
        per_task: dict[str, list[float]] = {}
        for s in _all_samples(live, r["run_id"], 7):
            for c in s["scores"]:
                if s["benchmark"] == "geneval" and c["scorer"] == "mini_geneval":
                    per_task.setdefault(s["grp"], []).append(c["value"])
        want = statistics.fmean(statistics.fmean(v) for v in per_task.values())
        assert r["cells"]["Overall"] == pytest.approx(want, abs=1e-12)
        assert r["cells"]["Single"] == pytest.approx(statistics.fmean(per_task["single_object"]))


def test_leaderboard_sorting_and_filters(live: Live) -> None:
    get = live.http.get
    asc = get("/v1/leaderboard/geneval", params={"sort": "Overall", "order": "asc"}).json()
    assert [r["run_id"] for r in asc["tables"][0]["rows"]] == ["bad", "mid", "good"]
    by_model = get("/v1/leaderboard/geneval", params={"sort": "model", "order": "asc"}).json()
    assert [r["model"] for r in by_model["tables"][0]["rows"]] == [
        "mini-bad",
        "mini-good",
        "mini-mid",
    ]
    only = get("/v1/leaderboard/drawbench", params={"model": "BAD"}).json()
    assert [r["run_id"] for r in only["tables"][0]["rows"]] == ["bad"]
    bad_sort = get("/v1/leaderboard/geneval", params={"sort": "Ovrall"})
    assert bad_sort.status_code == 400 and "Overall" in bad_sort.json()["detail"]
    missing = get("/v1/leaderboard/genevall")
    assert missing.status_code == 404 and "did you mean geneval" in missing.json()["detail"]
    assert (
        get("/v1/leaderboard/main").json()["tables"] == []
    )  # no main-table benchmark in this store
    assert get("/v1/leaderboard/geneval", params={"order": "sideways"}).status_code == 400


def test_samples_pagination_covers_every_image_once_in_order(live: Live) -> None:
    samples = _all_samples(live, "mid", limit=5)
    keys = [(s["benchmark"], s["prompt_index"], s["image_index"]) for s in samples]
    assert len(keys) == len(set(keys)) == 2 * 6 * 2  # 2 benchmarks x 6 prompts x 2 images
    assert keys == sorted(keys)
    assert all(len(s["scores"]) == 1 for s in samples)
    past = live.http.get("/v1/runs/mid/samples", params={"offset": 1000}).json()
    assert past["samples"] == [] and past["next_offset"] is None and past["total"] == 24
    only = live.http.get(
        "/v1/runs/mid/samples", params={"benchmark": "geneval", "limit": 500}
    ).json()
    assert only["total"] == 12 and {s["benchmark"] for s in only["samples"]} == {"geneval"}
    assert live.http.get("/v1/runs/mid/samples", params={"limit": 501}).status_code == 400
    assert live.http.get("/v1/runs/nope/samples").status_code == 404


def test_runs_list_and_detail(live: Live) -> None:
    runs = live.http.get("/v1/runs").json()
    assert {r["run_id"] for r in runs["runs"]} >= {"good", "mid", "bad"}
    page = live.http.get("/v1/runs", params={"offset": 1, "limit": 1}).json()
    assert page["total"] == runs["total"] and page["runs"] == runs["runs"][1:2]
    detail = live.http.get("/v1/runs/good").json()
    assert detail["model"] == "mini-good" and detail["last_step"] == 0
    assert detail["protocol"]["generation"]["steps"] == 10
    assert {t["title"].split(" ")[0] for t in detail["tables"]} == {"Image", "GenEval"}
    missing = live.http.get("/v1/runs/god")
    assert missing.status_code == 404 and "did you mean good" in missing.json()["detail"]


def test_images_are_served_by_hash(live: Live) -> None:
    s = live.http.get("/v1/runs/good/samples", params={"limit": 1}).json()["samples"][0]
    r = live.http.get(s["image_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert hashlib.sha256(r.content).hexdigest() == s["image_sha256"]
    thumb = live.http.get(s["image_url"], params={"size": 16})
    assert Image.open(io.BytesIO(thumb.content)).size == (16, 16)
    assert live.http.get("/v1/images/" + "0" * 64).status_code == 404
    assert live.http.get("/v1/images/../../etc/passwd").status_code == 404
    assert live.http.get("/v1/images/ABC").status_code == 400


def test_benchmarks_list(live: Live) -> None:
    benches = {b["name"]: b for b in live.http.get("/v1/benchmarks").json()}
    assert benches["geneval"]["runs"] == 3 and benches["geneval"]["group_by"] == "tag"
    assert benches["ocr"]["runs"] == 0


# --- writes: tokens, import, delete --------------------------------------------------------------


def test_writes_need_the_token(live: Live) -> None:
    body = {"run": {"run_id": "x", "model": "m", "protocol": {}, "provenance": {}}}
    none = live.http.post("/v1/runs", json=body)
    assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
    wrong = live.http.post("/v1/runs", json=body, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 403
    basic = live.http.post("/v1/runs", json=body, headers={"Authorization": "Basic " + TOKEN})
    assert basic.status_code == 401
    assert live.http.delete("/v1/runs/good").status_code == 401
    assert (
        live.http.delete("/v1/runs/good", headers={"Authorization": "Bearer nope"}).status_code
        == 403
    )
    assert live.http.get("/v1/runs/good").status_code == 200  # still there


def test_import_push_reimport_and_delete(live: Live, tmp_path: Path) -> None:
    local = Store(tmp_path / "local.duckdb")
    made = add_mini_run(local, "pushed", model="mini-pushed", skill=0.5, prompts=6, seed=9)
    assert len(list(run_chunks(local, "pushed", 8000))) >= 3
    totals = push_run(local, "pushed", live.url, TOKEN, max_bytes=8000)  # in several chunks
    assert totals["samples_added"] == made["samples"] and totals["scores_added"] == made["scores"]
    again = push_run(local, "pushed", live.url, TOKEN, max_bytes=10**6)
    assert again["samples_added"] == again["scores_added"] == 0
    assert again["samples_skipped"] == made["samples"]
    # the server's leaderboard row equals the local store's own table
    from harness.tables import geneval_table

    want = geneval_table(local, ["pushed"], scorer="mini_geneval").records()[0]
    rows = live.http.get("/v1/leaderboard/geneval").json()["tables"][0]["rows"]
    got = next(r for r in rows if r["run_id"] == "pushed")
    assert got["cells"]["Overall"] == pytest.approx(want["Overall"], abs=1e-12)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    conflict = live.http.post(
        "/v1/runs",
        json={"run": {"run_id": "pushed", "model": "other", "protocol": {}, "provenance": {}}},
        headers=auth,
    )
    assert conflict.status_code == 409 and "another model" in conflict.json()["detail"]
    gone = live.http.delete("/v1/runs/pushed", headers=auth)
    assert gone.status_code == 200
    assert gone.json() == {"run_id": "pushed", "runs": 1, "samples": made["samples"],
                           "scores": made["scores"]}  # fmt: skip
    assert live.http.get("/v1/runs/pushed").status_code == 404
    rows = live.http.get("/v1/leaderboard/geneval").json()["tables"][0]["rows"]
    assert "pushed" not in {r["run_id"] for r in rows}
    assert live.http.delete("/v1/runs/pushed", headers=auth).status_code == 404


def test_import_refuses_inconsistent_chunks(live: Live) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    png = png_bytes(_solid(3))
    sample = {
        "step": 0, "benchmark": "b", "benchmark_version": "1", "prompt_id": "b/0", "prompt_index": 0,
        "prompt": "p", "meta": {}, "image_index": 0, "seed": 1,
        "image_sha256": hashlib.sha256(png).hexdigest(), "image": base64.b64encode(png).decode(),
    }  # fmt: skip
    run = {"run_id": "chk", "model": "m", "protocol": {}, "provenance": {}}
    wrong_hash = {**sample, "image_sha256": "0" * 64}
    r = live.http.post("/v1/runs", json={"run": run, "samples": [wrong_hash]}, headers=auth)
    assert r.status_code == 400 and "sha256" in r.json()["detail"]
    orphan = {"step": 0, "benchmark": "b", "benchmark_version": "1", "prompt_id": "b/9",
              "image_index": 0, "scorer": "s", "scorer_version": "1", "value": 0.5}  # fmt: skip
    r = live.http.post("/v1/runs", json={"run": run, "samples": [sample], "scores": [orphan]},
                       headers=auth)  # fmt: skip
    assert r.status_code == 400 and "has no sample" in r.json()["detail"]
    nan = {**orphan, "prompt_id": "b/0", "value": "NaN"}
    r = live.http.post("/v1/runs", json={"run": run, "samples": [sample], "scores": [nan]},
                       headers=auth)  # fmt: skip
    assert r.status_code == 400
    assert live.http.get("/v1/runs/chk").status_code == 404  # nothing was half-written


def test_read_only_server_refuses_writes_with_403(tmp_path: Path) -> None:
    app = create_app(Settings(store=tmp_path / "s.duckdb"), {})
    with LiveServer(app) as url:
        r = httpx.delete(f"{url}/v1/runs/x", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 403 and "FLOW_OPD_TOKEN" in r.json()["detail"]
        assert httpx.get(f"{url}/health").json()["writes"] is False


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLOW_OPD_TOKEN", TOKEN)
    monkeypatch.setenv("FLOW_OPD_SCORERS", "mini_quality, mini_geneval")
    monkeypatch.setenv("FLOW_OPD_MAX_IMAGES", "3")
    s = load_settings(store=tmp_path / "s.duckdb")
    assert s.host == "127.0.0.1" and s.loopback
    assert s.scorers == ("mini_quality", "mini_geneval") and s.max_images == 3
    assert s.write_token() == TOKEN and TOKEN not in repr(s)
    monkeypatch.setenv("FLOW_OPD_TOKEN", "short")
    with pytest.raises(ValueError, match="at least 16") as e:
        load_settings()
    assert "short" not in str(e.value).replace("at least 16", "")  # the value is never echoed
    monkeypatch.delenv("FLOW_OPD_TOKEN")
    (tmp_path / "tok").write_text("")
    monkeypatch.setenv("FLOW_OPD_TOKEN_FILE", str(tmp_path / "tok"))
    with pytest.raises(ValueError, match="token file"):
        load_settings().write_token()


# --- reads while another process writes ----------------------------------------------------------


def test_reads_succeed_while_harness_eval_writes(tmp_path: Path) -> None:
    """`harness eval` (a random mini model, mini scorers) writes the store in another process while the server
    answers reads: every read succeeds, no read sees fewer rows than an earlier one, and the reads see the run
    grow batch by batch."""
    import json as jsonlib

    from flowmodels.mini import MiniConfig, MiniFlow

    model = MiniFlow.create(MiniConfig(dim=16, layers=1, heads=2, text_layers=1)).save_pretrained(
        tmp_path / "mini"
    )
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(jsonlib.dumps(m) + "\n" for m in mini_prompts(24, seed=0)))
    path = tmp_path / "shared.duckdb"
    Store(path)
    app = create_app(Settings(store=path, lock_timeout_s=30), {})
    statuses: list[int] = []
    seen: list[int] = []
    cmd = [sys.executable, "-m", "flow_opd", "eval", "--model", str(model), "--prompts", str(prompts),
           "--scorers", "mini_geneval,mini_quality", "--steps", "100", "--size", "32", "--batch-size", "1",
           "--device", "cpu", "--no-progress", "--store", str(path), "--run", "evalrun"]  # fmt: skip
    with LiveServer(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        writer = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        while writer.poll() is None:
            for url_path in ("/v1/runs", "/v1/leaderboard/prompts", "/v1/benchmarks"):
                r = http.get(url_path)
                if r.status_code == 404 and url_path.endswith("prompts"):
                    continue  # the run has no scores yet, so the store does not know the benchmark
                statuses.append(r.status_code)
                if url_path == "/v1/runs" and r.status_code == 200:
                    seen.append(sum(x["images"] for x in r.json()["runs"]))
            time.sleep(0.1)
        out, err = writer.communicate()
        assert writer.returncode == 0, err
        board = http.get("/v1/leaderboard/prompts").json()
    assert statuses and set(statuses) == {200}, statuses
    assert seen == sorted(seen), "a read saw fewer rows than an earlier one"
    # 24 transactions of one image, each after 100 denoising steps (about 0.15 s here; at 10 steps the 24 writes
    # once all fell between two reads): the store's lock back-off (at most 1 s) cannot hide them all from the reads
    assert any(0 < n < 24 for n in seen), f"no read landed between the batches: {seen}"
    assert seen[-1] <= 24
    (table,) = board["tables"]
    (row,) = table["rows"]
    assert row["run_id"] == "evalrun"
    # the server's table is the one `harness eval` printed from the same store
    printed = dict(zip(out.split("\n")[1].split(), out.split("\n")[3].split(), strict=False))
    assert f"{row['cells']['mini_quality']:.4f}" == printed["mini_quality"]


def test_testclient_with_a_memory_store_and_a_fake_scorer(tmp_path: Path) -> None:
    """TestClient, Store(":memory:") and FakeScorer, no socket."""
    from fastapi.testclient import TestClient

    app = create_app(Settings(store=Path(":memory:")), {"fake": FakeScorer()})
    with TestClient(app) as client:
        store = client.app.state.store  # type: ignore[attr-defined]
        store.images_dir = tmp_path / "images"  # a memory store has no folder of its own
        add_mini_run(store, "mem", prompts=3)
        rows = client.get("/v1/leaderboard/drawbench").json()["tables"][0]["rows"]
        assert [r["run_id"] for r in rows] == ["mem"] and rows[0]["cells"]["mini_quality"] == 1.0
        r = client.post(
            "/v1/score", json={"scorer": "fake", "images": [b64(_solid(4))], "prompts": ["p"]}
        )
        assert r.json()["values"] == [pixel_value(_solid(4))]
        page = client.get("/runs/mem")
        assert page.status_code == 200 and page.text.count("<figure") == 2 * 3 * 2
        img = client.get(client.get("/v1/runs/mem/samples").json()["samples"][0]["image_url"])
        assert img.status_code == 200 and img.content.startswith(b"\x89PNG")


def test_run_ids_with_slashes_are_addressable(live: Live, tmp_path: Path) -> None:
    """`python -m trainer.paper` and the CLI name runs like ``paper/seed0``: every run URL must reach them."""
    local = Store(tmp_path / "slash.duckdb")
    made = add_mini_run(local, "paper/seed0", model="mini-slash", skill=0.5, prompts=4, seed=3)
    push_run(local, "paper/seed0", live.url, TOKEN, max_bytes=10**6)
    detail = live.http.get("/v1/runs/paper/seed0")
    assert detail.status_code == 200 and detail.json()["run_id"] == "paper/seed0"
    page = live.http.get("/v1/runs/paper/seed0/samples", params={"limit": 500}).json()
    assert page["total"] == made["samples"]
    assert live.http.get("/v1/runs/paper/seed1").status_code == 404
    html = live.http.get("/runs/paper/seed0")
    assert html.status_code == 200 and "paper/seed0" in html.text
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert live.http.delete("/v1/runs/paper/seed0", headers=auth).status_code == 200
    assert live.http.get("/v1/runs/paper/seed0").status_code == 404
