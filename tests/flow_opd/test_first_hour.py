"""What a new user runs in the first hour: ``harness ls benchmarks | runs | scorers`` and ``harness generate`` on
the mini model (its own size and steps, a retry after a failure, a trainer run folder as ``--lora``)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from typer.testing import CliRunner

from flow_opd.cli import app
from harness.benchmarks import BENCHMARKS, load_benchmark_prompts
from results.store import RunRecord, Store
from tests.support.runs import put

runner = CliRunner()


def _cli(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


def test_ls_benchmarks_lists_prompts_images_scorers_and_primary_metric() -> None:
    code, out = _cli("ls", "benchmarks")
    assert code == 0, out
    lines = out.splitlines()
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    body = lines[3 : next(n for n, line in enumerate(lines) if line.startswith("suites:"))]
    rows = {line.split()[0]: line.split() for line in body if line[:1].strip()}
    assert set(BENCHMARKS) <= set(rows)
    assert rows["geneval"][1:3] == ["553", "4"] and "geneval" in rows["geneval"][3:]
    assert rows["mini_geneval"][1:3] == [str(len(load_benchmark_prompts("mini_geneval"))), "4"]
    code, out = _cli("ls", "benchmarks", "--format", "json")
    assert code == 0, out
    (table,) = json.loads(out)
    by_name = {r["benchmark"]: r for r in table["rows"]}
    assert by_name["drawbench"]["primary metric"] == "deqa"
    assert by_name["compbench"]["primary metric"].startswith("compbench")
    assert by_name["drawbench"]["scorers"].split(", ") == list(BENCHMARKS["drawbench"].scorers)
    assert by_name["ocr"]["prompts"] == 1018 and by_name["compbench"]["images/prompt"] == 10


def test_ls_runs_lists_the_store_runs(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.add_run(RunRecord("base", "mini", None, {"benchmarks": {}}, {"git_sha": "abc"}, "1"))
    store.add_run(RunRecord("tuned", "mini", "runs/ocr", {"benchmarks": {}}, {}, "1"))
    put(store, "tuned", "mini_ocr", "mini_ocr", [0.5, 1.0])
    code, out = _cli("ls", "runs", "--store", str(tmp_path / "s.duckdb"))
    assert code == 0, out
    assert "base" in out and "tuned" in out and "runs/ocr" in out and "mini_ocr" in out
    # dates to the minute for reading (no seconds, no microseconds); csv keeps the full timestamp
    assert re.search(r"\b\d{4}-\d\d-\d\d \d\d:\d\d\s", out) and not re.search(
        r"\d\d:\d\d:\d\d", out
    )
    code, out = _cli("ls", "runs", "--store", str(tmp_path / "s.duckdb"), "--format", "csv")
    assert code == 0, out
    rows = {r["run"]: r for r in csv.DictReader(io.StringIO(out.split("\n", 1)[1]))}
    assert rows["tuned"]["lora"] == "runs/ocr" and rows["tuned"]["images"] == "2"
    assert rows["base"]["images"] == "0"
    assert re.search(r"\d\d:\d\d:\d\d", rows["base"]["created"])


def test_ls_scorers_fits_100_columns_and_formats_give_everything() -> None:
    code, out = _cli("ls", "scorers", "--no-check")
    assert code == 0, out
    assert all(len(line) <= 100 for line in out.splitlines()), max(out.splitlines(), key=len)
    assert "deqa" in out and "separate worker env" in out
    code, out = _cli("ls", "scorers", "--no-check", "--format", "json")
    assert code == 0, out
    (table,) = json.loads(out)
    deqa = next(r for r in table["rows"] if r["scorer"] == "deqa")
    assert deqa["weights"] == "zhiyuanyou/DeQA-Score-Mix3"
    assert deqa["runs on"] == "GPU >= 16 GB, separate worker env"
    code, out = _cli("ls", "scorers", "--format", "xml")
    assert code == 2 and "unknown format" in out


def test_generate_mini_uses_its_own_size_and_a_failed_run_does_not_block_the_retry(
    tmp_path: Path,
) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    out = tmp_path / "o"
    code, text = _cli(
        "generate", "--model", "mini", "--prompts", str(prompts), "--out", str(out), "--steps", "2"
    )
    assert code == 0, text
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["height"], settings["width"]) == (32, 32)

    # a failed generate (a size the mini model cannot make) leaves no images: the corrected retry goes ahead
    bad = tmp_path / "b"
    code, text = _cli(
        "generate", "--model", "mini", "--prompts", str(prompts), "--out", str(bad), "--size", "64"
    )
    assert code == 2 and "32 x 32" in text
    code, text = _cli(
        "generate", "--model", "mini", "--prompts", str(prompts), "--out", str(bad), "--steps", "2"
    )
    assert code == 0, text
    assert "1 generated" in text and len(list((bad / "images").glob("*.png"))) == 1
    # a folder that does hold images still refuses other settings
    code, text = _cli(
        "generate", "--model", "mini", "--prompts", str(prompts), "--out", str(bad), "--steps", "3"
    )
    assert code == 2 and "other settings" in text


def test_generate_takes_a_trainer_run_folder_as_lora(tmp_path: Path) -> None:
    from flowmodels.adapters import LoraSpec, add_lora, save_adapter
    from flowmodels.mini import MINI_LORA_TARGETS
    from flowmodels.models import load_model

    model = load_model("mini", device="cpu", dtype="float32")
    add_lora(model.denoiser, "student", LoraSpec(rank=2, alpha=2, targets=MINI_LORA_TARGETS))
    run = tmp_path / "runs" / "ocr"
    save_adapter(model.denoiser, "student", run / "lora", {"base_model": "mini"})
    (run / "manifest.json").write_text(json.dumps({"base_model": "mini", "output": "lora"}))
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    code, text = _cli("generate", "--model", "mini", "--lora", str(run), "--prompts", str(prompts),
                      "--steps", "2", "--out", str(tmp_path / "o"))  # fmt: skip
    assert code == 0, text
    assert "1 generated" in text
