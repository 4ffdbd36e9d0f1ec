"""A model trained on evaluation prompts is marked wherever its numbers are shown, and a clean one is not.

``evaluate`` records the verdict of the model's and LoRA's run manifests (``manifest.json: contaminated``, see
``harness.splits``) in the run's provenance; the store exposes it; the CLI tables (leaderboard, runs, compare, the
report page), the service's JSON and its pages (in headless Chromium) mark the run with ``†``. Stores are real
DuckDB files written by the same verbs as ``harness eval`` (``tests.support.service_data``), the evaluations run the tiny
SD3 model with weight-free fake scorers.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from typer.testing import CliRunner

from flow_opd.cli import app
from harness.evaluation import evaluate
from harness.protocol import EvalProtocol
from harness.tables import CONTAMINATED_LEGEND, CONTAMINATED_MARK, benchmark_tables, render
from results.store import Store, contamination
from service.app import create_app
from service.settings import Settings
from tests.support.cdp import INSTALL, Browser, find_chromium
from tests.support.fakes import register
from tests.support.live_server import LiveServer
from tests.support.service_data import add_mini_run

WHY = (
    "datasets.pickscore: 7 of 25432 training prompts are evaluation prompts (drawbench 1, pickscore 6); "
    'e.g. "a <b>bold</b> cat"'
)
LEGEND = "† trained on evaluation prompts (see the run's manifest: contaminated)"
TINY = EvalProtocol(steps=3, height=64, width=64)
CHROMIUM = find_chromium()


def test_the_mark_and_legend_are_the_documented_ones() -> None:
    assert CONTAMINATED_MARK == "†" and CONTAMINATED_LEGEND == LEGEND


# --- recording: evaluate() --------------------------------------------------------------------------


@pytest.fixture()
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    import scorers

    monkeypatch.setattr(scorers, "SCORERS", dict(scorers.SCORERS))
    register()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _eval(model: Any, store: Store, **kw: Any) -> Any:
    return evaluate(
        model, ["ocr"], store=store, protocol=TINY, scorers=["fake"], limit=1, progress=False, **kw
    )


@pytest.mark.usefixtures("fakes", "one_thread")
def test_evaluate_records_the_lora_manifests_verdict(
    tiny_model: Any, tiny_sd3_dir: Path, tmp_path: Path
) -> None:
    from flowmodels import adapters

    adapters.add_lora(tiny_model.denoiser, "student", adapters.LoraSpec(rank=2, alpha=4))
    lora = adapters.save_adapter(
        tiny_model.denoiser, "student", tmp_path / "run" / "lora", {"contaminated": [WHY]}
    )
    clean = adapters.save_adapter(tiny_model.denoiser, "student", tmp_path / "clean" / "lora")
    store = Store(tmp_path / "s.duckdb")

    # the command line: the model and LoRA by folder, the LoRA really loaded, the printed table marked
    out = cli("eval", "--model", str(tiny_sd3_dir), "--lora", str(lora), "-b", "ocr", "--scorers", "fake",
              "--limit", "1", "--run", "dirty", "--store", str(store.path), "--steps", "3", "--size", "64",
              "--no-progress")  # fmt: skip
    assert "dirty†  0" in out and LEGEND in out and "1 images generated" in out
    run = store.get_run("dirty")
    assert run is not None and run.provenance["contaminated"] == [WHY]
    assert run.contaminated and run.contamination == [WHY]
    _eval(str(tiny_sd3_dir), store, lora=str(clean), run_id="clean")
    assert store.get_run("clean").provenance["contaminated"] == []  # type: ignore[union-attr]
    _eval(str(tiny_sd3_dir), store, run_id="base")  # no LoRA, a plain model folder
    assert store.contaminated_runs() == {"dirty": [WHY]}
    assert {r["run_id"]: r["contaminated"] for r in store.runs()} == {
        "dirty": True,
        "clean": False,
        "base": False,
    }


@pytest.mark.usefixtures("fakes", "one_thread")
def test_evaluate_reads_a_merged_model_through_its_run_manifest(tmp_path: Path) -> None:
    from flowmodels.tiny import save_tiny_sd3

    merged = save_tiny_sd3(
        tmp_path / "run" / "merged", seed=0
    )  # merged/ sits beside the run's manifest
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"contaminated": [WHY]}))
    store = Store(tmp_path / "s.duckdb")
    _eval(str(merged), store, run_id="merged")
    assert store.get_run("merged").contamination == [WHY]  # type: ignore[union-attr]


@pytest.mark.usefixtures("fakes", "one_thread")
def test_the_trainers_explicit_reasons_are_recorded_and_a_resumed_run_keeps_them(
    tiny_model: Any, tmp_path: Path
) -> None:
    store = Store(tmp_path / "s.duckdb")
    _eval(tiny_model, store, run_id="grpo", step=10, contaminated=[WHY])
    assert store.get_run("grpo").contamination == [WHY]  # type: ignore[union-attr]
    _eval(
        tiny_model, store, run_id="grpo", step=20, contaminated=[]
    )  # a later session never clears it
    assert store.get_run("grpo").contamination == [WHY]  # type: ignore[union-attr]
    more = "init runs/sft: datasets.ocr: 1 of 10 training prompts are evaluation prompts (ocr 1)"
    _eval(tiny_model, store, run_id="grpo", step=30, contaminated=[more, WHY])
    run = store.get_run("grpo")
    assert run is not None and run.contamination == [WHY, more]  # added once, in order
    assert len(run.provenance["sessions"]) == 3
    _eval(tiny_model, store, run_id="fresh")  # a loaded model without reasons: clean
    assert store.get_run("fresh").provenance["contaminated"] == []  # type: ignore[union-attr]
    with pytest.raises(TypeError, match="list of reasons"):
        _eval(tiny_model, store, run_id="x", contaminated=WHY)


def test_contamination_reads_every_form_a_provenance_may_hold() -> None:
    assert contamination({"contaminated": [WHY]}) == [WHY]
    assert contamination(json.dumps({"contaminated": [WHY]})) == [WHY]
    assert contamination({"contaminated": "one reason"}) == ["one reason"]
    for clean in ({}, {"contaminated": []}, {"contaminated": None}, "not json", None):
        assert contamination(clean) == []


# --- a store with a contaminated and a clean run -------------------------------------------------------


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("contaminated") / "results.duckdb"
    store = Store(path)
    add_mini_run(store, "dirty", model="mini-dirty", skill=0.9, prompts=6, contaminated=(WHY,))
    add_mini_run(store, "clean", model="mini-clean", skill=0.5, prompts=6)
    return path


@pytest.fixture(scope="module")
def clean_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clean") / "results.duckdb"
    add_mini_run(Store(path), "clean", model="mini-clean", skill=0.5, prompts=6)
    return path


def cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def test_leaderboard_marks_the_contaminated_run_in_every_format(store_path: Path) -> None:
    s = str(store_path)
    text = cli("leaderboard", "--store", s, "-b", "geneval")
    lines = text.splitlines()
    assert any(line.startswith("dirty†  0") for line in lines), text
    assert any(line.startswith("clean   0") for line in lines), (
        text
    )  # the column widened for the mark
    assert lines[-1] == LEGEND
    md = cli("leaderboard", "--store", s, "-b", "geneval", "--format", "markdown")
    assert "| dirty† | 0 |" in md and "| clean | 0 |" in md and md.rstrip().endswith(LEGEND)

    (header, *rows) = list(
        csv.reader(io.StringIO(cli("leaderboard", "--store", s, "--format", "csv")))
    )[1:]
    assert header[-2:] == ["partial", "contaminated"]
    got = {r[0]: r[-1] for r in rows if r and not r[0].startswith("#")}
    assert got["dirty"] == "true" and got["clean"] == "false"

    tables = json.loads(cli("leaderboard", "--store", s, "--format", "json"))
    for t in tables:
        assert t["contamination"] == {"dirty": [WHY]}
        assert {r["run"]: r["contaminated"] for r in t["rows"]} == {"dirty": True, "clean": False}


def test_runs_list_marks_it_with_the_reasons(store_path: Path) -> None:
    text = cli("runs", "--store", str(store_path))
    assert "dirty†" in text and "clean†" not in text
    assert f"dirty†: {WHY}" in text and text.rstrip().endswith(LEGEND)
    (t,) = json.loads(cli("runs", "--store", str(store_path), "--format", "json"))
    assert t["contamination"] == {"dirty": [WHY]}
    assert {r["run"]: r["contaminated"] for r in t["rows"]} == {"dirty": True, "clean": False}


def test_compare_marks_the_contaminated_side(store_path: Path) -> None:
    text = cli("compare", "dirty", "clean", "--store", str(store_path), "--resamples", "50")
    assert text.startswith("dirty† (A) vs clean (B)") and text.rstrip().endswith(LEGEND)
    text = cli("compare", "clean", "dirty", "--store", str(store_path), "--resamples", "50")
    assert text.startswith("clean (A) vs dirty† (B)")
    rows = list(csv.reader(io.StringIO(cli("compare", "dirty", "clean", "--store", str(store_path),
                                           "--resamples", "50", "--format", "csv"))))  # fmt: skip
    assert rows[1][-1] == "contaminated" and all(r[-1] == "true" for r in rows[2:] if r)


def test_report_page_shows_a_badge_a_banner_and_the_legend(
    store_path: Path, tmp_path: Path
) -> None:
    page = Path(
        cli(
            "report", "dirty", "--store", str(store_path), "--out", str(tmp_path / "d.html")
        ).strip()
    )
    html = page.read_text()
    assert (
        "class='banner contaminated-run'" in html
        and "This model was trained on evaluation prompts" in html
    )
    assert "a &lt;b&gt;bold&lt;/b&gt; cat" in html and "<b>bold</b>" not in html  # reasons escaped
    assert html.count("<span class='contaminated'") == 1 + 2  # the title and each table's run cell
    assert "† trained on evaluation prompts (see the run&#x27;s manifest: contaminated)" in html
    clean = Path(
        cli(
            "report", "clean", "--store", str(store_path), "--out", str(tmp_path / "c.html")
        ).strip()
    )
    top = clean.read_text().split("<h2>Protocol</h2>")[0]
    assert "class='contaminated'" not in top and "banner" not in top
    assert "†" not in clean.read_text()


def test_a_clean_store_prints_exactly_what_it_printed_before(
    clean_path: Path, store_path: Path
) -> None:
    for fmt in ("text", "markdown", "csv", "json"):
        out = cli("leaderboard", "--store", str(clean_path), "--format", fmt)
        assert "†" not in out and "contaminated" not in out and "contamination" not in out
        runs = cli("runs", "--store", str(clean_path), "--format", fmt)
        assert "†" not in runs and "contaminated" not in runs
    # a clean table renders as the table did before the mark existed: no mark, no legend, no column
    (t, *_) = benchmark_tables(Store(clean_path, read_only=True))
    assert t.contaminated == {}
    plain = render(t, "csv").splitlines()[1]
    assert plain.endswith(",partial")
    # the clean run of a mixed store is unmarked too
    (mixed, *_) = benchmark_tables(Store(store_path, read_only=True), run_ids=["clean"])
    assert mixed.contaminated == {} and render(mixed) == render(t)


# --- the service ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(store_path: Path) -> Iterator[str]:
    with LiveServer(create_app(Settings(store=store_path), {})) as url:
        yield url


def test_service_json_carries_the_flag_and_the_reasons(server: str) -> None:
    with httpx.Client(base_url=server) as http:
        board = http.get("/v1/leaderboard/geneval").json()
        rows = {r["run_id"]: r for t in board["tables"] for r in t["rows"]}
        assert rows["dirty"]["contaminated"] is True and rows["dirty"]["contamination"] == [WHY]
        assert rows["clean"]["contaminated"] is False and rows["clean"]["contamination"] == []
        runs = {r["run_id"]: r for r in http.get("/v1/runs").json()["runs"]}
        assert runs["dirty"]["contaminated"] and runs["dirty"]["contamination"] == [WHY]
        assert not runs["clean"]["contaminated"]
        run = http.get("/v1/runs/dirty").json()
        assert run["contaminated"] and run["contamination"] == [WHY]
        assert all(r["contaminated"] for t in run["tables"] for r in t["rows"])
        assert http.get("/v1/runs/clean").json()["contaminated"] is False
        schema = http.get("/openapi.json").json()["components"]["schemas"]
        assert {"contaminated", "contamination"} <= set(schema["LeaderboardRow"]["properties"])


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip(f"Chromium is not installed (Debian: `{INSTALL}`)")
    with Browser(CHROMIUM) as b:
        yield b


VISIBLE = (
    "Array.from(document.querySelectorAll('{sel}')).filter(e => {{ const r = e.getBoundingClientRect();"
    " const s = getComputedStyle(e); return r.width > 0 && r.height > 0 && s.visibility !== 'hidden'; }})"
    ".map(e => [e.closest('tr') ? e.closest('tr').dataset.run : '', e.textContent.trim(), e.title])"
)


def test_pages_show_a_visible_badge_with_the_reasons(
    server: str, browser: Browser, tmp_path: Path
) -> None:
    b = browser
    shots = Path(os.environ.get("FLOW_OPD_SCREENSHOTS", tmp_path))
    b.goto(server + "/?benchmark=geneval")
    badges = b.js(VISIBLE.format(sel="#board-1 .contaminated"))
    assert badges == [["dirty", "† eval prompts", f"trained on evaluation prompts: {WHY}"]]
    assert (
        b.js("getComputedStyle(document.querySelector('.contaminated')).backgroundColor")
        == "rgb(179, 38, 30)"
    )
    assert b.js("document.querySelector('.legend-contaminated').textContent") == LEGEND
    b.click("#board-1 thead th:nth-child(1)")  # sorting by run: by name, then id, not by the badge
    assert b.js(
        "Array.from(document.querySelectorAll('#board-1 tr[data-run]')).map(r => r.dataset.run)"
    ) == [
        "clean",
        "dirty",
    ]
    options = b.js(
        "Array.from(document.querySelectorAll('select[name=a] option')).map(o => [o.value, o.text])"
    )
    assert [(v, t.split(" (")[-1]) for v, t in options] == [
        ("dirty", "dirty) †"),
        ("clean", "clean)"),
    ]
    b.screenshot(shots / "leaderboard-contaminated.png")

    b.goto(server + "/runs/dirty")
    assert b.js(VISIBLE.format(sel="h1 .contaminated"))[0][1] == "† eval prompts"
    banner = b.js("document.querySelector('.banner.contaminated-run').textContent")
    assert "This model was trained on evaluation prompts" in banner and WHY in banner
    assert (
        b.js("document.querySelectorAll('.banner b').length") == 1
    )  # the reason's markup shows as text
    b.screenshot(shots / "run-contaminated.png")

    b.goto(server + "/runs/clean")
    assert (
        b.js("document.querySelectorAll('.contaminated, .banner, .legend-contaminated').length")
        == 0
    )

    b.goto(server + "/compare?a=clean&b=dirty&benchmark=geneval")
    marks = b.js(VISIBLE.format(sel=".contaminated"))
    assert len(marks) == 2 and all(
        m[2].endswith(WHY) for m in marks
    )  # the title and B's column head
    assert b.js("document.querySelector('.legend-contaminated').textContent") == LEGEND
    assert b.problems() == []
