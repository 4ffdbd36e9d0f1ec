"""Training prompt sets: recorded checksums, GenEval's format and task mix, no evaluation prompt, OCR texts, CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness import splits, trainsets
from harness.benchmarks import PROMPTS_DIR, load_benchmark_prompts

PROJECT = Path(__file__).resolve().parents[2]
NAMES = tuple(trainsets.TRAINSETS)

# GenEval's generator (djghosh13/geneval prompts/create_prompts.py), restated here to check against
COLORS = {"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"}
RELATIONS = {"left of", "right of", "above", "below"}
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}
WEIGHTS = {"position": 0.7, "color_attr": 0.3, "colors": 0.1, "counting": 0.5, "two_object": 0.1}


def norm(prompt: str) -> str:
    """The test's own comparison form: lower case, single spaces."""
    return " ".join(prompt.lower().split())


@pytest.fixture(scope="session")
def sets() -> dict[str, trainsets.Built]:
    return {name: trainsets.built(name) for name in NAMES}


@pytest.fixture(scope="session")
def eval_prompts() -> set[str]:
    return {norm(p.prompt) for b in splits.audited_benchmarks() for p in load_benchmark_prompts(b)}


@pytest.fixture(scope="session")
def classes() -> list[str]:
    text = (PROMPTS_DIR / "geneval_official" / "object_names.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def file_bytes(built: trainsets.Built) -> bytes:
    return "".join(f"{line}\n" for line in built.lines).encode()


def article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def expected_prompt(record: dict[str, Any]) -> str:
    """What GenEval's generator writes for a record, re-derived from its include clauses."""
    inc, tag = record["include"], record["tag"]
    if tag == "single_object":
        return f"a photo of {article(inc[0]['class'])}"
    if tag == "counting":
        name = inc[0]["class"]
        return (
            f"a photo of {NUMBER_WORDS[inc[0]['count']]} {name}{'es' if name[-1] == 's' else 's'}"
        )
    if tag == "colors":
        return f"a photo of {article(inc[0]['color'])} {inc[0]['class']}"
    if tag == "position":
        rel = inc[1]["position"][0]
        return f"a photo of {article(inc[1]['class'])} {rel} {article(inc[0]['class'])}"
    if tag == "two_object":
        return f"a photo of {article(inc[0]['class'])} and {article(inc[1]['class'])}"
    assert tag == "color_attr"
    a, b = inc
    return f"a photo of {article(a['color'])} {a['class']} and {article(b['color'])} {b['class']}"


# ------------------------------------------------------------------------------------------------ all sets


@pytest.mark.parametrize("name", NAMES)
def test_builds_to_recorded_checksum_and_lines(sets: dict[str, trainsets.Built], name: str) -> None:
    ts = trainsets.TRAINSETS[name]
    data = file_bytes(sets[name])
    assert hashlib.sha256(data).hexdigest() == ts.sha256
    assert data.count(b"\n") == len(sets[name].lines) == ts.lines
    assert all(line and "\n" not in line for line in sets[name].lines)


@pytest.mark.parametrize("name", NAMES)
def test_building_twice_gives_identical_bytes(sets: dict[str, trainsets.Built], name: str) -> None:
    assert trainsets.render(name) == file_bytes(sets[name])


@pytest.mark.parametrize("name", NAMES)
def test_no_line_is_an_evaluation_prompt(
    sets: dict[str, trainsets.Built], eval_prompts: set[str], name: str
) -> None:
    prompts = [
        json.loads(line)["prompt"] if name == "geneval_train" else line for line in sets[name].lines
    ]
    assert not [p for p in prompts if norm(p) in eval_prompts]
    assert not [p for p in prompts if splits.is_evaluation_prompt(p)]


# ------------------------------------------------------------------------------------------------ GenEval


def test_geneval_allocation_is_largest_remainder() -> None:
    assert trainsets.allocate(trainsets.GENEVAL_WEIGHTS, 50_000) == {
        "position": 20_588,
        "color_attr": 8_824,
        "colors": 2_941,
        "counting": 14_706,
        "two_object": 2_941,
    }


def test_geneval_task_shares_before_filtering(sets: dict[str, trainsets.Built]) -> None:
    stats = sets["geneval_train"].stats
    sampled, removed = stats["sampled"], stats["removed"]
    assert sum(sampled.values()) == 50_000
    total_weight = sum(WEIGHTS.values())
    for tag, weight in WEIGHTS.items():
        assert abs(100 * sampled[tag] / 50_000 - 100 * weight / total_weight) < 0.5, tag
    # the lines left per tag are exactly what was sampled less what the filter removed
    kept = Counter(json.loads(line)["tag"] for line in sets["geneval_train"].lines)
    assert kept == {tag: sampled[tag] - removed[tag] for tag in WEIGHTS}
    assert "single_object" not in kept
    # counting (240 possible prompts) and colors (790) are drawn with replacement; the others are not
    assert stats["pool"]["counting"] == 240 and stats["pool"]["colors"] == 790
    assert stats["pool"]["position"] >= sampled["position"]


def test_geneval_test_prompt_generator_matches_the_official_metadata() -> None:
    """The prompt rules this test checks with reproduce all 553 official prompts, in the official byte format."""
    path = PROMPTS_DIR / "geneval_official" / "evaluation_metadata.jsonl"
    for line in path.read_text().splitlines():
        record = json.loads(line)
        assert expected_prompt(record) == record["prompt"]
        assert json.dumps(record) == line
        if record["tag"] != "single_object":  # weight 0: the module writes none
            assert trainsets.geneval_prompt(record["tag"], record["include"]) == record["prompt"]


def test_geneval_lines_are_official_metadata(
    sets: dict[str, trainsets.Built], classes: list[str]
) -> None:
    official = PROMPTS_DIR / "geneval_official" / "evaluation_metadata.jsonl"
    layout = {}  # tag -> (record keys, include keys per clause) as GenEval writes them
    for line in official.read_text().splitlines():
        r = json.loads(line)
        layout[r["tag"]] = (list(r), [list(c) for c in r["include"]])
    for line in sets["geneval_train"].lines:
        r = json.loads(line)
        tag, inc = r["tag"], r["include"]
        assert json.dumps(r) == line
        assert (list(r), [list(c) for c in inc]) == layout[tag], line
        assert all(c["class"] in classes for c in inc)
        assert r["prompt"] == expected_prompt(r), line
        if tag == "counting":
            assert inc[0]["count"] in NUMBER_WORDS
            assert r["exclude"] == [{"class": inc[0]["class"], "count": inc[0]["count"] + 1}]
            assert NUMBER_WORDS[inc[0]["count"]] in r["prompt"]
        else:
            assert all(c["count"] == 1 for c in inc)
        if tag in ("colors", "color_attr"):
            assert all(c["color"] in COLORS and c["class"] != "person" for c in inc)
            assert all(f"{c['color']} {c['class']}" in r["prompt"] for c in inc)
        if tag == "color_attr":
            assert inc[0]["color"] != inc[1]["color"]
        if tag in ("position", "two_object", "color_attr"):
            assert inc[0]["class"] != inc[1]["class"]
        if tag == "position":
            assert inc[1]["position"][0] in RELATIONS and inc[1]["position"][1] == 0


def test_geneval_swapped_order_variants_of_test_prompts_are_removed(
    sets: dict[str, trainsets.Built], eval_prompts: set[str]
) -> None:
    for line in sets["geneval_train"].lines:
        r = json.loads(line)
        if r["tag"] in ("two_object", "color_attr"):
            swapped = expected_prompt({**r, "include": r["include"][::-1]})
            assert norm(swapped) not in eval_prompts, line


# ------------------------------------------------------------------------------------------------ OCR


def test_ocr_prompts_hold_one_new_quoted_text(sets: dict[str, trainsets.Built]) -> None:
    lines = sets["ocr_train"].lines
    test_texts = {norm(p.prompt.split('"')[1]) for p in load_benchmark_prompts("ocr")}
    assert len(set(lines)) == len(lines) == 20_000
    texts = []
    for line in lines:
        assert line.count('"') == 2, line
        before, text, after = line.split('"')
        assert before and after and text.strip() == text
        assert 1 <= len(text.split()) <= 5, line
        assert norm(text) not in test_texts, line
        texts.append(norm(text))
    # varied: thousands of different texts, none dominating
    counts = Counter(texts)
    assert len(counts) > 5_000
    assert counts.most_common(1)[0][1] <= trainsets.OCR_MAX_REPEATS


# ------------------------------------------------------------------------------------------------ PickScore


def test_pickscore_keeps_the_source_order_less_evaluation_prompts(
    sets: dict[str, trainsets.Built], eval_prompts: set[str]
) -> None:
    source = (PROMPTS_DIR / "flow_grpo_pickscore" / "train.txt").read_text().splitlines()
    expected = [line for line in source if line.strip() and norm(line) not in eval_prompts]
    assert sets["pickscore_train"].lines == expected
    assert len(source) - len(expected) == 7


# ------------------------------------------------------------------------------------------------ files


def test_ensure_builds_then_detects_a_changed_byte(
    sets: dict[str, trainsets.Built], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainsets, "ROOT", tmp_path)
    ts = trainsets.TRAINSETS["pickscore_train"]
    path = trainsets.ensure("pickscore_train")  # not there yet: built
    assert path == tmp_path / ts.path
    assert path.read_bytes() == file_bytes(sets["pickscore_train"])
    assert [p.name for p in path.parent.iterdir()] == ["train.txt"]  # no temporary file left
    assert trainsets.ensure("pickscore_train") == path

    # a copy of the geneval set with one byte changed
    good = file_bytes(sets["geneval_train"])
    target = tmp_path / trainsets.TRAINSETS["geneval_train"].path
    target.parent.mkdir(parents=True)
    target.write_bytes(good)
    assert trainsets.ensure("geneval_train") == target
    bad = bytearray(good)
    bad[1000] = ord("X") if bad[1000] != ord("X") else ord("Y")
    target.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="build geneval_train") as err:
        trainsets.ensure("geneval_train")
    assert str(target) in str(err.value) and "\n" not in str(err.value)


def test_find_maps_paths_to_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ts = trainsets.TRAINSETS["geneval_train"]
    assert trainsets.find("harness/prompts/geneval_train/train_metadata.jsonl") is ts
    assert (
        trainsets.find(PROMPTS_DIR / "ocr_train" / "train.txt") is trainsets.TRAINSETS["ocr_train"]
    )
    assert trainsets.find("harness/prompts/flow_grpo_pickscore/train.txt") is None
    monkeypatch.setattr(trainsets, "ROOT", tmp_path)
    assert (
        trainsets.find(tmp_path / "pickscore_train" / "train.txt")
        is trainsets.TRAINSETS["pickscore_train"]
    )


# ------------------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize("command", ["check", "list"])
def test_cli_runs(command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.trainsets", command],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert len(out) == len(NAMES) and all(name in done.stdout for name in NAMES)
    if command == "check":
        assert all(": ok (" in line for line in out)
