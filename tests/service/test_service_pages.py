"""The HTML pages in headless Chromium (Debian's ``chromium``) against a live server: the leaderboard renders and
sorts by clicking headers, the run and comparison pages show every image, and no page logs an error.

Skipped, saying how to install it, where Chromium is missing. ``FLOW_OPD_SCREENSHOTS=DIR`` keeps the screenshots.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from results.store import Store
from service.app import create_app
from service.settings import Settings
from tests.support.cdp import INSTALL, Browser, find_chromium
from tests.support.live_server import LiveServer
from tests.support.service_data import add_mini_run

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason=f"Chromium is not installed (Debian: `{INSTALL}`)"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Browser, Path]]:
    tmp = tmp_path_factory.mktemp("pages")
    store = Store(tmp / "results.duckdb")
    add_mini_run(store, "good", model="mini-good", skill=1.0, prompts=6)
    add_mini_run(store, "mid", model="mini-mid", skill=0.7, prompts=6)
    add_mini_run(store, "bad <i>x", model="mini-bad", skill=0.3, prompts=6)  # markup in a run id
    shots = Path(os.environ.get("FLOW_OPD_SCREENSHOTS", tmp / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    assert CHROMIUM is not None
    with LiveServer(create_app(Settings(store=tmp / "results.duckdb"), {})) as url:
        with Browser(CHROMIUM) as browser:
            yield url, browser, shots


def _column(browser: Browser, table: str, index: int) -> list[str]:
    return browser.js(
        f"Array.from(document.querySelectorAll('{table} tbody tr'))"
        f".map(r => r.cells[{index}].textContent.trim())"
    )


def test_leaderboard_renders_and_sorts(site: tuple[str, Browser, Path]) -> None:
    url, b, shots = site
    mark = len(b.events)
    b.goto(url + "/?benchmark=geneval")
    heads = b.js(
        "Array.from(document.querySelectorAll('#board-1 thead th')).map(h => h.textContent)"
    )
    assert heads[:5] == ["run", "model", "protocol", "step", "Overall"]
    assert "Color attr." in heads
    runs = _column(b, "#board-1", 0)
    assert runs == ["good", "mid", "bad <i>x"]  # escaped: the markup shows as text
    assert b.js("document.querySelectorAll('#board-1 i').length") == 0
    overall = [float(v) for v in _column(b, "#board-1", 4)]
    assert overall == sorted(overall, reverse=True) and overall[0] == 1.0

    b.click("#board-1 thead th:nth-child(5)")  # Overall: largest first
    assert [float(v) for v in _column(b, "#board-1", 4)] == sorted(overall, reverse=True)
    b.click("#board-1 thead th:nth-child(5)")  # again: smallest first
    assert [float(v) for v in _column(b, "#board-1", 4)] == sorted(overall)
    assert (
        b.js("document.querySelector('#board-1 thead th:nth-child(5)').getAttribute('aria-sort')")
        == "ascending"
    )
    b.click("#board-1 thead th:nth-child(2)")  # model: A to Z
    assert _column(b, "#board-1", 1) == ["mini-bad", "mini-good", "mini-mid"]
    b.screenshot(shots / "leaderboard.png")
    assert _new(b, mark) == []


def _new(b: Browser, mark: int) -> list[str]:
    saved = b.events
    b.events = saved[mark:]
    try:
        return b.problems()
    finally:
        b.events = saved


def test_tabs_and_default_benchmark(site: tuple[str, Browser, Path]) -> None:
    url, b, _ = site
    mark = len(b.events)
    b.goto(url + "/")
    tabs = b.js("Array.from(document.querySelectorAll('nav.tabs a')).map(a => a.textContent)")
    assert tabs == ["main", "geneval", "drawbench"]  # registry order
    # no main-table scores in this store: the page opens on the first benchmark that has some
    assert b.js("document.querySelector('nav.tabs a.active').textContent") == "geneval"
    loaded = len(b.events)
    b.click("nav.tabs a:nth-child(3)")
    b.wait_event("Page.loadEventFired", since=loaded)
    assert "Image quality" in b.js("document.querySelector('#board-1 caption').textContent")
    assert _new(b, mark) == []


def test_run_page_shows_tables_and_every_image(site: tuple[str, Browser, Path]) -> None:
    url, b, shots = site
    mark = len(b.events)
    b.goto(url + "/runs/mid?benchmark=geneval")
    images = b.load_all_images()
    assert len(images) == 6 * 2  # 6 prompts x 2 images, one page
    assert all(i["w"] == 32 and i["h"] == 32 for i in images), images
    prompts = b.js("document.querySelectorAll('section.prompt').length")
    assert prompts == 6
    captions = b.js("Array.from(document.querySelectorAll('figcaption')).map(f => f.textContent)")
    assert all("mini_geneval" in c for c in captions)
    assert b.js("document.querySelectorAll('table.board').length") == 2
    b.screenshot(shots / "run.png")
    assert _new(b, mark) == []


def test_compare_page_pairs_images(site: tuple[str, Browser, Path]) -> None:
    url, b, shots = site
    mark = len(b.events)
    b.goto(url + "/compare?a=good&b=mid&benchmark=geneval")
    rows = b.js(
        "Array.from(document.querySelectorAll('#deltas tbody tr')).map(r => [r.cells[0].textContent,"
        " r.cells[1].textContent, parseFloat(r.cells[4].textContent)])"
    )
    assert [r[:2] for r in rows] == [["geneval", "mini_geneval"]]
    assert rows[0][2] > 0  # good is better than mid
    images = b.load_all_images()
    assert len(images) == 2 * 6 * 2 and all(i["w"] > 0 for i in images)
    b.screenshot(shots / "compare.png")
    assert _new(b, mark) == []


def test_missing_pages_are_404_and_reported(site: tuple[str, Browser, Path]) -> None:
    url, b, _ = site
    mark = len(b.events)
    b.goto(url + "/runs/nope")
    assert "no run" in b.js("document.body.textContent")
    assert any(
        "HTTP 404" in p for p in _new(b, mark)
    )  # the checker sees errors when there are some
