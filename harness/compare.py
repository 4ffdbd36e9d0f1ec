"""``harness compare RUN_A RUN_B``: per-metric deltas with 95% paired bootstrap intervals over prompts.

The unit of resampling is the prompt (its images stay together), and both runs are resampled with the same
draws, so the interval is for the *difference* on the prompts both runs hold. Benchmarks that aggregate by group
(GenEval tasks, T2I-CompBench categories) are resampled within each group (stratified), so every resample keeps
the benchmark's task mix and the metric stays "mean of group means". The Avg column of the main table gets an
interval too: its per-resample value is built from the four benchmarks' resamples (independent across
benchmarks, as their prompt sets are).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowbase.errors import InputError, UnknownNameError
from harness.standing import protocol_diff
from harness.tables import Table, marked
from results.store import Store

MAIN = (
    ("geneval", "geneval", 1.0),
    ("ocr", "ocr", 1.0),
    ("drawbench", "deqa", 5.0),
    ("pickscore", "pickscore", 26.0),
)


@dataclass(frozen=True)
class PromptStats:
    """Per prompt: aggregation group, image count and sum of values (aligned across the two runs)."""

    groups: list[str | None]
    n: np.ndarray  # [P]
    total: np.ndarray  # [P]


def metric(stats: PromptStats, weights: np.ndarray | None = None) -> np.ndarray:
    """The benchmark metric under prompt weights [R, P] (1 = the observed data): image mean, or mean of group means."""
    w = np.ones((1, len(stats.n))) if weights is None else np.atleast_2d(weights)
    keys = sorted({g for g in stats.groups if g is not None})
    if not keys:
        return (w @ stats.total) / (w @ stats.n)
    per = []
    g_arr = np.array(stats.groups, dtype=object)
    for g in keys:
        m = g_arr == g
        per.append((w[:, m] @ stats.total[m]) / (w[:, m] @ stats.n[m]))
    return np.mean(per, axis=0)


def bootstrap_weights(
    groups: Sequence[str | None], resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """[R, P] counts: each prompt's multiplicity in each resample, drawn within its group."""
    groups = list(groups)
    p = len(groups)
    w = np.zeros((resamples, p))
    strata: dict[str | None, list[int]] = {}
    for i, g in enumerate(groups):
        strata.setdefault(g, []).append(i)
    for idx in strata.values():
        n = len(idx)
        w[:, idx] = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)
    return w


@dataclass(frozen=True)
class Delta:
    """One metric of the comparison: A, B, A - B and its 95% bootstrap interval."""

    benchmark: str
    scorer: str
    a: float
    b: float
    delta: float
    low: float
    high: float
    prompts: int
    draws: np.ndarray | None = None  # [R] resampled deltas (for combining into Avg)


def paired_delta(
    a: PromptStats,
    b: PromptStats,
    *,
    resamples: int = 1000,
    seed: int = 0,
    benchmark: str = "",
    scorer: str = "",
) -> Delta:
    """A - B on aligned prompts, with the 2.5 and 97.5 percentiles of the paired, stratified bootstrap."""
    if len(a.n) != len(b.n) or a.groups != b.groups:
        raise ValueError(
            "paired_delta needs the two runs' prompts aligned (same prompts, same groups)"
        )
    if len(a.n) == 0:
        raise InputError(f"no prompts in common for {benchmark}/{scorer}")
    rng = np.random.default_rng(seed)
    w = bootstrap_weights(a.groups, resamples, rng)
    draws = metric(a, w) - metric(b, w)
    va, vb = float(metric(a)[0]), float(metric(b)[0])
    low, high = np.percentile(draws, [2.5, 97.5])
    return Delta(benchmark, scorer, va, vb, va - vb, float(low), float(high), len(a.n), draws)


def _stats(rows: list[dict], keep: list[str]) -> PromptStats:
    by = {r["prompt_id"]: r for r in rows}
    return PromptStats(
        [by[k]["grp"] for k in keep],
        np.array([by[k]["n"] for k in keep], dtype=float),
        np.array([by[k]["total"] for k in keep], dtype=float),
    )


