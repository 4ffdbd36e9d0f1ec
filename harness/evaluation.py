"""``evaluate``: a model -> benchmark images -> scores -> rows in the results store, resumable and shardable.

The one function behind ``harness eval`` and the trainer's in-loop evaluation (a recipe passes its loaded
``FlowModel``, its run id and the step). The pipeline, per batch of images:

1. **plan** (rank 0): for each benchmark, the (prompt, image) pairs and the scorers the store does not hold yet
   for this run and step; a sample that exists but lacks a scorer is re-scored from its stored PNG;
2. **generate**: ``rollout`` with the protocol's ODE settings, image ``j`` of prompt ``i`` seeded
   ``seed + i*K + j``;
3. **score**: every scorer gets the generated images in memory through the protocol's image encoding (the
   pixels of the lossless PNG), while each image is PNG-encoded and written to the store's images folder under
   its sha256 in the background, overlapping the next batch's generation (``harness.worker``);
4. **store** (rank 0): once the batch's image files exist, its samples and scores in one transaction, on the
   one connection the evaluation holds for the run (handed over between batches while another process waits
   for the store, ``results.connections``).

Before any work, every input is checked and every weight the call needs (the model, the LoRA, each scorer's)
is looked up; all missing ones are listed in one error. The run's record is written in the transaction of its
first batch, so an evaluation that fails before storing a sample leaves no run behind. One evaluation of a run
at a time per store (``harness.runlock``): a second one waits, then does only what is still missing. Killed at
any point and started again, it redoes only batches whose transaction never committed (existing keys are never
written twice); the counts it returns are rows actually inserted. With several processes (``accelerate launch`` or ``torchrun``), the planned batches are
dealt round-robin to the ranks; batches are formed before they are dealt, so every image is made in the same batch
as in a one-process run and the rows are the same. Rank 0 alone opens the store; the images folder must be on a
filesystem every rank can see.
"""

from __future__ import annotations

import hashlib
import logging
import math
import platform
import re
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flowbase.code import git_dirty, git_sha
from flowbase.errors import InputError, UserError
from flowmodels.models import (
    check_sampling,
    model_record,
    native_settings,
    resolve_device,
    resolve_dtype,
)
from harness.benchmarks import sampling_settings
from harness.dist import broadcast, current, gather
from harness.plan import (
    Job,
    check_requirements,
    check_scorer_names,
    make_batches,
    plan_benchmarks,
    plan_jobs,
    scorer_class_version,
)
from harness.protocol import PROTOCOL_VERSION, EvalProtocol
from harness.runlock import run_lock
from harness.session import Session
from harness.splits import recorded_contamination
from harness.worker import Pending, Worker
from results.store import RunRecord, Store, StoreError, default_store

log = logging.getLogger(__name__)


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

    reasons: list[str] = []
    for source in sources:
        if source is None or not Path(source).exists():
            continue
        reasons += [r for r in recorded_contamination(source) if r not in reasons]
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


def resolve_protocol(
    protocol: EvalProtocol | Mapping[str, Any] | None,
    names: Sequence[str],
    native: Mapping[str, Any],
    batch_size: int | None,
) -> tuple[EvalProtocol, int]:
    """The protocol and batch size of an evaluation. An ``EvalProtocol`` is taken as it is; a mapping (or None)
    names only the fields the user set (None values count as unset), and the rest come from the benchmarks, then
    the model's own settings (``native``), then the paper's (``harness.benchmarks.sampling_settings``)."""
    base = sampling_settings(list(names), native=native, batch_size=batch_size)
    batch = int(base.pop("batch_size"))
    if isinstance(protocol, EvalProtocol):
        return protocol, batch
    given = {k: v for k, v in (protocol or {}).items() if v is not None}
    unknown = sorted(set(given) - {f.name for f in fields(EvalProtocol)})
    if unknown:
        raise InputError(f"unknown protocol field(s) {', '.join(unknown)}")
    return EvalProtocol(**{**base, **given}), batch


