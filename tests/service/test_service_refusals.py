"""Inputs that used to answer 500 or leave half-written runs, now refused with a 4xx before any work, over a real
uvicorn server on loopback: scorer metadata, integers past the store's columns, undecodable and bomb images on
import, run ids the URLs cannot reach, and a store damaged while the server runs."""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from results.store import Store
from scorers.mini import MiniGenEval, MiniQuality
from service.app import create_app
from service.settings import Settings
from tests.support.damage import scribble, table_offset
from tests.support.live_server import LiveServer
from tests.support.service_data import add_mini_run, b64, png_bytes

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class CountingGenEval(MiniGenEval):
    """mini_geneval that counts its calls (a refused request must not reach it)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: Any, prompts: Any, meta: Any = None) -> Any:
        self.calls += 1
        return super().__call__(images, prompts, meta)


class Live:
    def __init__(self, url: str, store: Path, scorer: CountingGenEval) -> None:
        self.url, self.store, self.scorer = url, store, scorer
        self.http = httpx.Client(base_url=url, timeout=30)

    def images(self) -> set[Path]:
        return set((self.store.parent / "images").glob("*/*.png"))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("refusals")
    store_path = tmp / "store" / "results.duckdb"
    add_mini_run(Store(store_path), "good", prompts=4)
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    settings = Settings(store=store_path, token_file=token_file, max_pixels=512 * 512)
    scorer = CountingGenEval()
    with LiveServer(
        create_app(settings, {"mini_geneval": scorer, "mini_quality": MiniQuality()})
    ) as url:
        yield Live(url, store_path, scorer)


def _png_bomb(w: int, h: int) -> bytes:
    """A real, tiny PNG file of w x h black pixels (zlib squeezes the zeros)."""
    raw = zlib.compress(b"".join(b"\0" + b"\0" * w for _ in range(min(h, 64))), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


# --- /v1/score: metadata a scorer needs ----------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "says"),
    [
        (None, "needs per-image metadata with 'tag', 'include'"),
        ([{}], "meta 0: scorer mini_geneval needs 'tag' as a string (got missing)"),
        ([{"tag": None, "include": None}], "needs 'tag' as a string (got null)"),
        ([{"tag": "counting", "include": None}], "needs 'include' as a list (got null)"),
        ([{"tag": "counting", "include": [{"class": "circle", "count": 1}], "exclude": 3}],
         "needs 'exclude' as a list (got 3)"),
        ([{"tag": "counting", "include": [None]}], "include[0] needs 'class' and 'count'"),
    ],
)  # fmt: skip
def test_score_refuses_metadata_the_scorer_cannot_use(live: Live, meta: Any, says: str) -> None:
    calls = live.scorer.calls
    image = b64(Image.new("RGB", (32, 32)))
    r = live.http.post(
        "/v1/score",
        json={"scorer": "mini_geneval", "images": [image], "prompts": ["a circle"], "meta": meta},
    )
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert says in detail
    if (
        "include[0]" not in says
    ):  # the declared fields: refused before the scorer, with a valid entry
        assert '{"tag": "single_object", "include": [{"class": "circle", "count": 1}]}' in detail
        assert live.scorer.calls == calls


# --- POST /v1/runs: integers, images, run ids; nothing left behind -------------------------------


def _sample(png: bytes, **over: Any) -> dict[str, Any]:
    return {
        "step": 0, "benchmark": "b", "benchmark_version": "1", "prompt_id": "b/0", "prompt_index": 0,
        "prompt": "p", "meta": {}, "image_index": 0, "seed": 1,
        "image_sha256": hashlib.sha256(png).hexdigest(), "image": base64.b64encode(png).decode(),
        **over,
    }  # fmt: skip


def _import(live: Live, run_id: str, samples: list[Any], scores: list[Any] = ()) -> httpx.Response:
    run = {"run_id": run_id, "model": "m", "protocol": {}, "provenance": {}}
    body = {"run": run, "samples": samples, "scores": list(scores)}
    return live.http.post("/v1/runs", json=body, headers=AUTH)


def _nothing_left(live: Live, run_id: str, images_before: set[Path]) -> None:
    assert live.http.get(f"/v1/runs/{run_id}").status_code == 404
    assert run_id not in {r["run_id"] for r in live.http.get("/v1/runs").json()["runs"]}
    assert live.images() == images_before


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("step", 2**31, "samples.0.step: Input should be less than or equal to 2147483647"),
        ("prompt_index", 2**31, "samples.0.prompt_index: Input should be less than or equal to"),
        ("image_index", 2**31, "samples.0.image_index: Input should be less than or equal to"),
        (
            "seed",
            2**63,
            "samples.0.seed: Input should be less than or equal to 9223372036854775807",
        ),
        ("seed", -(2**63) - 1, "samples.0.seed: Input should be greater than or equal to"),
    ],
)
def test_import_refuses_integers_past_the_store_columns(
    live: Live, field: str, value: int, says: str
) -> None:
    before = live.images()
    png = png_bytes(Image.new("RGB", (8, 8), (1, 2, 3)))
    r = _import(live, f"big-{field}", [_sample(png, **{field: value})])
    assert r.status_code == 400, r.text
    assert says in r.json()["detail"]
    _nothing_left(live, f"big-{field}", before)


def test_import_refuses_a_score_step_past_the_column(live: Live) -> None:
    png = png_bytes(Image.new("RGB", (8, 8), (4, 5, 6)))
    score = {"step": 2**31, "benchmark": "b", "benchmark_version": "1", "prompt_id": "b/0",
             "image_index": 0, "scorer": "s", "scorer_version": "1", "value": 0.5}  # fmt: skip
    r = _import(live, "big-score", [_sample(png)], [score])
    assert r.status_code == 400 and "scores.0.step" in r.json()["detail"]
    _nothing_left(live, "big-score", live.images())


@pytest.mark.parametrize(
    ("png", "status", "says"),
    [
        (_png_bomb(3000, 3000), 413, "3000 x 3000 = 9000000 pixels is over this server's limit"),
        (_png_bomb(20_000, 20_000), 413, "refused as a decompression bomb"),
        (
            png_bytes(Image.effect_noise((64, 64), 50).convert("RGB"))[:900],
            400,
            "cannot be decoded",
        ),
    ],
    ids=["over-max-pixels", "over-pil-limit", "truncated"],
)
def test_import_refuses_images_it_could_not_serve(
    live: Live, png: bytes, status: int, says: str
) -> None:
    before = live.images()
    good = png_bytes(Image.new("RGB", (8, 8), (9, 9, 9)))
    r = _import(live, "bad-image", [_sample(good), _sample(png, prompt_id="b/1")])
    assert r.status_code == status, r.text
    assert "sample 1: image" in r.json()["detail"] and says in r.json()["detail"]
    _nothing_left(live, "bad-image", before)


@pytest.mark.parametrize(
    ("png", "status"), [(_png_bomb(3000, 3000), 413), (_png_bomb(20_000, 20_000), 413)]
)
def test_score_answers_bombs_with_413(live: Live, png: bytes, status: int) -> None:
    image = base64.b64encode(png).decode()
    r = live.http.post(
        "/v1/score", json={"scorer": "mini_quality", "images": [image], "prompts": ["x"]}
    )
    assert r.status_code == status, r.text


def test_run_ids_ending_in_samples_are_refused_at_creation(live: Live, tmp_path: Path) -> None:
    before = live.images()
    png = png_bytes(Image.new("RGB", (8, 8), (3, 3, 3)))
    r = _import(live, "paper/samples", [_sample(png)])
    assert r.status_code == 400, r.text
    assert "ends in '/samples'" in r.json()["detail"]
    _nothing_left(live, "paper/samples", before)
    from flowbase.errors import InputError
    from results.store import RunRecord

    with pytest.raises(
        InputError, match="ends in '/samples'"
    ):  # `harness eval --run-id x/samples` too
        Store(tmp_path / "s.duckdb").add_run(RunRecord("x/samples", "m", None, {}, {}))
    r = _import(live, "paper/samples-2", [_sample(png)])
    assert r.status_code == 201, r.text
    assert live.http.get("/v1/runs/paper/samples-2").json()["run_id"] == "paper/samples-2"
    assert live.http.get("/v1/runs/paper/samples-2/samples").json()["total"] == 1


# --- a store damaged under a running server ------------------------------------------------------


def test_a_store_damaged_while_serving_is_a_500_with_one_line(tmp_path: Path) -> None:
    store_path = tmp_path / "s.duckdb"
    add_mini_run(Store(store_path), "a", prompts=40)
    # located first: the server holds the file read-write, and this process cannot open it read-only then;
    # damaged before the server's connection reads them (blocks it has read are checked, and kept in memory)
    where = {t: table_offset(store_path, t) for t in ("samples", "score_sums")}
    with LiveServer(create_app(Settings(store=store_path), {})) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        for table, offset in where.items():
            scribble(store_path, table, offset=offset)
        for path in ("/v1/runs", "/v1/runs/a/samples", "/"):
            r = httpx.get(f"{url}{path}")
            assert r.status_code == 500, (path, r.text)
            detail = r.json()["detail"]
            assert f"store {store_path} is damaged" in detail and "from a backup" in detail
            assert "\n" not in detail and "Traceback" not in r.text


def test_an_undecodable_stored_image_has_a_clear_thumbnail_error(tmp_path: Path) -> None:
    """Images imported before imports were checked: the thumbnail says what is wrong, no traceback."""
    store_path = tmp_path / "s.duckdb"
    store = Store(store_path)
    add_mini_run(store, "a", prompts=2)
    with store.session() as con:
        sha, rel = con.execute("SELECT image_sha256, image_path FROM samples LIMIT 1").fetchone()
    file = store.image_file(rel)
    cut = file.read_bytes()[:60]
    sha2, rel2 = store.put_image(cut)
    with store.session() as con:
        con.execute("UPDATE samples SET image_sha256 = ?, image_path = ? WHERE image_sha256 = ?",
                    [sha2, rel2, sha])  # fmt: skip
    with LiveServer(create_app(Settings(store=store_path), {})) as url:
        assert httpx.get(f"{url}/v1/images/{sha2}").status_code == 200  # the bytes as stored
        r = httpx.get(f"{url}/v1/images/{sha2}", params={"size": 64})
        assert r.status_code == 500 and "cannot be decoded" in r.json()["detail"]
        assert "harness store check" in r.json()["detail"]
