"""Planning an evaluation: which benchmarks and scorers (``BenchmarkPlan``), and which (prompt, image) pairs the
store still lacks for a run and step (``Job``), cut into batches before they are dealt to processes."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import scorers as scorer_registry
from flowbase.errors import InputError, MissingError, UserError
from flowmodels.adapters import resolve_adapter_dir
from flowmodels.models import resolve_model_dir
from harness.benchmarks import (
    BENCHMARKS,
    SUITES,
    PromptItem,
    UnknownBenchmarkError,
    get,
    load_benchmark_prompts,
    load_prompt_file,
)
from harness.protocol import EvalProtocol
from results.store import Store
from scorers.catalog import missing_requirements


@dataclass(frozen=True)
class BenchmarkPlan:
    """One benchmark as this run evaluates it: prompts (after --limit), images per prompt, scorers, aggregation."""

    name: str
    version: str
    items: tuple[PromptItem, ...]
    images_per_prompt: int
    scorers: tuple[str, ...]
    group_by: str | None
    total_prompts: int  # before --limit
    source: str  # "builtin" or the prompt file

    @property
    def aggregation(self) -> str:
        if self.group_by is None:
            return "mean over images"
        return f"mean over '{self.group_by}' groups of the mean over their images"

    def spec(self) -> dict[str, Any]:
        """What the run stores about this benchmark (its part of the protocol)."""
        return {
            "version": self.version,
            "images_per_prompt": self.images_per_prompt,
            "group_by": self.group_by,
            "aggregation": self.aggregation,
            "prompts": self.total_prompts,
            "source": self.source,
            "scorers": list(self.scorers),
        }


@dataclass(frozen=True)
class Job:
    """One image of one prompt, and the scorers it still lacks; ``image`` is (sha256, path) if stored."""

    benchmark: str
    item: PromptItem
    image_index: int
    seed: int
    scorers: tuple[str, ...]
    image: tuple[str, str] | None = None


def scorer_class_version(name: str) -> str | None:
    """The ``version`` a registered scorer class declares (without loading any weights), if it declares one."""

    module, cls = scorer_registry.SCORERS[name].split(":")
    return getattr(getattr(importlib.import_module(module), cls), "version", None)


def check_scorer_names(names: Sequence[str], extra: Sequence[str] = ()) -> None:
    """Raise ``UnknownScorerError`` (with suggestions) for any name that is not a registered scorer."""
    import difflib

    known = set(scorer_registry.SCORERS) | set(extra)
    for name in names:
        if name not in known:
            hint = difflib.get_close_matches(name, sorted(known), n=3)
            maybe = f" (did you mean {', '.join(hint)}?)" if hint else ""
            raise scorer_registry.UnknownScorerError(
                f"unknown scorer {name!r}{maybe}; known: {', '.join(sorted(known)) or '(none registered)'}"
            )


def check_requirements(model: str | None, lora: str | None, scorers: Sequence[str]) -> str | None:
    """Check, before any work, that the model, the LoRA and every scorer's weights (or worker) are here; every
    missing one is listed in one error, each with how to get it. Returns the model's folder (None: no model)."""
    errors: list[UserError] = []
    model_dir = None
    for what, resolve in ((model, resolve_model_dir), (lora, resolve_adapter_dir)):
        if what is None:
            continue
        try:
            found = str(resolve(what))
        except UserError as e:
            errors.append(e)
            continue
        if resolve is resolve_model_dir:
            model_dir = found
    lines = [str(e) for e in errors] + missing_requirements(scorers)
    if len(lines) == 1 and errors:
        raise errors[0]  # one missing thing keeps its own error type
    if lines:
        raise MissingError(
            "\n".join([f"{len(lines)} things this evaluation needs are not here", *lines])
            if len(lines) > 1
            else lines[0]
        )
    return model_dir


