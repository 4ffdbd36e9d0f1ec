"""``evaluate``: a model -> benchmark images -> scores -> rows in the results store, resumable and shardable.

The one function behind ``harness eval`` and the trainer's in-loop evaluation (a recipe passes its loaded
``FlowModel``, its run id and the step). The pipeline, per batch of images:

1. **plan** (rank 0): for each benchmark, the (prompt, image) pairs and the scorers the store does not hold yet
   for this run and step; a sample that exists but lacks a scorer is re-scored from its stored PNG;
2. **generate**: ``rollout`` with the protocol's ODE settings, image ``j`` of prompt ``i`` seeded
   ``seed + i*K + j``; each image is written to the store's images folder under its sha256;
3. **score**: every scorer reads the stored PNG through the protocol's image encoding;
4. **store** (rank 0): the batch's samples and scores in one transaction.

Killed at any point and started again, it redoes only batches whose transaction never committed (existing keys
are never written twice). With several processes (``accelerate launch`` or ``torchrun``), the planned batches are
dealt round-robin to the ranks; batches are formed before they are dealt, so every image is made in the same batch
as in a one-process run and the rows are the same. Rank 0 alone opens the store; the images folder must be on a
filesystem every rank can see.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import os
import platform
import re
import sys
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flowbase.code import git_dirty, git_sha
from flowbase.errors import InputError, UserError
from flowmodels.images import to_pil
from harness.benchmarks import (
    BENCHMARKS,
    SUITES,
    PromptItem,
    get,
    load_benchmark_prompts,
    load_prompt_file,
)
from harness.protocol import PROTOCOL_VERSION, EvalProtocol, encode_png, scorer_input
from results.store import (
    DEFAULT_STORE,
    RunRecord,
    SampleRow,
    ScoreRow,
    Store,
    StoreError,
    read_image_file,
    write_image_file,
)

log = logging.getLogger(__name__)


class ScorerOutputError(ValueError):
    """A scorer returned something the store cannot hold honestly (wrong length, NaN, ...)."""


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


@dataclass
class EvalResult:
    """What one ``evaluate`` call did."""

    run_id: str
    step: int
    store: str
    benchmarks: list[str]
    world_size: int
    images_generated: int = 0
    images_rescored: int = 0
    scores_added: int = 0
    images_skipped: int = 0
    timings: dict[str, float] = field(
        default_factory=dict
    )  # seconds: generate, score, store, total


# --- planning ---------------------------------------------------------------------------------------


def scorer_class_version(name: str) -> str | None:
    """The ``version`` a registered scorer class declares (without loading any weights), if it declares one."""
    import scorers

    module, cls = scorers.SCORERS[name].split(":")
    return getattr(getattr(importlib.import_module(module), cls), "version", None)


def check_scorer_names(names: Sequence[str], extra: Sequence[str] = ()) -> None:
    """Raise ``UnknownScorerError`` (with suggestions) for any name that is not a registered scorer."""
    import difflib

    import scorers

    known = set(scorers.SCORERS) | set(extra)
    for name in names:
        if name not in known:
            hint = difflib.get_close_matches(name, sorted(known), n=3)
            maybe = f" (did you mean {', '.join(hint)}?)" if hint else ""
            raise scorers.UnknownScorerError(
                f"unknown scorer {name!r}{maybe}; known: {', '.join(sorted(known)) or '(none registered)'}"
            )


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

    from harness.benchmarks import UnknownBenchmarkError

    known = sorted([*BENCHMARKS, *SUITES])
    hint = difflib.get_close_matches(name, known, n=3)
    maybe = f" (did you mean {', '.join(hint)}?)" if hint else ""
    raise UnknownBenchmarkError(f"unknown benchmark {name!r}{maybe}; known: {', '.join(known)}")


def default_run_id(model: str, lora: str | None, protocol: EvalProtocol) -> str:
    """A readable, stable run id: ``<model>[-<lora>]-<hash>``; the same command resumes the same run."""

    def slug(s: str) -> str:
        tail = Path(s.rstrip("/")).name or s
        return re.sub(r"[^a-z0-9]+", "-", tail.lower()).strip("-")[:40] or "model"

    key = f"{model}|{lora or ''}|{protocol.fingerprint()}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:6]
    return "-".join([slug(model), *([slug(lora)] if lora else []), digest])


def provenance(
    *,
    world_size: int,
    device: str,
    dtype: str,
    protocol: EvalProtocol,
    scorer_versions: Mapping[str, Any],
) -> dict[str, Any]:
    """Where a run's numbers came from: code (git sha), packages, machine, world size, seeds, scorer versions."""
    from importlib import metadata

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {
        "git_sha": git_sha(),
        "git_dirty": git_dirty(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {
            p: version(p)
            for p in (
                "flow-opd",
                "torch",
                "diffusers",
                "transformers",
                "peft",
                "accelerate",
                "duckdb",
            )
        },
        "scorer_versions": dict(scorer_versions),
        "world_size": world_size,
        "device": device,
        "dtype": dtype,
        "seeds": {
            "seed": protocol.seed,
            "rule": "seed + prompt_index * images_per_prompt + image_index",
        },
    }


def source_contamination(*sources: str | Path | None) -> list[str]:
    """Why the weights behind ``sources`` (the model as given, the folder it resolved to, the LoRA) count as
    trained on evaluation prompts, as their run manifests say (``harness.splits.recorded_contamination``: a run
    folder, its ``lora/`` or ``merged/``); each reason once, in order. [] for hub ids and folders without one."""
    from harness.splits import recorded_contamination as of_folder

    reasons: list[str] = []
    for source in sources:
        if source is None or not Path(source).exists():
            continue
        reasons += [r for r in of_folder(source) if r not in reasons]
    return reasons


def _check_run(
    run: RunRecord, model: str, lora: str | None, want: dict[str, Any]
) -> dict[str, Any] | None:
    """Compare a stored run with this call; returns the merged protocol if benchmarks or scorers were added."""
    run_id = run.run_id
    if (run.model, run.lora) != (model, lora):
        raise InputError(
            f"run {run_id!r} was made with model {run.model!r} lora {run.lora!r}, not {model!r} lora {lora!r}; "
            "pass another --run"
        )
    have = run.protocol
    diff = {
        k: (have["generation"].get(k), v)
        for k, v in want["generation"].items()
        if have["generation"].get(k) != v
    }
    if diff:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise InputError(f"run {run_id!r} used another protocol ({shown}); pass another --run")
    merged = {**have, "benchmarks": dict(have.get("benchmarks", {}))}
    changed = False
    for name, spec in want["benchmarks"].items():
        old = merged["benchmarks"].get(name)
        if old is None:
            merged["benchmarks"][name] = spec
            changed = True
            continue
        for k in ("version", "images_per_prompt", "group_by"):
            if old.get(k) != spec[k]:
                raise InputError(
                    f"run {run_id!r} holds {name} with {k}={old.get(k)!r}, this call has {spec[k]!r}; "
                    "pass another --run"
                )
        extra = [s for s in spec["scorers"] if s not in old["scorers"]]
        if extra:
            merged["benchmarks"][name] = {**old, "scorers": [*old["scorers"], *extra]}
            changed = True
    return merged if changed else None


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


# --- distributed glue -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    rank: int
    world: int
    device: str | None


def _dist() -> _Dist:
    """This process's rank and world size (accelerate's state when launched with several processes)."""
    initialised = False
    if "torch" in sys.modules:
        import torch.distributed as tdist

        initialised = tdist.is_available() and tdist.is_initialized()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not initialised:
        return _Dist(0, 1, None)
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    device = "cpu" if state.device.type == "cpu" else str(state.device)
    return _Dist(state.process_index, state.num_processes, device)


def shutdown_distributed() -> None:
    """End the process group a multi-process command started (after every rank got here).

    Call it once at the end of a command, on success. Without it gloo's threads can outlive the interpreter and
    abort the process at exit ("terminate called without an active exception", pytorch/pytorch#190489).
    """
    if "torch" not in sys.modules:
        return
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def _broadcast(obj: Any, dist: _Dist) -> Any:
    if dist.world == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _gather(obj: Any, dist: _Dist) -> list[Any]:
    if dist.world == 1:
        return [obj]
    from accelerate.utils import gather_object

    return list(gather_object([obj]))


# --- the work ---------------------------------------------------------------------------------------


class _Worker:
    """Per-process state: the model and scorers, loaded on first use."""

    def __init__(
        self,
        model: Any,
        lora: str | None,
        protocol: EvalProtocol,
        plans: Mapping[str, BenchmarkPlan],
        images_dir: Path,
        versions: Mapping[str, str | None],
        scorer_objects: Mapping[str, Any],
        run_id: str,
        step: int,
        batch_size: int,
        device: str,
        dtype: str,
    ) -> None:
        self.model = model
        self.lora = lora
        self.protocol = protocol
        self.plans = plans
        self.images_dir = images_dir
        self.versions = versions
        self.scorers: dict[str, Any] = dict(scorer_objects)
        self.run_id = run_id
        self.step = step
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype

    def flow_model(self) -> Any:
        if isinstance(self.model, str):
            from harness.generate import GenerateSettings, load_generation_model

            p = self.protocol
            settings = GenerateSettings(
                model=self.model,
                lora=self.lora,
                steps=p.steps,
                cfg=p.cfg,
                height=p.height,
                width=p.width,
                seed=p.seed,
                negative_prompt=p.negative_prompt,
                t5_length=p.t5_length,
                noise_level=p.noise_level,
                batch_size=self.batch_size,
                device=self.device,
                dtype=self.dtype,
            )
            self.model = load_generation_model(settings)
        return self.model

    def scorer(self, name: str) -> Any:
        if name not in self.scorers:
            import scorers

            obj = scorers.load(name)
            want = self.versions.get(name)
            if want is not None and getattr(obj, "version", want) != want:
                raise ScorerOutputError(
                    f"scorer {name} loaded as version {obj.version}, planned as {want}"
                )
            self.scorers[name] = obj
        return self.scorers[name]

    def run(self, batch: list[Job]) -> tuple[list[SampleRow], list[ScoreRow], dict[str, float]]:
        """Generate (if needed) and score one batch; images go to disk, rows are returned."""
        from flowmodels.sampling import rollout

        plan = self.plans[batch[0].benchmark]
        t0 = time.perf_counter()
        samples: list[SampleRow] = []
        enc = self.protocol.image_encoding
        if batch[0].image is None:
            p = self.protocol
            ro = rollout(
                self.flow_model(),
                [j.item.prompt for j in batch],
                [j.seed for j in batch],
                steps=p.steps,
                cfg=p.cfg,
                noise_level=p.noise_level,
                height=p.height,
                width=p.width,
                negative_prompt=p.negative_prompt,
            )

            t1 = time.perf_counter()
            # PNG encoding and decoding release the GIL: one thread per image keeps them off the critical path
            stored = _parallel(lambda im: _store_png(self.images_dir, im, enc), to_pil(ro.images))
            for job, (sha, rel, _) in zip(batch, stored, strict=True):
                samples.append(
                    SampleRow(
                        run_id=self.run_id,
                        step=self.step,
                        benchmark=plan.name,
                        benchmark_version=plan.version,
                        prompt_id=job.item.id,
                        prompt_index=job.item.index,
                        prompt=job.item.prompt,
                        meta=job.item.meta,
                        grp=_group(plan, job.item),
                        image_index=job.image_index,
                        seed=job.seed,
                        image_sha256=sha,
                        image_path=rel,
                    )
                )
            images = [im for _, _, im in stored]
            generate_s = t1 - t0
        else:
            images = _parallel(
                lambda j: scorer_input(
                    read_image_file(self.images_dir, j.image[1], j.image[0]), enc
                ),
                batch,
            )
            generate_s = 0.0
        t2 = time.perf_counter()
        prompts = [j.item.prompt for j in batch]
        metas = [dict(j.item.meta) for j in batch]
        scores: list[ScoreRow] = []
        for name in batch[0].scorers:
            scorer = self.scorer(name)
            out = scorer(images, prompts, metas)
            scores += _score_rows(
                name, str(scorer.version), out, batch, plan, self.run_id, self.step
            )
        t3 = time.perf_counter()
        # encode: PNG encode + hash + write + decode for the scorers (or read + check + decode)
        timings = {"generate": generate_s, "encode": t2 - t0 - generate_s, "score": t3 - t2}
        return samples, scores, timings


def _store_png(images_dir: Path, image: Any, encoding: str) -> tuple[str, str, Any]:
    """Encode, write (content-addressed) and decode for the scorers: (sha256, path, scorer image)."""
    png = encode_png(image)
    sha, rel = write_image_file(images_dir, png)
    return sha, rel, scorer_input(png, encoding)


def _parallel(fn: Any, items: Sequence[Any]) -> list[Any]:
    """``[fn(x) for x in items]`` on a thread per item (up to the CPU count), in order."""
    from concurrent.futures import ThreadPoolExecutor

    workers = min(len(items), os.cpu_count() or 1)
    if workers <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def _group(plan: BenchmarkPlan, item: PromptItem) -> str | None:
    if plan.group_by is None:
        return None
    if plan.group_by not in item.meta:
        raise ValueError(
            f"prompt {item.id} has no {plan.group_by!r} metadata, which {plan.name} aggregates by"
        )
    return str(item.meta[plan.group_by])


def _score_rows(
    name: str, version: str, out: Any, batch: list[Job], plan: BenchmarkPlan, run_id: str, step: int
) -> list[ScoreRow]:
    n = len(batch)
    values = list(getattr(out, "values", []))
    rewards = getattr(out, "rewards", None)
    details = getattr(out, "details", None)
    if len(values) != n:
        raise ScorerOutputError(f"scorer {name} returned {len(values)} values for {n} images")
    if rewards is not None and len(rewards) != n:
        raise ScorerOutputError(f"scorer {name} returned {len(rewards)} rewards for {n} images")
    if details is not None and len(details) != n:
        raise ScorerOutputError(f"scorer {name} returned {len(details)} details for {n} images")
    rows = []
    for i, job in enumerate(batch):
        value = float(values[i])
        reward = None if rewards is None else float(rewards[i])
        if not math.isfinite(value) or (reward is not None and not math.isfinite(reward)):
            raise ScorerOutputError(
                f"scorer {name} returned a non-finite number for {job.item.id} image {job.image_index} "
                f"(value {value}, reward {reward}); refusing to store it"
            )
        rows.append(
            ScoreRow(
                run_id=run_id,
                step=step,
                benchmark=plan.name,
                benchmark_version=plan.version,
                prompt_id=job.item.id,
                grp=_group(plan, job.item),
                image_index=job.image_index,
                scorer=name,
                scorer_version=version,
                value=value,
                reward=reward,
                details=None if details is None else dict(details[i] or {}),
            )
        )
    return rows


def evaluate(
    model: Any,
    benchmarks: Sequence[str] | str = ("main",),
    *,
    store: Store | str | Path | None = None,
    protocol: EvalProtocol | None = None,
    run_id: str | None = None,
    step: int = 0,
    lora: str | None = None,
    prompts: str | Path | None = None,
    scorers: Sequence[str] | None = None,
    scorer_objects: Mapping[str, Any] | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
    contaminated: Sequence[str] | None = None,
) -> EvalResult:
    """Evaluate ``model`` (a hub id, a local folder or a loaded ``FlowModel``) on benchmarks into the store.

    Completes only what the store lacks for ``run_id`` at ``step``. A loaded model needs ``run_id`` (its weights
    are not those of ``model.model_id``). ``scorer_objects`` lends already-loaded scorers by name (the trainer's
    reward models). Returns counts and timings; read the tables from the store (``harness.tables``).

    ``contaminated``: why the model counts as trained on evaluation prompts (one line per reason, [] = clean),
    stored as ``provenance["contaminated"]`` so every table marks the run. None (the default) reads it from the
    run manifests of the model and LoRA folders (``source_contamination``); the trainer passes its own run's.
    A resumed run keeps the reasons it has and adds new ones: a verdict is never dropped by a later session.
    """
    t_start = time.perf_counter()
    protocol = protocol or EvalProtocol()
    names = [benchmarks] if isinstance(benchmarks, str) else list(benchmarks)
    lent = dict(scorer_objects or {})
    plans = plan_benchmarks(
        names,
        prompts=prompts,
        scorers=scorers,
        images_per_prompt=protocol.images_per_prompt,
        limit=limit,
    )
    all_scorers = sorted({s for p in plans for s in p.scorers})
    check_scorer_names(all_scorers, extra=list(lent))
    model_dir = None
    if isinstance(model, (str, Path)):
        model = str(model)
        model_id = model
        run_id = run_id or default_run_id(model, lora, protocol)
        from flowmodels.models import resolve_model_dir

        # a missing model fails here, before the store is touched
        model_dir = str(resolve_model_dir(model))
    else:
        model_id = str(getattr(model, "model_id", type(model).__name__))
        if run_id is None:
            raise ValueError(
                "evaluating a loaded model needs run_id (and step): its weights are not on disk"
            )
    if step < 0:
        raise InputError(f"step must be >= 0, got {step}")
    if contaminated is None:
        contaminated = source_contamination(model_id, model_dir, lora)
    elif isinstance(contaminated, str):
        raise TypeError("contaminated must be a list of reasons, not one string")
    dist = _dist()
    if device == "auto" and dist.device is not None:
        device = dist.device
    if (
        model_dir is not None
    ):  # a device or dtype this machine lacks fails here, before the store is touched
        from flowmodels.models import resolve_device, resolve_dtype

        resolve_dtype(dtype, resolve_device(device))

    versions: dict[str, str | None] = {
        s: (str(lent[s].version) if s in lent else scorer_class_version(s)) for s in all_scorers
    }
    # Rank 0 alone opens the store, plans the work and tells the others (or tells them why it failed).
    payload: dict[str, Any] = {}
    st: Store | None = None
    failure: Exception | None = None
    if dist.rank == 0:
        try:
            st = store if isinstance(store, Store) else Store(store or _default_store())
            payload = _prepare(
                st,
                run_id,
                step,
                model_id,
                lora,
                protocol,
                plans,
                versions,
                dist,
                device,
                dtype,
                model,
                model_dir,
                [str(r) for r in contaminated],
            )
            payload["batches"] = make_batches(payload.pop("jobs"), batch_size)
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            failure = e
            # strings: any exception, picklable; a user's error stays one line on every rank
            payload = {"error": f"{type(e).__name__}: {e}", "user_error": isinstance(e, UserError)}
    payload = _broadcast(payload, dist)
    if "error" in payload:
        if failure is not None:
            raise failure
        kind = UserError if payload.get("user_error") else RuntimeError
        raise kind(f"rank 0 could not start the evaluation: {payload['error']}")

    batches: list[list[Job]] = payload["batches"]
    result = EvalResult(run_id, step, payload["store"], [p.name for p in plans], dist.world)
    result.images_skipped = payload["complete"]
    worker = _Worker(
        model,
        lora,
        protocol,
        {p.name: p for p in plans},
        Path(payload["images_dir"]),
        versions,
        lent,
        run_id,
        step,
        batch_size,
        device,
        dtype,
    )
    total = {"generate": 0.0, "encode": 0.0, "score": 0.0, "store": 0.0}
    n_images = sum(len(b) for b in batches)
    bar = None
    if progress and dist.rank == 0 and n_images:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_images, desc=f"eval {run_id}", unit="img")
    rounds = math.ceil(len(batches) / dist.world)
    for r in range(rounds):
        mine = r * dist.world + dist.rank
        out = worker.run(batches[mine]) if mine < len(batches) else ([], [], {})
        parts = _gather(out, dist)
        if dist.rank != 0:
            continue
        samples = [s for part in parts for s in part[0]]
        scores = [c for part in parts for c in part[1]]
        t0 = time.perf_counter()
        assert st is not None
        st.add_samples(samples, scores)
        total["store"] += time.perf_counter() - t0
        for part in parts:
            for k, v in part[2].items():
                total[k] += v
        this_round = batches[r * dist.world : (r + 1) * dist.world]
        done = sum(len(b) for b in this_round)
        result.images_generated += sum(len(b) for b in this_round if b[0].image is None)
        result.images_rescored += sum(len(b) for b in this_round if b[0].image is not None)
        result.scores_added += len(scores)
        if bar is not None:
            bar.update(done)
    if bar is not None:
        bar.close()
    total["total"] = time.perf_counter() - t_start
    result.timings = total
    log.info(
        "run %s step %d: %d images generated, %d scores added, %d images already complete",
        run_id,
        step,
        result.images_generated,
        result.scores_added,
        result.images_skipped,
    )
    return result


