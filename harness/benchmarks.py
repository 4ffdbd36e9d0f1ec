"""Benchmarks: which prompts, how many images per prompt, which scorers. One dict, ``BENCHMARKS``.

Prompt sets ship in ``harness/prompts/`` with their SOURCE.md attribution. Every prompt gets a stable id
(``<benchmark>/<index>``) and its metadata (GenEval's include/exclude clauses, T2I-CompBench's category), which
is what resume, sharding and the store key on. Bump a benchmark's ``version`` whenever its prompts or images per
prompt change.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flowbase.errors import InputError, MissingError, UnknownNameError
from harness.datasets import DATASETS, data_path, require
from harness.protocol import EvalProtocol

PROMPTS_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class PromptItem:
    """One prompt: stable id, position in its set, text, per-prompt metadata (GenEval's clauses, T2I-CompBench's
    category) and, in training, the task it belongs to (which routes it to its reward or teacher)."""

    id: str
    index: int
    prompt: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    task: str | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    version: str
    sources: tuple[str, ...]  # files under harness/prompts/ (.txt or .jsonl)
    images_per_prompt: int
    scorers: tuple[str, ...]
    description: str
    # Aggregation. None: the score is the mean over all images. A metadata key ("tag", "category"): images are
    # grouped by that key, each group is averaged, and the score is the unweighted mean of the group means
    # (GenEval's official "overall" = mean of the 6 task accuracies). The SQL views in results/ implement this.
    group_by: str | None = None
    # Settings this benchmark needs (the mini world's 32 px images, its batch size); explicit settings win.
    protocol: tuple[tuple[str, Any], ...] = ()
    # "test": a benchmark whose numbers are reported; "validation": training prompts for choosing a checkpoint.
    split: Literal["test", "validation"] = "test"
    # What the benchmark holds out from training. "prompts": no training prompt may equal one of its prompts
    # (``harness.splits`` audits every training run against these); "images": the mini world's prompt space is so
    # small that training shares its prompts by design and only the images (seeds) are new.
    held_out: Literal["prompts", "images"] = "prompts"
    # The scorer whose score ranks runs on this benchmark (its leaderboard and every table of it); empty: the
    # first of ``scorers``.
    primary: str = ""
    # A dataset of ``harness.datasets`` (downloaded by `harness fetch NAME`, not shipped): ``sources`` are then
    # paths under the data folder, and a missing file is a one-line error saying to fetch it.
    fetched: str | None = None

    @property
    def available(self) -> bool:
        """Whether its prompts are on this machine (always, unless fetched and not yet downloaded)."""
        return self.fetched is None or data_path(self.fetched).is_file()

    @property
    def primary_scorer(self) -> str:
        """The scorer that ranks runs on this benchmark (its primary metric)."""
        return self.primary or self.scorers[0]

    @property
    def aggregation(self) -> str:
        """The aggregation rule in words (stored with every run)."""
        if self.group_by is None:
            return "mean over images"
        return f"mean over '{self.group_by}' groups of the mean over their images"


# What every mini-world benchmark asks of the protocol: its 32 px images, 10 steps, batches of 64.
MINI_PROTOCOL = (("height", 32), ("width", 32), ("steps", 10), ("batch_size", 64))

BENCHMARKS: dict[str, Benchmark] = {
    "geneval": Benchmark(
        "geneval",
        "1",
        ("geneval_official/evaluation_metadata.jsonl",),
        4,
        ("geneval",),
        "GenEval, 553 official prompts x 4 images; overall = mean of the 6 task accuracies",
        group_by="tag",
        primary="geneval",
    ),
    "geneval2": Benchmark(
        "geneval2",
        "1",
        ("geneval2/geneval2_data.jsonl",),
        1,
        ("soft_tifa",),
        "GenEval 2, 800 prompts of 3-10 atoms x 1 image (CC BY-NC 4.0, `harness fetch geneval2`); "
        "Soft-TIFA GM by Qwen3-VL-8B, mean over prompts",
        primary="soft_tifa",
        fetched="geneval2",
    ),
    "ocr": Benchmark(
        "ocr",
        "1",
        ("flow_grpo_ocr/test.txt",),
        1,
        ("ocr",),
        "Flow-GRPO text rendering test set, 1018 prompts; 1 - normalised edit distance",
        primary="ocr",
    ),
    "pickscore": Benchmark(
        "pickscore",
        "1",
        ("flow_grpo_pickscore/test.txt",),
        1,
        ("pickscore",),
        "Pick-a-Pic v1 captions (Flow-GRPO test split), 2048 prompts; mean raw PickScore",
        primary="pickscore",
    ),
    "drawbench": Benchmark(
        "drawbench",
        "1",
        ("drawbench/test.txt",),
        1,
        ("deqa", "imagereward", "aesthetic", "unifiedreward", "hps", "pickscore", "judge"),
        "DrawBench image-quality set (200 prompts x 5 lines); mean raw score per scorer",
        primary="deqa",
    ),
    "compbench": Benchmark(
        "compbench",
        "1",
        tuple(
            f"t2i_compbench_val/{c}_val.txt"
            for c in (
                "color",
                "shape",
                "texture",
                "spatial",
                "3d_spatial",
                "non_spatial",
                "numeracy",
                "complex",
            )
        ),
        10,
        ("compbench",),
        "T2I-CompBench val, 8 categories x 300 prompts x 10 images; per-category scores",
        group_by="category",
        primary="compbench",
    ),
    "mini_geneval": Benchmark(
        "mini_geneval",
        "2",
        ("mini/geneval_test.jsonl",),
        4,
        ("mini_geneval", "mini_quality"),
        "mini world, GenEval's six tasks in miniature (6 x 24 prompts x 4, GenEval's 4 images per prompt); "
        "official rules, exact detections",
        group_by="tag",
        protocol=MINI_PROTOCOL,
        held_out="images",
        primary="mini_geneval",
    ),
    "mini_ocr": Benchmark(
        "mini_ocr",
        "3",
        ("mini/ocr_test.jsonl",),
        1,
        ("mini_ocr", "mini_quality"),
        "mini world, glyph text: each of the 18 glyphs on its own, 24 images each; Flow-GRPO's OCR reward on "
        "the glyph reader's text",
        protocol=MINI_PROTOCOL,
        held_out="images",
        primary="mini_ocr",
    ),
    # Validation sets for choosing a checkpoint in training (``run.keep_best``), drawn from the training prompts
    # (never the test ones): not part of any suite or table.
    "mini_geneval_val": Benchmark(
        "mini_geneval_val",
        "1",
        ("mini/geneval_val.jsonl",),
        4,
        ("mini_geneval", "mini_quality"),
        "mini world, validation: 6 x 8 training prompts x 4 (for choosing a checkpoint; test numbers come from "
        "mini_geneval)",
        group_by="tag",
        protocol=MINI_PROTOCOL,
        split="validation",
        held_out="images",
        primary="mini_geneval",
    ),
    "mini_ocr_val": Benchmark(
        "mini_ocr_val",
        "1",
        ("mini/ocr_val.jsonl",),
        1,
        ("mini_ocr", "mini_quality"),
        "mini world, validation: each glyph on 4 lines (for choosing a checkpoint; test numbers come from mini_ocr)",
        protocol=MINI_PROTOCOL,
        split="validation",
        held_out="images",
        primary="mini_ocr",
    ),
    "mini_ocr_strings": Benchmark(
        "mini_ocr_strings",
        "1",
        ("mini/ocr_strings_test.jsonl",),
        1,
        ("mini_ocr", "mini_quality"),
        "mini world, held-out strings of 1-3 glyphs (400 of the 1,283-string test split); each character must "
        "sit in its place; Flow-GRPO's OCR reward on the glyph reader's text",
        protocol=MINI_PROTOCOL,
        held_out="images",
        primary="mini_ocr",
    ),
}

# Named sets of (benchmark, scorers) that `harness eval` runs together. "main" is the paper's main table:
# GenEval, OCR, DeQA (on DrawBench) and PickScore, from which the Avg column is computed.
SUITES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "main": (
        ("geneval", ("geneval",)),
        ("ocr", ("ocr",)),
        ("drawbench", ("deqa",)),
        ("pickscore", ("pickscore",)),
    ),
    "quality": (("drawbench", BENCHMARKS["drawbench"].scorers),),
    "mini": (
        ("mini_geneval", BENCHMARKS["mini_geneval"].scorers),
        ("mini_ocr", BENCHMARKS["mini_ocr"].scorers),
    ),
}


def protocol_defaults(names: list[str]) -> dict[str, Any]:
    """Protocol settings the named benchmarks or suites ask for; an error when they disagree."""
    out: dict[str, Any] = {}
    for name in names:
        benches = [b for b, _ in SUITES[name]] if name in SUITES else [name]
        for b in benches:
            for key, value in get(b).protocol:
                if out.setdefault(key, value) != value:
                    raise InputError(
                        f"benchmarks {', '.join(names)} need different {key} ({out[key]} vs {value}); "
                        "evaluate them in separate runs"
                    )
    return out


def sampling_settings(
    names: list[str],
    *,
    native: Mapping[str, Any] | None = None,
    steps: int | None = None,
    size: int | None = None,
    cfg: float | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Steps, CFG, height, width and eval batch size for ``names``: an option the user gave wins, then what the
    benchmarks' protocol asks for (the mini world: 10 steps, 32 px, batches of 64), then what the model declares
    as its own (``native``: ``flowmodels.models.native_settings``; the mini model: 32 px, 10 steps), then the
    paper's protocol (``EvalProtocol``'s defaults: 40 steps, CFG 4.5, 512 px) with batches of 8."""
    wants = {**(native or {}), **protocol_defaults(names)}
    paper = EvalProtocol()

    def pick(given: Any, key: str, default: Any) -> Any:
        return given if given is not None else wants.get(key, default)

    return {
        "steps": pick(steps, "steps", paper.steps),
        "cfg": pick(cfg, "cfg", paper.cfg),
        "height": pick(size, "height", paper.height),
        "width": pick(size, "width", paper.width),
        "batch_size": pick(batch_size, "batch_size", 8),
    }


