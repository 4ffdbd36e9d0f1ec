"""GenEval 2's data (fetched from its pinned commit, checksum checked, never shipped) and its analysis tables
(per skill AM, per atomicity GM) against the official analysis written out here."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from flowbase.errors import InputError, MissingError
from harness import datasets
from harness.benchmarks import benchmark_listing, load_benchmark_prompts
from harness.geneval2 import summarise

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "support" / "data"
FIXTURE = FIXTURE_DIR / "geneval2" / "geneval2_data.jsonl"


def test_the_pinned_file_is_the_one_with_800_prompts() -> None:
    spec = datasets.DATASETS["geneval2"]
    assert datasets.GENEVAL2_COMMIT in spec.url and spec.prompts == 800
    assert len(spec.sha256) == 64 and "CC BY-NC 4.0" in spec.licence


def test_missing_data_is_one_line_naming_the_fetch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLOW_OPD_DATA", str(tmp_path))
    with pytest.raises(MissingError, match=r"run `harness fetch geneval2`") as e:
        load_benchmark_prompts("geneval2")
    assert "\n" not in str(e.value)
    listed = {b.name: b for b in benchmark_listing()}
    assert listed["geneval2"].prompts == 800 and listed["geneval2"].primary == "soft_tifa"


def test_fixture_stands_in_for_the_fetched_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_OPD_DATA", str(FIXTURE_DIR))
    items = load_benchmark_prompts("geneval2")
    assert len(items) == 16 and items[0].id == "geneval2/00000"
    assert [it.meta["atom_count"] for it in items[:8]] == list(range(3, 11))
    assert all(len(it.meta["vqa_list"]) == len(it.meta["skills"]) for it in items)


def test_fetch_checks_the_checksum_and_leaves_nothing_when_it_differs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLOW_OPD_DATA", str(tmp_path / "data"))
    good = replace(
        datasets.DATASETS["geneval2"],
        url=FIXTURE.as_uri(),
        sha256=hashlib.sha256(FIXTURE.read_bytes()).hexdigest(),
    )
    monkeypatch.setitem(datasets.DATASETS, "geneval2", replace(good, sha256="0" * 64))
    with pytest.raises(InputError, match="sha256"):
        datasets.fetch_data("geneval2")
    assert not (tmp_path / "data").exists()
    monkeypatch.setitem(datasets.DATASETS, "geneval2", good)
    path = datasets.fetch_data("geneval2")
    assert path.read_bytes() == FIXTURE.read_bytes()
    assert len(load_benchmark_prompts("geneval2")) == 16
    assert [p.name for p in path.parent.iterdir()] == ["geneval2_data.jsonl"]


def test_fetch_without_network_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLOW_OPD_DATA", str(tmp_path))
    bad = replace(datasets.DATASETS["geneval2"], url=(tmp_path / "absent.jsonl").as_uri())
    monkeypatch.setitem(datasets.DATASETS, "geneval2", bad)
    with pytest.raises(datasets.DataUnavailableError, match="cannot download geneval2"):
        datasets.fetch_data("geneval2")
    assert list(tmp_path.iterdir()) == []


def test_analysis_is_the_official_per_skill_am_and_per_atomicity_gm() -> None:
    data = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    scores = [
        [(7 * i + j) % 10 / 10 + 0.05 for j in range(len(r["vqa_list"]))]
        for i, r in enumerate(data)
    ]
    rows = [
        {
            "scorer": "soft_tifa",
            "meta": json.dumps({k: v for k, v in r.items() if k != "prompt"}),
            "details": json.dumps({"scores": s}),
        }
        for r, s in zip(data, scores, strict=True)
    ] + [{"scorer": "other", "meta": "{}", "details": "{}"}]
    got = summarise(rows)
    # soft_tifa_analysis.py, written out: skill sums over counts; atom count -> mean of gmeans
    for skill in ("object", "attribute", "count", "position", "verb"):
        mine = [
            x
            for r, s in zip(data, scores, strict=True)
            for k, x in zip(r["skills"], s, strict=True)
            if k == skill
        ]
        assert got.skills[skill] == pytest.approx(100 * sum(mine) / len(mine))
    gms = [math.prod(s) ** (1 / len(s)) for s in scores]
    for atoms in range(3, 11):
        mine = [g for r, g in zip(data, gms, strict=True) if r["atom_count"] == atoms]
        assert got.atoms[atoms] == pytest.approx(100 * sum(mine) / len(mine))
    assert got.gm == pytest.approx(100 * sum(gms) / len(gms))
    assert got.am == pytest.approx(100 * sum(sum(s) / len(s) for s in scores) / len(scores))
