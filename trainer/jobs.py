"""Run a few commands side by side on a small machine: dependencies, CPU threads and one shared file.

``trainer.paper`` runs each stage and each evaluation as its own process. On two CPU cores two processes on one
thread each finish a pair of stages in less time than one after the other on two threads (measured: 4 GRPO steps of
the OCR teacher take 43.6 s alone on 2 threads, 60.7 s alone on 1 thread, 69.0 s for two at once on 1 thread
each), so :func:`run_jobs` keeps ``slots`` processes busy:

- a job starts once every job named in ``after`` has finished;
- among ready jobs the higher ``priority`` starts first, then the order given;
- jobs holding the same ``exclusive`` resource never overlap (DuckDB lets one process write a file);
- each gets ``threads // slots`` CPU threads (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``), except a job that starts
  while nothing else runs: nothing can become ready before it ends, so it gets all ``threads``.

A failed job stops new launches; the jobs already running finish (their work is kept), then :func:`run_jobs`
raises with the failed job's log tail.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flowbase.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One command, its log file and what it waits for."""

    name: str
    cmd: tuple[str, ...]
    log: Path
    after: tuple[str, ...] = ()
    exclusive: str | None = None  # a resource at most one running job holds
    priority: int = 0  # higher starts first among ready jobs
    before: Callable[[], None] | None = None  # runs in this process just before the launch


@dataclass(frozen=True)
class Ran:
    """How one job ran: when it started (seconds after the first launch), for how long, on how many threads."""

    start: float
    seconds: float
    threads: int


def _check(jobs: Sequence[Job]) -> None:
    names = [j.name for j in jobs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"job names must be unique: {twice}")
    for j in jobs:
        unknown = [a for a in j.after if a not in names]
        if unknown:
            raise ValueError(f"job {j.name} waits for unknown jobs {unknown}; known: {names}")


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_jobs(
    jobs: Sequence[Job],
    *,
    slots: int = 2,
    threads: int | None = None,
    poll: float = 0.1,
    env: dict[str, str] | None = None,
) -> dict[str, Ran]:
    """Run ``jobs`` (see the module doc); returns how each ran, in the order they finished."""
    _check(jobs)
    if slots < 1:
        raise InputError(f"--jobs must be >= 1, got {slots}")
    total = (os.cpu_count() or 1) if threads is None else threads
    if total < 1:
        raise InputError(f"--threads must be >= 1, got {total}")
    shared = max(1, total // slots)
    base_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    waiting = list(jobs)
    running: dict[str, tuple[Job, subprocess.Popen, float, int, object]] = {}
    done: dict[str, Ran] = {}
    failed: list[str] = []
    t0 = time.perf_counter()

    def ready() -> list[Job]:
        got = [j for j in waiting if all(a in done for a in j.after)]
        return sorted(got, key=lambda j: -j.priority)  # stable: the given order breaks ties

    def launch(job: Job, n_threads: int) -> None:
        if job.before is not None:
            job.before()
        job.log.parent.mkdir(parents=True, exist_ok=True)
        fh = job.log.open("w")
        job_env = {
            **base_env,
            "OMP_NUM_THREADS": str(n_threads),
            "MKL_NUM_THREADS": str(n_threads),
        }
        proc = subprocess.Popen(job.cmd, stdout=fh, stderr=subprocess.STDOUT, env=job_env)
        running[job.name] = (job, proc, time.perf_counter(), n_threads, fh)
        waiting.remove(job)
        log.info("start %s (%d thread%s)", job.name, n_threads, "s" * (n_threads > 1))

    try:
        while waiting or running:
            if not failed:
                held = {j.exclusive for j, *_ in running.values() if j.exclusive}
                picked: list[Job] = []
                for job in ready():
                    if len(running) + len(picked) >= slots:
                        break
                    if job.exclusive and job.exclusive in held:
                        continue
                    picked.append(job)
                    if job.exclusive:
                        held.add(job.exclusive)
                alone = not running and len(picked) == 1
                for job in picked:
                    launch(job, total if alone else shared)
            if not running:
                if failed:
                    break
                stuck = [j.name for j in waiting]
                raise ValueError(f"jobs {stuck} wait for each other (a cycle in 'after')")
            time.sleep(poll)
            for name, (job, proc, start, n_threads, fh) in list(running.items()):
                if proc.poll() is None:
                    continue
                fh.close()  # type: ignore[attr-defined]
                del running[name]
                if proc.returncode != 0:
                    failed.append(name)
                    log.error("%s failed (exit %d); see %s", name, proc.returncode, job.log)
                    continue
                now = time.perf_counter()
                done[name] = Ran(start - t0, now - start, n_threads)
                log.info(
                    "done %s in %.0f s [%d/%d, %.0f s so far]",
                    name,
                    now - start,
                    len(done),
                    len(jobs),
                    now - t0,
                )
    except BaseException:
        for _, proc, *_ in running.values():
            proc.terminate()
        for _, proc, *_ in running.values():
            proc.wait()
        raise
    if failed:
        never = [j.name for j in waiting]
        details = "\n".join(
            f"{name} (see {job.log}):\n{_tail(job.log)}"
            for job in jobs
            if (name := job.name) in failed
        )
        raise RuntimeError(
            f"{len(failed)} job(s) failed: {', '.join(failed)}"
            + (f"; not started: {', '.join(never)}" if never else "")
            + f"\n{details}"
        )
    return done
