"""Statistics of the mini-world paper runs: each teacher's gain over the base, each Flow-OPD student's share of
it, bootstrap intervals over seeds and test prompts, and the per-seed verdict of the pre-registered test."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowbase.errors import MissingError
from harness import compare
from results.store import Store

# each in-domain metric and the GRPO teacher trained for it
TEACHER_OF = {"GenEval": "grpo_geneval", "OCR": "grpo_ocr", "Quality": "grpo_quality"}


def retention(results: dict[str, dict[str, float]], student: str) -> dict[str, float | None]:
    """Share of each teacher's in-domain gain over the base that ``student`` keeps (1 = all of it).

    None where a number is missing or the teacher did not beat the base: there is no gain to keep, and a ratio
    of two differences within noise would read as a result."""
    base = results.get("base", {})
    out: dict[str, float | None] = {}
    for metric, teacher in TEACHER_OF.items():
        t, b, s = (
            results.get(teacher, {}).get(metric),
            base.get(metric),
            results.get(student, {}).get(metric),
        )
        out[metric] = None if None in (t, b, s) or t <= b else (s - b) / (t - b)  # type: ignore[operator]
    return out


# (benchmark, scorer) pairs behind each column; Quality pools the quality scores of both benchmarks' images
_SOURCES = {
    "GenEval": (("mini_geneval", "mini_geneval"),),
    "OCR": (("mini_ocr", "mini_ocr"),),
    "Quality": (("mini_geneval", "mini_quality"), ("mini_ocr", "mini_quality")),
}


@dataclass(frozen=True)
class Resampled:
    """Each model's columns on the mean over runs: the observed value and ``resamples`` bootstrap draws."""

    # model -> column -> observed mean over runs (``retention``'s input)
    value: dict[str, dict[str, float]]
    # model -> column -> [R]
    draws: dict[str, dict[str, np.ndarray]]
    runs: int


