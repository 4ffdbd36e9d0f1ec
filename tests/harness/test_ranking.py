"""Ranking that cannot mislead: complete runs under the benchmark's standard protocol ranked by its primary
metric; partial runs and runs of another protocol listed apart, below, and marked (tables, CLI, JSON)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from typer.testing import CliRunner

from flow_opd.cli import app
from harness import tables
from results.store import Store
from tests.support.runs import TASKS, add_standard_run, put


def geneval_store(path: Path | str = ":memory:") -> Store:
    """full: 6 prompts x 4 at the standard protocol (0.5); limit: 1 prompt of 6 (1.0, partial); fast: all 6
    prompts at 5 steps (0.9, another protocol)."""
    s = Store(path)
    groups = [t for t in TASKS for _ in range(4)]
    add_standard_run(s, "full", "geneval", 6, 4)
    put(s, "full", "geneval", "geneval", [1, 0] * 12, groups, per_prompt=4)
    add_standard_run(s, "limit", "geneval", 6, 4)
    put(s, "limit", "geneval", "geneval", [1] * 4, groups[:4], per_prompt=4)
    add_standard_run(s, "fast", "geneval", 6, 4, steps=5)
    put(s, "fast", "geneval", "geneval", [1] * 21 + [0] * 3, groups, per_prompt=4)
    return s


def test_a_partial_run_and_another_protocol_rank_below_the_complete_run() -> None:
    (t,) = tables.benchmark_tables(geneval_store(), "geneval")
    assert [r[0] for r in t.rows] == ["full", "limit", "fast"]  # apart: best first among themselves
    assert t.rank == [1, None, None]
    assert t.status == ["", "partial", "other protocol"]
    assert any("fast: steps 5 (standard 40)" in n for n in t.notes), t.notes
    # asked for: every row ranked together by the metric (still marked)
    (every,) = tables.benchmark_tables(geneval_store(), "geneval", rank_all=True)
    assert [r[0] for r in every.rows] == ["limit", "fast", "full"]
    assert every.rank == [1, 2, 3] and every.status == ["partial", "other protocol", ""]


def cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def test_cli_leaderboard_lists_the_partial_run_apart_in_every_format(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    geneval_store(path)
    text = cli("leaderboard", "--store", str(path), "-b", "geneval").splitlines()
    at = {line.split()[0]: i for i, line in enumerate(text) if line.split()}
    assert at["full"] < at["not"] < at["limit"] < at["fast"], text
    assert text[at["limit"]].endswith("partial") and text[at["fast"]].endswith("other protocol")
    rows = list(csv.DictReader(io.StringIO(
        cli("leaderboard", "--store", str(path), "-b", "geneval", "--format", "csv")
        .split("\n", 1)[1])))  # fmt: skip
    assert [(r["run"], r["rank"], r["status"]) for r in rows] == [
        ("full", "1", "ranked"),
        ("limit", "", "partial"),
        ("fast", "", "other protocol"),
    ]
    (j,) = json.loads(cli("leaderboard", "--store", str(path), "-b", "geneval", "--format", "json"))
    assert j["ranked_by"] == "Overall" and j["rows"][0]["run"] == "full"
    ranked = cli("leaderboard", "--store", str(path), "-b", "geneval", "--rank-all").splitlines()
    first = [line.split()[0] for line in ranked[3:6]]
    assert first == ["limit", "fast", "full"]


def test_every_table_of_a_benchmark_ranks_by_its_primary_metric() -> None:
    # mini_geneval's primary metric is mini_geneval; its mini_quality table used to rank by mini_quality
    s = Store(":memory:")
    groups = [t for t in TASKS for _ in range(4)]
    for run, hit, quality in (("accurate", 1.0, 0.1), ("pretty", 0.0, 0.9)):
        add_standard_run(s, run, "mini_geneval", 6, 4)
        put(s, run, "mini_geneval", "mini_geneval", [hit] * 24, groups, per_prompt=4)
        put(s, run, "mini_geneval", "mini_quality", [quality] * 24, groups, per_prompt=4)
    overall, quality = tables.benchmark_tables(s, "mini_geneval")
    assert [r[0] for r in overall.rows] == ["accurate", "pretty"]
    assert quality.columns[2] == "mini_quality"  # its first column
    assert [r[0] for r in quality.rows] == ["accurate", "pretty"]
    assert quality.ranked_by == "mini_geneval" and quality.status == ["", ""]


def test_a_table_whose_runs_lack_the_primary_metric_ranks_by_its_first_column() -> None:
    s = Store(":memory:")
    for run, v in (("low", 0.2), ("high", 0.8)):
        add_standard_run(s, run, "drawbench", 2, 1)
        put(s, run, "drawbench", "aesthetic", [v, v])  # no deqa (DrawBench's primary) in this store
    (t,) = tables.benchmark_tables(s, "drawbench")
    assert [r[0] for r in t.rows] == ["high", "low"] and t.ranked_by == "aesthetic"