@dataclass(frozen=True)
class BenchmarkInfo:
    """One benchmark as ``harness ls benchmarks`` shows it."""

    name: str
    prompts: int
    images_per_prompt: int
    scorers: tuple[str, ...]
    primary: str
    split: str


def primary_metric(bench: Benchmark) -> str:
    """The metric a benchmark's tables rank by, as a user reads it: its primary scorer, and "overall" (the mean of
    the group means) when it groups images (GenEval's tasks, T2I-CompBench's categories)."""
    scorer = bench.primary_scorer
    return f"{scorer} overall" if bench.group_by else scorer


def benchmark_listing() -> list[BenchmarkInfo]:
    """Every benchmark, test sets first then validation sets, each by name."""
    order = sorted(BENCHMARKS.values(), key=lambda b: (b.split != "test", b.name))
    return [
        BenchmarkInfo(
            b.name,
            len(load_benchmark_prompts(b.name))
            if b.available
            else DATASETS[str(b.fetched)].prompts,
            b.images_per_prompt,
            b.scorers,
            primary_metric(b),
            b.split,
        )
        for b in order
    ]


def suite_listing() -> dict[str, list[str]]:
    """Suite name -> ``benchmark (scorers)`` for each of its parts."""
    return {
        name: [f"{b} ({', '.join(s)})" if s != get(b).scorers else b for b, s in parts]
        for name, parts in SUITES.items()
    }