def evaluate(
    model: Any,
    benchmarks: Sequence[str] | str = ("main",),
    *,
    store: Store | str | Path | None = None,
    protocol: EvalProtocol | Mapping[str, Any] | None = None,
    run_id: str | None = None,
    step: int = 0,
    lora: str | None = None,
    prompts: str | Path | None = None,
    scorers: Sequence[str] | None = None,
    scorer_objects: Mapping[str, Any] | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
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

    ``protocol``: an ``EvalProtocol`` is used as it is; a mapping of the fields to set (``{"steps": 20}``) or None
    leaves the rest to the benchmarks, then the model's own settings (the mini model: 32 px, 10 steps), then the
    paper's protocol. ``batch_size`` None: the benchmarks' (the mini world's 64), else 8.
    """
    t_start = time.perf_counter()
    names = [benchmarks] if isinstance(benchmarks, str) else list(benchmarks)
    lent = dict(scorer_objects or {})
    per_prompt = (
        protocol.images_per_prompt
        if isinstance(protocol, EvalProtocol)
        else (protocol or {}).get("images_per_prompt")
    )
    plans = plan_benchmarks(
        names, prompts=prompts, scorers=scorers, images_per_prompt=per_prompt, limit=limit
    )
    all_scorers = sorted({s for p in plans for s in p.scorers})
    check_scorer_names(all_scorers, extra=list(lent))
    # every input is checked, and every missing weight listed, before the store is touched
    if step < 0:
        raise InputError(f"step must be >= 0, got {step}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    if isinstance(contaminated, str):
        raise TypeError("contaminated must be a list of reasons, not one string")
    dist = current()
    if device == "auto" and dist.device is not None:
        device = dist.device
    on_disk = isinstance(model, (str, Path))
    if on_disk:
        model = str(model)
        resolve_dtype(dtype, resolve_device(device))  # a device or dtype this machine lacks
    elif run_id is None:
        raise ValueError(
            "evaluating a loaded model needs run_id (and step): its weights are not on disk"
        )
    model_dir = check_requirements(
        model if on_disk else None,
        lora if on_disk else None,  # a loaded model carries its LoRA already
        [s for s in all_scorers if s not in lent],
    )
    native = native_settings(model)
    protocol, batch_size = resolve_protocol(protocol, names, native, batch_size)
    record = None
    if on_disk:
        check_sampling(model, lora=lora, noise_level=protocol.noise_level)
        record = model_record(model)
        model_id = model
        run_id = run_id or default_run_id(model, lora, protocol)
    else:
        model_id = str(getattr(model, "model_id", type(model).__name__))
    assert run_id is not None
    if contaminated is None:
        contaminated = source_contamination(model_id, model_dir, lora)
    session = Session(
        model=model,
        model_id=model_id,
        model_dir=model_dir,
        lora=lora,
        run_id=run_id,
        step=step,
        protocol=protocol,
        plans={p.name: p for p in plans},
        versions={
            s: (str(lent[s].version) if s in lent else scorer_class_version(s)) for s in all_scorers
        },
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        dist=dist,
        contaminated=[str(r) for r in contaminated],
        lent=lent,
        guidance=native.get("guidance"),
        model_record=record,
    )
    with ExitStack() as held:
        return _run(session, store, held, progress, t_start)


def _run(
    session: Session, store: Store | str | Path | None, held: ExitStack, progress: bool, t0: float
) -> EvalResult:
    """Plan (rank 0, holding the run's lock in ``held``), then generate, score and store batch by batch."""
    dist, run_id, step = session.dist, session.run_id, session.step
    # Rank 0 alone opens the store, plans the work and tells the others (or tells them why it failed).
    payload: dict[str, Any] = {}
    st: Store | None = None
    failure: Exception | None = None
    if dist.rank == 0:
        try:
            st = store if isinstance(store, Store) else Store(store or default_store())
            if not st.memory:
                held.enter_context(run_lock(st.path, run_id))
            # one connection for planning and every batch, handed over between batches to a waiting reader
            held.enter_context(st.holding())
            payload = _prepare(st, session)
            payload["batches"] = make_batches(payload.pop("jobs"), session.batch_size)
            if not payload["batches"]:  # nothing to do: record this session now
                st.add_samples([], [], run=payload.pop("run"))
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            failure = e
            # strings: any exception, picklable; a user's error stays one line on every rank
            payload = {"error": f"{type(e).__name__}: {e}", "user_error": isinstance(e, UserError)}
    payload = broadcast(payload, dist)
    if "error" in payload:
        if failure is not None:
            raise failure
        kind = UserError if payload.get("user_error") else RuntimeError
        raise kind(f"rank 0 could not start the evaluation: {payload['error']}")

    batches: list[list[Job]] = payload["batches"]
    run = payload.get("run")  # written with the first batch
    result = EvalResult(run_id, step, payload["store"], list(session.plans), dist.world)
    result.images_skipped = payload["complete"]
    worker = Worker(session, Path(payload["images_dir"]))
    total = {"generate": 0.0, "encode": 0.0, "score": 0.0, "store": 0.0}
    n_images = sum(len(b) for b in batches)
    bar = None
    if progress and dist.rank == 0 and n_images:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_images, desc=f"eval {run_id}", unit="img")
    rounds = math.ceil(len(batches) / dist.world)

    def store_round(r: int, pending: Pending | None) -> None:
        """Wait for round ``r``'s image files on every rank, then (rank 0) store its rows in one batch."""
        nonlocal run
        out = pending.finish() if pending is not None else ([], [], {})
        parts = gather(out, dist)
        if dist.rank != 0:
            return
        samples = [s for part in parts for s in part[0]]
        scores = [c for part in parts for c in part[1]]
        t_store = time.perf_counter()
        assert st is not None
        n_samples, n_scores = st.add_samples(samples, scores, run=run)
        run = None
        total["store"] += time.perf_counter() - t_store
        for part in parts:
            for k, v in part[2].items():
                total[k] += v
        this_round = batches[r * dist.world : (r + 1) * dist.world]
        result.images_generated += n_samples  # rows inserted, not rows attempted
        result.images_rescored += sum(len(b) for b in this_round if b[0].image is not None)
        result.scores_added += n_scores
        if bar is not None:
            bar.update(sum(len(b) for b in this_round))

    held.callback(worker.close)
    # Round r's images are written while round r + 1 generates; round r is stored right after that starts. In
    # one process its rows are stored on a thread too (one store in flight, waited on before the next).
    storer = ThreadPoolExecutor(1, thread_name_prefix="store") if dist.world == 1 else None
    storing: Future[None] | None = None

    def store(prev: tuple[int, Pending | None], *, now: bool = False) -> None:
        nonlocal storing
        if storing is not None:
            done, storing = storing, None
            done.result()  # an error storing the last batch stops the run here
        if storer is None or now:
            store_round(*prev)
        else:
            storing = storer.submit(store_round, *prev)

    previous: tuple[int, Pending | None] | None = None
    try:
        for r in range(rounds):
            mine = r * dist.world + dist.rank
            try:
                current = worker.start(batches[mine]) if mine < len(batches) else None
            except BaseException:
                if previous is not None and dist.world == 1:
                    store(previous, now=True)  # keep the work done before the failure
                raise
            if previous is not None:
                store(previous)
            previous = (r, current)
        if previous is not None:
            store(previous, now=True)
    finally:
        if storer is not None:
            storer.shutdown(wait=True)
    if bar is not None:
        bar.close()
    total["total"] = time.perf_counter() - t0
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


def _prepare(st: Store, session: Session) -> dict[str, Any]:
    """Check the run against the stored one, make its record (with this session and the contamination verdict)
    and plan the missing jobs (rank 0); nothing is written here."""
    run_id, protocol, plans = session.run_id, session.protocol, list(session.plans.values())
    device, dtype = session.device, session.dtype
    if st.images_dir is None:
        raise StoreError("the store needs an images folder (Store(..., images_dir=...))")
    want = {
        "version": PROTOCOL_VERSION,
        # a model that reads cfg otherwise than as classifier-free guidance says so (FLUX.1-dev: "distilled")
        "generation": {
            **protocol.to_dict(),
            **({"guidance": session.guidance} if session.guidance not in (None, "cfg") else {}),
        },
        "benchmarks": {p.name: p.spec() for p in plans},
    }
    if session.model_record is not None:
        want["model"] = session.model_record  # pipeline, guidance kind, scheduler and shift, ...
    if not isinstance(session.model, str):  # a loaded model knows where it runs
        device, dtype = str(session.model.device), str(session.model.dtype)
    prov = provenance(
        world_size=session.dist.world,
        device=device,
        dtype=dtype,
        protocol=protocol,
        scorer_versions=session.versions,
    )
    existing = st.get_run(run_id)
    if existing is None:
        run = RunRecord(
            run_id,
            session.model_id,
            session.lora,
            want,
            {**prov, "contaminated": session.contaminated, "sessions": [_session_record(prov)]},
            PROTOCOL_VERSION,
        )
    else:
        merged = _check_run(existing, session.model_id, session.lora, want)
        sessions = [*existing.provenance.get("sessions", []), _session_record(prov)]
        kept = existing.contamination
        reasons = kept + [r for r in session.contaminated if r not in kept]
        run = RunRecord(
            run_id,
            existing.model,
            existing.lora,
            merged if merged is not None else existing.protocol,
            {**existing.provenance, "contaminated": reasons, "sessions": sessions},
            existing.protocol_version,
        )
    jobs, complete = plan_jobs(st, run_id, session.step, plans, protocol, session.versions)
    return {
        "jobs": jobs,
        "complete": complete,
        "images_dir": str(st.images_dir),
        "store": str(st.path),
        "run": run,  # written in the transaction of the first batch: a failed start leaves no run
    }


def _session_record(prov: Mapping[str, Any]) -> dict[str, Any]:
    """What each session of a run (a start or a resume) records: when, which code, where."""
    keys = ("started_at", "git_sha", "git_dirty", "world_size", "device", "dtype", "argv")
    return {k: prov[k] for k in keys}