def resample(
    stores: Sequence[Path],
    models: Sequence[str],
    *,
    resamples: int = 2000,
    seed: int = 0,
    over: Sequence[str] = ("runs", "prompts"),
) -> Resampled:
    """Bootstrap the mean over runs (seeds) of each model's GenEval, OCR and Quality.

    Each draw resamples the runs with replacement (training noise) and, within each benchmark, its test prompts
    with replacement, stratified by GenEval task (evaluation noise; ``harness compare``'s unit and strata). Every
    run and model shares the test prompts, so one draw uses the same prompts for all of them: the draws of a
    difference between models are paired. ``over`` names what is resampled (one of them alone splits the noise
    into its two sources); a model some store did not evaluate is left out."""
    if not stores:
        raise ValueError("resample needs at least one run's store")
    unknown = set(over) - {"runs", "prompts"}
    if unknown:
        raise ValueError(f"resample over runs and/or prompts, not {sorted(unknown)}")
    sources = [src for pairs in _SOURCES.values() for src in pairs]
    # per store, model and (benchmark, scorer): prompt_id -> (group, images, sum of values)
    rows: list[dict[str, dict[tuple[str, str], dict[str, tuple[str | None, int, float]]]]] = []
    for path in stores:
        if not Path(path).exists():
            raise MissingError(f"no store at {path}: run trainer.paper there first")
        st = Store(path, read_only=True)
        per_model = {}
        for m in models:
            step = st.last_step(m)
            if step is not None:
                per_model[m] = {
                    src: {
                        r["prompt_id"]: (r["grp"], int(r["n"]), float(r["total"]))
                        for r in st.prompt_values(m, step, *src)
                    }
                    for src in sources
                }
        st.close()
        rows.append(per_model)
    # a mean over fewer runs would pass for all of them
    models = [m for m in models if all(m in r for r in rows)]
    if not models:
        raise ValueError("no model is evaluated in every store")
    # the prompts every store and model holds, per benchmark (the same test split everywhere)
    prompts: dict[str, list[str]] = {}
    groups: dict[str, list[str | None]] = {}
    for b in sorted({b for b, _ in sources}):
        srcs = [src for src in sources if src[0] == b]
        held = [set(r[m][src]) for r in rows for m in models for src in srcs]
        prompts[b] = sorted(set.intersection(*held))
        if not prompts[b]:
            raise ValueError(f"the stores share no scored {b} prompt")
        ref = rows[0][models[0]][srcs[0]]
        groups[b] = [ref[p][0] for p in prompts[b]]
    rng = np.random.default_rng(seed)
    weights = {
        b: compare.bootstrap_weights(g, resamples, rng)
        if "prompts" in over
        else np.ones((resamples, len(g)))
        for b, g in groups.items()
    }
    n_runs = len(stores)
    run_w = (
        rng.multinomial(n_runs, np.full(n_runs, 1.0 / n_runs), size=resamples)
        if "runs" in over
        else np.ones((resamples, n_runs))
    )  # [R, S]

    # per column, the draws' prompt weights over its prompts (Quality: both benchmarks' prompts, side by side)
    col_w = {
        col: np.concatenate([weights[b] for b, _ in parts], axis=1)
        for col, parts in _SOURCES.items()
    }

    def column(r: dict, col: str) -> compare.PromptStats:
        """One run's prompts behind a column: a benchmark's (GenEval's grouped by task, ``metric`` then takes the
        mean of task means), or for Quality both benchmarks' side by side without groups (the pooled image mean)."""
        parts = _SOURCES[col]
        vals = [r[src][p] for src in parts for p in prompts[src[0]]]
        grp = [v[0] for v in vals] if len(parts) == 1 else [None] * len(vals)
        return compare.PromptStats(
            grp,
            np.array([v[1] for v in vals], dtype=float),
            np.array([v[2] for v in vals], dtype=float),
        )

    value: dict[str, dict[str, float]] = {}
    out: dict[str, dict[str, np.ndarray]] = {}
    for m in models:
        for col in _SOURCES:
            stats = [column(r[m], col) for r in rows]
            per_run = np.stack([compare.metric(st, col_w[col]) for st in stats], axis=1)  # [R, S]
            observed = [float(compare.metric(st)[0]) for st in stats]
            out.setdefault(m, {})[col] = (per_run * run_w).sum(1) / n_runs
            value.setdefault(m, {})[col] = sum(observed) / n_runs
    return Resampled(value, out, n_runs)


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def gain_intervals(res: Resampled, level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """Each teacher's gain over the base on its own column: (observed, low, high) of the bootstrap interval."""
    out = {}
    for col, teacher in TEACHER_OF.items():
        if teacher in res.value and "base" in res.value:
            gain = res.value[teacher][col] - res.value["base"][col]
            out[col] = (gain, *_interval(res.draws[teacher][col] - res.draws["base"][col], level))
    return out


def retention_intervals(
    res: Resampled, student: str, level: float = 0.95
) -> dict[str, tuple[float, float, float] | None]:
    """The student's share of each teacher's gain (``retention`` on the means): (observed, low, high).

    None where the teacher's gain is not clearly positive: when more than the interval's tail share of the draws
    has the teacher at or below the base, the ratio's interval would be made of divisions by noise."""
    out: dict[str, tuple[float, float, float] | None] = {}
    kept = retention(res.value, student)
    for col, teacher in TEACHER_OF.items():
        b, t, s = (res.draws.get(m, {}).get(col) for m in ("base", teacher, student))
        if b is None or t is None or s is None or kept[col] is None:
            out[col] = None
            continue
        gain = t - b
        if (gain <= 0).mean() > (1 - level) / 2:
            out[col] = None
            continue
        ratio = (s - b)[gain > 0] / gain[gain > 0]
        out[col] = (kept[col], *_interval(ratio, level))  # type: ignore[arg-type]
    return out


def across_seeds(summaries: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per model and column, the mean and the spread (max - min) over several runs' ``summary.json``."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    models = dict.fromkeys(name for s in summaries for name in s["results"])
    for name in models:
        cols = dict.fromkeys(c for s in summaries for c in s["results"].get(name, {}))
        for col in cols:
            vals = [s["results"][name][col] for s in summaries if col in s["results"].get(name, {})]
            if len(vals) == len(summaries):
                out.setdefault(name, {})[col] = (sum(vals) / len(vals), max(vals) - min(vals))
    return out


@dataclass(frozen=True)
class SeedVerdict:
    """One run's row of the test: each teacher's gain with its interval over the test prompts, each student's
    share of every gain (None: the gain is not measurable, its interval reaches 0) and whether it passes."""

    seed: int | None
    gains: dict[str, tuple[float, float, float]]
    kept: dict[str, dict[str, float | None]]  # student -> column -> share
    passed: dict[str, bool]  # student -> every measurable share >= the bar
    minutes: float | None


def seed_verdict(
    store: Path,
    summary: dict[str, Any],
    students: Sequence[str],
    *,
    bar: float = 0.9,
    resamples: int = 2000,
    level: float = 0.95,
) -> SeedVerdict:
    """The pre-registered test on one seed: a student passes when it keeps at least ``bar`` of each teacher's
    gain that the seed measures (a gain whose interval over the test prompts lies above 0)."""
    res = resample([store], ["base", *TEACHER_OF.values(), *students], resamples=resamples)
    gains = gain_intervals(res, level)
    kept: dict[str, dict[str, float | None]] = {}
    passed: dict[str, bool] = {}
    for student in students:
        if student not in res.value:
            continue
        shares = retention_intervals(res, student, level)
        kept[student] = {col: None if v is None else v[0] for col, v in shares.items()}
        passed[student] = all(v is None or v >= bar for v in kept[student].values())
    wall = summary.get("wall_seconds")
    return SeedVerdict(
        summary.get("seed"), gains, kept, passed, None if wall is None else wall / 60
    )
