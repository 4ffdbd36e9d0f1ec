"""/v1/leaderboard ranks complete runs of the standard protocol first; partial runs and runs of another protocol
follow with ``rank`` null and ``status`` saying why, whatever column one sorts by, unless ``rank_all``."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from results.store import Store
from service.app import create_app
from service.settings import Settings
from tests.support.live_server import LiveServer
from tests.support.runs import TASKS, add_standard_run, put


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("rank") / "s.duckdb"
    s = Store(path)
    groups = [t for t in TASKS for _ in range(4)]
    add_standard_run(s, "full", "geneval", 6, 4)
    put(s, "full", "geneval", "geneval", [1, 0] * 12, groups, per_prompt=4)
    add_standard_run(s, "limit", "geneval", 6, 4)  # --limit 1: 4 of 24 images, all right
    put(s, "limit", "geneval", "geneval", [1] * 4, groups[:4], per_prompt=4)
    add_standard_run(s, "fast", "geneval", 6, 4, steps=5)
    put(s, "fast", "geneval", "geneval", [1] * 21 + [0] * 3, groups, per_prompt=4)
    with LiveServer(create_app(Settings(store=path), {})) as u:
        yield u


def _rows(url: str, **params: str) -> list[tuple[str, int | None, str]]:
    board = httpx.get(f"{url}/v1/leaderboard/geneval", params=params).json()
    (t,) = board["tables"]
    return [(r["run_id"], r["rank"], r["status"]) for r in t["rows"]]


def test_partial_and_other_protocol_rows_follow_the_ranked_ones(url: str) -> None:
    assert _rows(url) == [
        ("full", 1, ""),
        ("limit", None, "partial"),
        ("fast", None, "other protocol"),
    ]
    t = httpx.get(f"{url}/v1/leaderboard/geneval").json()["tables"][0]
    assert t["ranked_by"] == "Overall" and t["rows"][0]["name"].startswith("mini · ")
    assert "other protocol: fast: steps 5 (standard 40)" in t["notes"]
    # an explicit sort keeps the ranked rows first
    assert [r[0] for r in _rows(url, sort="Overall", order="desc")] == ["full", "limit", "fast"]
    assert [r[0] for r in _rows(url, sort="Overall", order="asc")] == ["full", "fast", "limit"]
    mixed = _rows(url, rank_all="true")
    assert mixed == [("limit", 1, "partial"), ("fast", 2, "other protocol"), ("full", 3, "")]