def compare_runs(
    store: Store,
    run_a: str,
    run_b: str,
    *,
    step_a: int | None = None,
    step_b: int | None = None,
    benchmark: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> list[Delta]:
    """Deltas for every (benchmark, scorer) both runs hold (at their last steps unless given), then Avg."""
    if resamples < 1:
        raise InputError(f"--resamples must be >= 1, got {resamples}")
    for rid in (run_a, run_b):
        if store.get_run(rid) is None:
            import difflib

            hint = difflib.get_close_matches(rid, store.run_ids(), n=3)
            maybe = f" (did you mean {', '.join(hint)}?)" if hint else ""
            raise UnknownNameError(f"no run {rid!r} in {store.path}{maybe}; see `harness runs`")
    sa = step_a if step_a is not None else store.last_step(run_a)
    sb = step_b if step_b is not None else store.last_step(run_b)
    have_a = {(r["benchmark"], r["scorer"]) for r in store.history(run_a) if r["step"] == sa}
    have_b = {(r["benchmark"], r["scorer"]) for r in store.history(run_b) if r["step"] == sb}
    pairs = sorted(have_a & have_b)
    if benchmark is not None:
        pairs = [p for p in pairs if p[0] == benchmark]
    if not pairs:
        raise InputError(f"runs {run_a} and {run_b} share no scored benchmark to compare")
    out = []
    for i, (bench, scorer) in enumerate(pairs):
        ra = store.prompt_values(run_a, sa, bench, scorer)  # type: ignore[arg-type]
        rb = store.prompt_values(run_b, sb, bench, scorer)  # type: ignore[arg-type]
        common = sorted({r["prompt_id"] for r in ra} & {r["prompt_id"] for r in rb})
        out.append(
            paired_delta(
                _stats(ra, common),
                _stats(rb, common),
                resamples=resamples,
                seed=seed + i,
                benchmark=bench,
                scorer=scorer,
            )
        )
    by = {(d.benchmark, d.scorer): d for d in out}
    if benchmark is None and all((b, s) in by for b, s, _ in MAIN):
        parts = [by[(b, s)] for b, s, _ in MAIN]
        scale = [k for _, _, k in MAIN]
        va = sum(d.a / k for d, k in zip(parts, scale, strict=True)) / 4
        vb = sum(d.b / k for d, k in zip(parts, scale, strict=True)) / 4
        draws = sum(d.draws / k for d, k in zip(parts, scale, strict=True)) / 4  # type: ignore[operator]
        low, high = np.percentile(draws, [2.5, 97.5])
        prompts = sum(d.prompts for d in parts)
        out.append(Delta("main", "avg", va, vb, va - vb, float(low), float(high), prompts, draws))
    return out


def protocol_notes(diff: Sequence[tuple[str, Any, Any]]) -> list[str]:
    """The notes that say which protocol settings differ between A and B (none when they agree)."""
    if not diff:
        return []
    return [
        f"Protocols differ in {len(diff)} setting{'s' if len(diff) > 1 else ''}: the difference mixes the "
        "models with their settings",
        *(f"  {k}: A {a!r}, B {b!r}" for k, a, b in diff),
    ]


def deltas_table(  # noqa: ANN201 - harness.tables.Table
    deltas: Sequence[Delta],
    run_a: str,
    run_b: str,
    contaminated: Mapping[str, list[str]] | None = None,
    protocols: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
):
    """The comparison as a ``Table`` (rendered like every other table). ``contaminated`` (run id -> reasons,
    ``Store.contaminated_runs``) marks a run trained on evaluation prompts in the title, with the legend;
    ``protocols`` (A's and B's stored protocols) adds a note per setting that differs between them."""
    bad = {r: list(why) for r, why in (contaminated or {}).items() if r in (run_a, run_b) and why}
    t = Table(
        f"{marked(run_a, bad)} (A) vs {marked(run_b, bad)} (B): A - B with 95% paired bootstrap interval "
        "over prompts",
        ["benchmark", "scorer", "A", "B", "A - B", "95% low", "95% high", "prompts"],
        [[d.benchmark, d.scorer, d.a, d.b, d.delta, d.low, d.high, d.prompts] for d in deltas],
        [None, None, 4, 4, 4, 4, 4, None],
    )
    t.partial = [set() for _ in t.rows]
    t.notes.append(
        "An interval that excludes 0 means the difference is unlikely to be resampling noise"
    )
    if protocols is not None:
        t.notes += protocol_notes(protocol_diff(dict(protocols[0]), dict(protocols[1])))
    t.contaminated = bad
    return t