def plan_benchmarks(
    benchmarks: Sequence[str] = ("main",),
    *,
    prompts: str | Path | None = None,
    scorers: Sequence[str] | None = None,
    images_per_prompt: int | None = None,
    limit: int | None = None,
) -> list[BenchmarkPlan]:
    """Resolve benchmark and suite names (and a user prompt file) into plans; unknown names raise with hints."""
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be >= 1, got {limit}")
    wanted: dict[str, list[str]] = {}
    for name in benchmarks:
        if name in SUITES:
            for bench, names in SUITES[name]:
                wanted.setdefault(bench, [])
                wanted[bench] += [s for s in names if s not in wanted[bench]]
        else:
            if name not in BENCHMARKS:
                _unknown_benchmark(name)
            wanted.setdefault(name, [])
            wanted[name] += [s for s in BENCHMARKS[name].scorers if s not in wanted[name]]
    plans = []
    for name, names in wanted.items():
        bench = get(name)
        items = load_benchmark_prompts(name)
        plans.append(
            BenchmarkPlan(
                name=name,
                version=bench.version,
                items=tuple(items[:limit]),
                images_per_prompt=images_per_prompt or bench.images_per_prompt,
                scorers=tuple(scorers) if scorers else tuple(names),
                group_by=bench.group_by,
                total_prompts=len(items),
                source="builtin",
            )
        )
    if prompts is not None:
        path = Path(prompts)
        if not scorers:
            raise InputError(
                "a --prompts file needs --scorers NAME[,NAME] (which metrics to compute)"
            )
        items = load_prompt_file(path)
        name = path.stem
        if name in BENCHMARKS or name in SUITES or name in wanted:
            raise InputError(
                f"prompt file {path.name} would be stored as benchmark {name!r}, which is a built-in name; "
                "rename the file"
            )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        plans.append(
            BenchmarkPlan(
                name=name,
                version=f"file-{digest}",
                items=tuple(items[:limit]),
                images_per_prompt=images_per_prompt or 1,
                scorers=tuple(scorers),
                group_by=None,
                total_prompts=len(items),
                source=str(path),
            )
        )
    if not plans:
        raise InputError("nothing to evaluate: give --benchmark NAME or --prompts FILE")
    return plans


def _unknown_benchmark(name: str) -> None:
    import difflib

    known = sorted([*BENCHMARKS, *SUITES])
    hint = difflib.get_close_matches(name, known, n=3)
    maybe = f" (did you mean {', '.join(hint)}?)" if hint else ""
    raise UnknownBenchmarkError(f"unknown benchmark {name!r}{maybe}; known: {', '.join(known)}")


def plan_jobs(
    store: Store,
    run_id: str,
    step: int,
    plans: Sequence[BenchmarkPlan],
    protocol: EvalProtocol,
    versions: Mapping[str, str | None],
) -> tuple[list[Job], int]:
    """The images and scores still missing for a run and step; also the number of images already complete."""
    jobs: list[Job] = []
    complete = 0
    for plan in plans:
        samples, scores = store.existing(run_id, step, plan.name)
        stale = {s["benchmark_version"] for s in samples} - {plan.version}
        if stale:
            raise InputError(
                f"run {run_id!r} holds {plan.name} images of benchmark version {sorted(stale)}, the installed "
                f"benchmark is version {plan.version}; pass another --run"
            )
        have_img = {(s["prompt_id"], s["image_index"]): s for s in samples}
        have_score: dict[tuple[str, int], set[str]] = {}
        for c in scores:
            want_v = versions.get(c["scorer"])
            if c["scorer"] in plan.scorers and want_v is not None and c["scorer_version"] != want_v:
                raise InputError(
                    f"run {run_id!r} holds {plan.name} scores of scorer {c['scorer']} version "
                    f"{c['scorer_version']}; the installed scorer is version {want_v}. Pass another --run"
                )
            have_score.setdefault((c["prompt_id"], c["image_index"]), set()).add(c["scorer"])
        k = plan.images_per_prompt
        for item in plan.items:
            for j in range(k):
                seed = protocol.seed_for(item.index, j, k)
                sample = have_img.get((item.id, j))
                done = have_score.get((item.id, j), set())
                missing = tuple(s for s in plan.scorers if s not in done)
                if sample is None:
                    jobs.append(Job(plan.name, item, j, seed, plan.scorers))
                elif missing:
                    if sample["seed"] != seed:
                        raise ValueError(f"stored seed of {item.id} image {j} is not {seed}")
                    img = (sample["image_sha256"], sample["image_path"])
                    jobs.append(Job(plan.name, item, j, seed, missing, img))
                else:
                    complete += 1
    return jobs, complete


def make_batches(jobs: Sequence[Job], batch_size: int) -> list[list[Job]]:
    """Consecutive jobs of the same kind (benchmark, needs an image, scorers) in chunks of ``batch_size``."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    batches: list[list[Job]] = []
    key = None
    for job in jobs:
        k = (job.benchmark, job.image is None, job.scorers)
        if k != key or len(batches[-1]) >= batch_size:
            batches.append([])
            key = k
        batches[-1].append(job)
    return batches
