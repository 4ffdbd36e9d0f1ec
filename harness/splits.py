"""The split audit: which training prompts are also evaluation prompts.

A number on a benchmark means something only if the model never trained on the benchmark's prompts. Every training
recipe audits its prompt pools here before any work: a training prompt that equals an evaluation prompt of an audited
benchmark (every benchmark with ``split="test"`` and ``held_out="prompts"``: GenEval, OCR, PickScore, DrawBench,
T2I-CompBench) is an overlap, and the recipe refuses to start unless ``data.allow_eval_prompts`` says otherwise, in
which case its manifest says so and every table that shows the model marks it.

Prompts are compared after ``normalise`` (case folded, runs of whitespace made one space), so "A cat." and "a  cat."
are the same prompt, while "a photo of a cat" and "a cat" are not (Flow-GRPO's own filter compares exact strings;
this one catches at least what it catches).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from harness.benchmarks import BENCHMARKS, load_benchmark_prompts


def normalise(prompt: str) -> str:
    """The form prompts are compared in: case folded, whitespace collapsed, stripped."""
    return " ".join(prompt.casefold().split())


def audited_benchmarks() -> tuple[str, ...]:
    """The benchmarks whose prompts no training run may use: test splits that hold out prompts (a fetched one
    once its data is on this machine)."""
    return tuple(
        sorted(
            name
            for name, b in BENCHMARKS.items()
            if b.split == "test" and b.held_out == "prompts" and b.available
        )
    )


@functools.cache
def evaluation_index(names: tuple[str, ...] | None = None) -> dict[str, tuple[str, ...]]:
    """``{normalised prompt: benchmarks holding it}`` over ``names`` (default: ``audited_benchmarks()``)."""
    index: dict[str, set[str]] = {}
    for name in names if names is not None else audited_benchmarks():
        for item in load_benchmark_prompts(name):
            index.setdefault(normalise(item.prompt), set()).add(name)
    return {p: tuple(sorted(b)) for p, b in index.items()}


class Overlap(NamedTuple):
    """One training pool's prompts that are evaluation prompts."""

    task: str
    total: int  # prompts in the pool (lines)
    lines: int  # of them, lines whose prompt is an evaluation prompt
    by_benchmark: dict[str, int]  # benchmark -> overlapping lines
    examples: tuple[str, ...]  # up to three overlapping prompts, as written in the pool

    def describe(self) -> str:
        """One line: how many, where, an example."""
        where = ", ".join(f"{b} {n}" for b, n in sorted(self.by_benchmark.items()))
        eg = f'; e.g. "{self.examples[0]}"' if self.examples else ""
        return f"{self.task}: {self.lines} of {self.total} training prompts are evaluation prompts ({where}){eg}"


def overlap(task: str, prompts: Iterable[str], names: tuple[str, ...] | None = None) -> Overlap:
    """How many of ``prompts`` (one training pool) occur in the evaluation benchmarks ``names``."""
    index = evaluation_index(names)
    total = hits = 0
    by: dict[str, int] = {}
    examples: list[str] = []
    for prompt in prompts:
        total += 1
        found = index.get(normalise(prompt))
        if not found:
            continue
        hits += 1
        for b in found:
            by[b] = by.get(b, 0) + 1
        if len(examples) < 3:
            examples.append(prompt)
    return Overlap(task, total, hits, by, tuple(examples))


def is_evaluation_prompt(prompt: str, names: tuple[str, ...] | None = None) -> bool:
    """Whether ``prompt`` equals (after ``normalise``) a prompt of the benchmarks ``names``."""
    return normalise(prompt) in evaluation_index(names)


# -- what a trained model's run folder says ------------------------------------------------------------------------
def recorded_contamination(source: str | Path | None) -> list[str]:
    """Why the model or adapter at ``source`` counts as trained on evaluation prompts, as its run's manifest says
    (``manifest.json`` in the folder or its parent: a run folder, its ``lora/`` or ``merged/``). [] when clean or
    unknown (a hub id, a folder without our manifest)."""
    if source is None:
        return []
    folder = Path(source)
    for candidate in (folder, folder.parent):
        path = candidate / "manifest.json"
        if folder.exists() and path.is_file():
            try:
                manifest = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                return []
            reasons = manifest.get("contaminated") or []
            return [str(r) for r in reasons] if isinstance(reasons, list) else [str(reasons)]
    return []