class UnknownBenchmarkError(UnknownNameError):
    """A benchmark name that is not in BENCHMARKS."""


def get(name: str) -> Benchmark:
    """The benchmark called ``name``, or an error with suggestions."""
    if name not in BENCHMARKS:
        hint = difflib.get_close_matches(name, list(BENCHMARKS), n=3)
        maybe = f" (did you mean {', '.join(hint)}?)" if hint else ""
        raise UnknownBenchmarkError(
            f"unknown benchmark {name!r}{maybe}; known: {', '.join(sorted(BENCHMARKS))}"
        )
    return BENCHMARKS[name]


def _category(source: str) -> str:
    return Path(source).name.removesuffix("_val.txt")


def load_benchmark_prompts(name: str) -> list[PromptItem]:
    """All prompts of benchmark ``name``, with ids ``<name>/<index>`` and their metadata."""
    bench = get(name)
    items: list[PromptItem] = []
    for source in bench.sources:
        extra = {"category": _category(source)} if name == "compbench" else {}
        path = require(bench.fetched) if bench.fetched else PROMPTS_DIR / source
        for text, meta in read_prompt_file(path):
            idx = len(items)
            items.append(PromptItem(f"{name}/{idx:05d}", idx, text, {**meta, **extra}))
    return items


def read_prompt_file(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(prompt, metadata) pairs from a .txt (one prompt per line, blank lines skipped) or .jsonl file.

    JSONL lines need a non-empty "prompt" field; everything else on the line is metadata.
    """
    p = Path(path)
    if not p.exists():
        raise MissingError(f"prompt file {p} does not exist")
    if p.is_dir():
        raise InputError(
            f"prompt file {p} is a folder; pass a .txt (one prompt per line) or .jsonl file"
        )
    out: list[tuple[str, dict[str, Any]]] = []
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"prompt file {p} is not UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    except OSError as e:
        raise InputError(f"prompt file {p} cannot be read ({e.strerror})") from None
    if p.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{p}:{n}: not valid JSON ({e.msg})") from None
            prompt = row.pop("prompt", None) if isinstance(row, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise InputError(f'{p}:{n}: every line needs a non-empty "prompt" string')
            out.append((prompt, row))
    else:
        out = [(line.strip(), {}) for line in text.splitlines() if line.strip()]
    if not out:
        raise InputError(f"prompt file {p} holds no prompts")
    return out


def load_prompt_file(
    path: str | Path, *, task: str | None = None, limit: int | None = None
) -> list[PromptItem]:
    """A prompt file (``read_prompt_file``) as PromptItems with ids ``<file stem>/<index>``: a user's prompt file
    for evaluation, or a training set tagged with its ``task`` (the first ``limit`` prompts)."""
    pairs = read_prompt_file(path)[:limit]
    stem = Path(path).stem
    return [PromptItem(f"{stem}/{i:05d}", i, t, m, task) for i, (t, m) in enumerate(pairs)]
