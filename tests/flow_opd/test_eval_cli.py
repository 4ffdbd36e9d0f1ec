"""`harness eval` end to end on the tiny model: table + store, SIGKILL halfway then resume, 2 processes == 1,
and the read commands (runs, leaderboard, compare, report) on the result."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from flow_opd.cli import app
from results.store import Store
from tests.support.fakes import register

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--steps", "3", "--size", "64", "--no-progress"]


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    import scorers

    monkeypatch.setattr(scorers, "SCORERS", dict(scorers.SCORERS))
    register()


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's workers (OMP_NUM_THREADS=1)
    yield
    torch.set_num_threads(n)


def env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "FLOW_OPD_VERBOSE": "0",
        **extra,
    }


def rows(path: Path) -> list[tuple[Any, ...]]:
    with Store(path, read_only=True).session() as con:
        return con.execute(
            "SELECT benchmark, prompt_id, image_index, seed, image_sha256, scorer, value, reward, details "
            "FROM sample_scores ORDER BY ALL"
        ).fetchall()


def test_eval_killed_halfway_then_restarted_has_exactly_every_row(
    tiny_sd3_dir: Path, tmp_path: Path
) -> None:
    store = tmp_path / "s.duckdb"
    cmd = [sys.executable, "-m", "tests.support.harness_with_fakes", "eval", "--model", str(tiny_sd3_dir),
           "--benchmark", "geneval", "--scorers", "fake", "--limit", "4", "--batch-size", "2",
           "--store", str(store), "--run", "crash", *FAST]  # fmt: skip
    # 4 prompts x 4 images = 8 batches of 2; each batch sleeps 0.5 s in the scorer, after its images are on disk
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env(FAKE_SCORER_DELAY="0.5"), stderr=subprocess.PIPE, text=True
    )
    images = tmp_path / "images"
    deadline = time.monotonic() + 240
    while (
        len(list(images.glob("*/*.png"))) < 8
    ):  # batch 4 is being scored: batches 1-3 have committed
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "eval made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed = rows(store)
    assert 0 < len(killed) < 16

    # restart (in this process: same command, no delay) and finish
    args = cmd[cmd.index("eval") :]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    final = rows(store)
    want = sorted(
        ("geneval", f"geneval/{i:05d}", j, 42 + 4 * i + j) for i in range(4) for j in range(4)
    )
    assert sorted(r[:4] for r in final) == want  # every image once: none missing, none twice
    assert set(killed) <= set(final)  # committed rows were kept as they were
    assert "GenEval prompts scored by fake" in out.output and "Single" in out.output
    n = len(killed)
    assert (
        f"{16 - n} images generated, 0 re-scored, {n} already complete, {16 - n} scores added"
        in out.output
    )

    again = CliRunner().invoke(app, args)  # a second run skips all of it
    assert again.exit_code == 0, again.output
    assert "0 images generated, 0 re-scored, 16 already complete, 0 scores added" in again.output
    assert rows(store) == final


def test_two_processes_give_exactly_the_rows_of_one(tiny_sd3_dir: Path, tmp_path: Path) -> None:
    args = ["eval", "--model", str(tiny_sd3_dir), "--benchmark", "geneval,ocr", "--scorers", "fake",
            "--limit", "3", "--batch-size", "2", "--run-id", "shard", *FAST]  # fmt: skip
    two = tmp_path / "two.duckdb"
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    out = subprocess.run(
        [*launch, "-m", "tests.support.harness_with_fakes", *args, "--store", str(two)],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run_id = "shard"
    run = Store(two, read_only=True).get_run(run_id)
    assert run is not None and run.provenance["world_size"] == 2  # really two processes, not one

    one = tmp_path / "one.duckdb"
    res = CliRunner().invoke(app, [*args, "--store", str(one)])
    assert res.exit_code == 0, res.output
    assert Store(one, read_only=True).get_run(run_id).provenance["world_size"] == 1  # type: ignore[union-attr]
    r1, r2 = rows(one), rows(two)
    assert (
        len(r1) == 3 * 4 + 3 and r1 == r2
    )  # same keys, seeds, pixels (sha256), values and details


def test_user_errors_are_one_line_and_leave_the_store_alone(
    tiny_sd3_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    bad = tmp_path / "notes.duckdb"
    bad.write_text("my precious notes, not a database\n" * 20)
    args = ["eval", "-b", "ocr", "--scorers", "fake", "--store", str(bad)]
    res = runner.invoke(app, [*args, "--model", str(tiny_sd3_dir)])
    assert res.exit_code == 2 and "is not a DuckDB database" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, [*args, "--model", "x/y"])
    assert res.exit_code == 2 and "model 'x/y' is not available here" in res.output
    assert bad.read_text() == "my precious notes, not a database\n" * 20
    res = runner.invoke(app, ["eval", "-b", "pickscor", "--store", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 2 and "did you mean pickscore" in res.output
    res = runner.invoke(
        app, ["eval", "-b", "ocr", "--scorers", "ocrr,fake", "--store", str(tmp_path / "s.duckdb")]
    )
    assert res.exit_code == 2 and "unknown scorer 'ocrr'" in res.output
    res = runner.invoke(app, ["leaderboard", "--store", str(tmp_path / "none.duckdb")])
    assert res.exit_code == 2 and "no results store" in res.output


class _Imgs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.srcs.append(dict(attrs)["src"] or "")
        self.tables += tag == "table"


def test_runs_leaderboard_compare_and_report(tiny_sd3_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    store = tmp_path / "s.duckdb"
    for run, cfg in (("a", "4.5"), ("b", "1.0")):
        res = runner.invoke(app, ["eval", "--model", str(tiny_sd3_dir), "-b", "geneval", "--scorers", "fake",
                                  "--limit", "2", "--cfg", cfg, "--run", run, "--store", str(store), *FAST])  # fmt: skip
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["runs", "--store", str(store), "--format", "csv"])
    assert (
        res.exit_code == 0
        and res.output.count(str(tiny_sd3_dir)) == 2
        and ",geneval,0,8,8," in res.output
    )
    res = runner.invoke(
        app,
        ["leaderboard", "--store", str(store), "--benchmark", "geneval", "--format", "markdown"],
    )
    assert res.exit_code == 0 and "| a | 0 |" in res.output and "| b | 0 |" in res.output
    res = runner.invoke(app, ["compare", "a", "b", "--store", str(store), "--format", "json"])
    assert res.exit_code == 0, res.output
    import json

    (t,) = json.loads(res.output)
    (d,) = t["rows"]
    assert (
        d["benchmark"] == "geneval"
        and d["95% low"] <= d["A - B"] <= d["95% high"]
        and d["prompts"] == 2
    )

    page = tmp_path / "out" / "a.html"
    res = runner.invoke(app, ["report", "a", "--store", str(store), "--out", str(page)])
    assert res.exit_code == 0 and res.output.strip() == str(page)
    parsed = _Imgs()
    parsed.feed(page.read_text())
    assert parsed.tables >= 1 and len(parsed.srcs) == 8
    assert all((page.parent / s).resolve().is_file() for s in parsed.srcs)  # relative links resolve
    assert "fake 0." in page.read_text() and "single_object" in page.read_text()
    res = runner.invoke(app, ["report", "a", "--store", str(store), "--out", str(page), "--inline"])
    parsed = _Imgs()
    parsed.feed(page.read_text())
    assert len(parsed.srcs) == 8 and all(
        s.startswith("data:image/jpeg;base64,") for s in parsed.srcs
    )
    res = runner.invoke(app, ["report", "c", "--store", str(store)])
    assert res.exit_code == 2 and "no run 'c'" in res.output


def test_read_commands_do_not_import_torch(tmp_path: Path) -> None:
    from tests.support.runs import add_run, paper_sd35m

    store = Store(tmp_path / "s.duckdb")
    add_run(store, "sd35m", {})
    paper_sd35m(store, "sd35m")
    code = (
        "import sys; from typer.testing import CliRunner; from flow_opd.cli import app; "
        f"r = CliRunner().invoke(app, ['leaderboard', '--store', {str(tmp_path / 's.duckdb')!r}]); "
        "print(r.output); assert r.exit_code == 0; assert 'torch' not in sys.modules, 'torch imported'"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert (
        "sd35m" in out.stdout and "0.7166" in out.stdout
    )  # the main table, Avg as the paper defines it


def test_sampling_settings_option_then_benchmark_protocol_then_paper() -> None:
    from harness.benchmarks import sampling_settings

    mini = {"steps": 10, "cfg": 4.5, "height": 32, "width": 32, "batch_size": 64}
    paper = {"steps": 40, "cfg": 4.5, "height": 512, "width": 512, "batch_size": 8}
    assert sampling_settings(["mini"]) == mini
    assert sampling_settings(["mini_ocr"]) == mini
    assert sampling_settings(["geneval"]) == paper
    assert sampling_settings([]) == paper
    given = sampling_settings(["mini"], steps=3, size=16, batch_size=2)
    assert given == {"steps": 3, "cfg": 4.5, "height": 16, "width": 16, "batch_size": 2}
    native = {"height": 32, "width": 32, "steps": 10, "cfg": 3.0}  # a model's own settings
    assert sampling_settings([], native=native) == {**native, "batch_size": 8}
    assert sampling_settings([], native=native, size=64, cfg=1.0) == {
        "steps": 10,
        "cfg": 1.0,
        "height": 64,
        "width": 64,
        "batch_size": 8,
    }


SUMMARY = re.compile(
    r"(\d+) images generated, (\d+) re-scored, (\d+) already complete, (\d+) scores added"
)


def test_two_concurrent_evals_of_one_run_share_the_work_and_count_true(
    tiny_sd3_dir: Path, tmp_path: Path
) -> None:
    store = tmp_path / "s.duckdb"
    cmd = [sys.executable, "-m", "tests.support.harness_with_fakes", "eval", "--model", str(tiny_sd3_dir),
           "--benchmark", "geneval", "--scorers", "fake", "--limit", "4", "--batch-size", "2",
           "--store", str(store), *FAST]  # fmt: skip
    gate = (
        tmp_path / "gate"
    )  # the first process's scorer holds its first batch until this file exists
    first = subprocess.Popen(
        cmd, cwd=ROOT, env=env(FAKE_SCORER_GATE=str(gate)), stderr=subprocess.PIPE, text=True
    )
    images = tmp_path / "images"
    deadline = time.monotonic() + 240
    while not list(images.glob("*/*.png")):  # the first has planned and is scoring its first batch
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        assert time.monotonic() < deadline, "eval made no progress"
        time.sleep(0.05)
    second = subprocess.Popen(cmd, cwd=ROOT, env=env(), stderr=subprocess.PIPE, text=True)
    assert second.stderr is not None
    err2 = ""
    for (
        line
    ) in second.stderr:  # until it says it waits, or (without the lock) ends having done it all
        err2 += line
        if "waiting for it to finish" in line:
            break
    gate.touch()
    err1 = first.communicate(timeout=400)[1]
    err2 += second.communicate(timeout=400)[1]
    assert first.returncode == 0 and second.returncode == 0, err1[-2000:] + err2[-2000:]
    (m1,), (m2,) = SUMMARY.findall(err1), SUMMARY.findall(err2)
    counts = Store(store, read_only=True).count_rows()
    assert counts == {"runs": 1, "samples": 16, "scores": 16}
    # every count printed is true: together they are exactly the rows stored
    assert int(m1[0]) + int(m2[0]) == counts["samples"]
    assert int(m1[3]) + int(m2[3]) == counts["scores"]
    # the second waited for the first and found the work done instead of doing it again
    assert m2 == ("0", "0", "16", "0"), err2[-2000:]
    assert "waiting for it to finish" in err2


def one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output[-3000:]
    return lines[0]


def test_bad_eval_inputs_are_one_line_before_any_work_and_leave_no_run(
    tiny_sd3_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    store = tmp_path / "s.duckdb"
    base = ["eval", "--model", str(tiny_sd3_dir), "-b", "geneval", "--scorers", "fake", "--limit", "1",
            "--store", str(store), *FAST]  # fmt: skip
    res = runner.invoke(app, [*base, "--run", "kept"])
    assert res.exit_code == 0, res.output
    before = rows(store)
    images = sorted((tmp_path / "images").rglob("*.png"))
    folder = tmp_path / "prompts"
    folder.mkdir()
    bad = {
        "--device cuda:99": "device 'cuda:99' is not available here",
        "--device foo": "unknown device 'foo'",
        f"--prompts {folder}": "is a folder",
        "--format xml": "unknown format 'xml'",
        "--batch-size 0": "--batch-size must be >= 1",
        "--dtype int8": "unknown dtype 'int8'",
        "--cfg nan": "cfg must be a number >= 0",
        f"--lora {tmp_path / 'no-lora'}": "LoRA",
        f"--lora {folder}": "nor a PEFT LoRA folder",
    }
    for option, why in bad.items():
        res = runner.invoke(app, [*base, *option.split(), "--run", "bad"])
        assert res.exit_code == 2, (option, res.output)
        assert why in one_line_error(res.output), option
    # an evaluation that fails once it has started (the size does not fit the model) leaves no run either
    res = runner.invoke(app, [*base, "--size", "72", "--run", "bad"])
    assert res.exit_code == 2 and "multiple of 16" in one_line_error(res.output)
    assert Store(store, read_only=True).run_ids() == ["kept"]
    assert rows(store) == before
    assert sorted((tmp_path / "images").rglob("*.png")) == images


def test_every_missing_weight_is_listed_at_once_before_any_work(
    tiny_sd3_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("FLOW_OPD_DEQA_URL", raising=False)
    store = tmp_path / "s.duckdb"
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_sd3_dir), "-b", "main", "--limit", "1",
                                   "--store", str(store), *FAST])  # fmt: skip
    assert res.exit_code == 2
    line = one_line_error(res.output)
    assert "things this evaluation needs are not here" in line
    for needed in (
        "geneval: weights not here (`harness fetch geneval`, or `hf download facebook/mask2former",
        "deqa: runs as a worker in its own environment and FLOW_OPD_DEQA_URL is not set",
        "python -m scorers.deqa_worker",
        "pickscore: weights not here (`harness fetch pickscore`, or",
        "`hf download yuvalkirstain/PickScore_v1 --revision a4e4367c6dfa7288a00c550414478f865b875800`",
        " and `hf download laion/CLIP-ViT-H-14-laion2B-s32B-b79K --include '*.json' '*.txt' --revision",
    ):
        assert needed in line, needed
    assert "huggingface-cli" not in line.split("deqa:")[1]  # the scorers' lines name `hf`
    assert not store.exists() and not (tmp_path / "images").exists()  # nothing was started

    # the model and the LoRA are checked in the same pass
    res = CliRunner().invoke(app, ["eval", "--model", "x/y", "--lora", "org/no-lora", "-b", "pickscore",
                                   "--store", str(store), *FAST])  # fmt: skip
    line = one_line_error(res.output)
    assert res.exit_code == 2 and "3 things" in line
    assert "model 'x/y' is not available here" in line and "LoRA 'org/no-lora'" in line
    assert "pickscore: weights not here" in line and not store.exists()