def _default_store() -> Path:
    return Path(os.environ.get("FLOW_OPD_STORE", str(DEFAULT_STORE)))


def _prepare(
    st: Store,
    run_id: str,
    step: int,
    model_id: str,
    lora: str | None,
    protocol: EvalProtocol,
    plans: Sequence[BenchmarkPlan],
    versions: Mapping[str, str | None],
    dist: _Dist,
    device: str,
    dtype: str,
    model: Any,
    model_dir: str | None,
    contaminated: list[str],
) -> dict[str, Any]:
    """Record (or check) the run and its contamination verdict, then plan the missing jobs."""
    if st.images_dir is None:
        raise StoreError("the store needs an images folder (Store(..., images_dir=...))")
    want = {
        "version": PROTOCOL_VERSION,
        "generation": protocol.to_dict(),
        "benchmarks": {p.name: p.spec() for p in plans},
    }
    if not isinstance(model, str):
        device, dtype = str(getattr(model, "device", device)), str(getattr(model, "dtype", dtype))
    prov = provenance(
        world_size=dist.world,
        device=device,
        dtype=dtype,
        protocol=protocol,
        scorer_versions=versions,
    )
    existing = st.get_run(run_id)
    if existing is None:
        st.add_run(
            RunRecord(
                run_id,
                model_id,
                lora,
                want,
                {**prov, "contaminated": contaminated, "sessions": [_session(prov)]},
                PROTOCOL_VERSION,
            )
        )
    else:
        merged = _check_run(existing, model_id, lora, want)
        if merged is not None:
            st.update_run_protocol(run_id, merged)
        sessions = [*existing.provenance.get("sessions", []), _session(prov)]
        kept = existing.contamination
        reasons = kept + [r for r in contaminated if r not in kept]
        st.update_run_provenance(
            run_id, {**existing.provenance, "contaminated": reasons, "sessions": sessions}
        )
    jobs, complete = plan_jobs(st, run_id, step, plans, protocol, versions)
    return {
        "jobs": jobs,
        "complete": complete,
        "images_dir": str(st.images_dir),
        "store": str(st.path),
    }


def _session(prov: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("started_at", "git_sha", "git_dirty", "world_size", "device", "dtype", "argv")
    return {k: prov[k] for k in keys}


class _CallableModule(types.ModuleType):
    """Importing this submodule makes ``harness.evaluate`` the module, not the function; keep it callable so
    ``harness.evaluate(...)`` works however the package was imported."""

    def __call__(self, *args: Any, **kwargs: Any) -> EvalResult:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
