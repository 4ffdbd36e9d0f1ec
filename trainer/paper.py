"""The Flow-OPD paper end to end in the mini world, on a CPU: every stage through the real recipes and harness.

Stages (each the recipe's own command, in its own process, config ``trainer/configs/mini_*.yaml``):

1. evaluate the base (``mini``),
2. Flow-GRPO teachers, one per task: GenEval, OCR, image quality (the paper's aesthetic / DeQA teacher),
3. GRPO-Mix (3 : 1 : 1 partitions, quality added by summation),
4. cold start: merge the teachers (linear delta average) and SFT on teacher samples,
5. Flow-OPD from the merge, with MAR (anchor: the quality teacher) and without, and from SFT with MAR,

then every output is evaluated by ``harness eval`` on the ``mini`` suite into one DuckDB store and the
paper-style table is printed from the store. Stages already finished in ``--out`` are skipped, so an interrupted
run continues where it stopped; a stage whose folder was deleted is trained again and its earlier evaluation rows
are dropped from the store first. ``--seed`` changes every stage's seed (run it twice for the spread).

Stages that do not need each other run side by side, ``--jobs`` processes at once sharing ``--threads`` CPU
threads (``trainer.jobs``; default two processes on the machine's cores); evaluations take the store in turn.
Each process writes ``--out/logs/<job>.log``; ``summary.json`` records when each job started, how long it ran and
on how many threads.

    python -m trainer.paper --out runs/paper-seed0 --seed 0
    python -m trainer.paper --summarize runs/paper-seed0 runs/paper-seed1   # mean ± spread over seeds

Both print each teacher's gain over the base and each Flow-OPD student's share of it with 95% bootstrap intervals
(``resample``: the seeds' runs and, within each benchmark, the test prompts are resampled; the same draws pair every
model), so a share can be told from the noise of a few seeds and a few hundred images.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowbase.errors import InputError, MissingError, UserError, one_line
from results.store import Store
from trainer.jobs import Job, run_jobs
from trainer.paper_stats import (
    TEACHER_OF,
    across_seeds,
    gain_intervals,
    resample,
    retention,
    retention_intervals,
    seed_verdict,
)

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class Stage:
    """One training stage: which recipe, which preset, which overrides (``{root}`` is the output folder)."""

    name: str
    recipe: str
    config: str
    overrides: tuple[str, ...] = ()
    label: str = ""
    steps: int | None = None  # optimizer steps (None: the preset's)


TEACHERS = (
    "teachers.geneval={root}/grpo_geneval",
    "teachers.ocr={root}/grpo_ocr",
)
ALL_TEACHERS = (*TEACHERS, "teachers.quality={root}/grpo_quality")

STAGES: tuple[Stage, ...] = (
    Stage("grpo_geneval", "grpo", "mini_grpo_geneval.yaml", label="GRPO-GenEval"),
    Stage("grpo_ocr", "grpo", "mini_grpo_ocr.yaml", label="GRPO-OCR"),
    Stage("grpo_quality", "grpo", "mini_grpo_quality.yaml", label="GRPO-Quality"),
    Stage("grpo_mix", "grpo", "mini_grpo_mix.yaml", label="GRPO-Mix"),
    Stage("merge", "merge", "mini_merge.yaml", ALL_TEACHERS, label="Merge (cold start)"),
    Stage("sft", "sft", "mini_sft.yaml", ALL_TEACHERS, label="SFT (cold start)"),
    Stage(
        "opd_merge",
        "opd",
        "mini_opd.yaml",
        (*TEACHERS, "anchor={root}/grpo_quality", "init={root}/merge"),
        label="Flow-OPD (Merge)",
    ),
    Stage(
        "opd_merge_gap",
        "opd",
        "mini_opd.yaml",
        (*TEACHERS, "anchor={root}/grpo_quality", "init={root}/merge", "routing.mode=gap"),
        label="Flow-OPD (Merge), gap routing",
    ),
    Stage(
        "opd_merge_nomar",
        "opd",
        "mini_opd.yaml",
        (*TEACHERS, "mar_lambda=0", "anchor=null", "init={root}/merge"),
        label="Flow-OPD (Merge) w/o MAR",
    ),
    Stage(
        "opd_sft",
        "opd",
        "mini_opd.yaml",
        (*TEACHERS, "anchor={root}/grpo_quality", "init={root}/sft"),
        label="Flow-OPD (SFT)",
    ),
    Stage(
        "opd_sft_nomar",
        "opd",
        "mini_opd.yaml",
        (*TEACHERS, "mar_lambda=0", "anchor=null", "init={root}/sft"),
        label="Flow-OPD (SFT) w/o MAR",
    ),
)


LABELS = {"base": "mini base"} | {s.name: s.label for s in STAGES}
# the Flow-OPD stages whose retention is reported
STUDENTS = ("opd_merge", "opd_merge_gap", "opd_merge_nomar", "opd_sft", "opd_sft_nomar")


def _done(folder: Path) -> bool:
    return (folder / "manifest.json").exists() and (folder / "lora").exists()


def train_command(stage: Stage, root: Path, seed: int, steps_scale: float) -> tuple[str, ...]:
    """``python -m trainer.<recipe> CONFIG overrides`` for one stage."""
    out = root / stage.name
    overrides = [o.format(root=root) for o in stage.overrides]
    if stage.recipe == "merge":
        overrides += [f"out={out}"]
    else:
        # in-loop evaluations (the teachers' checkpoint choice on validation prompts) into the stage's own store:
        # stages run side by side, and a DuckDB file takes one writer
        overrides += [f"run.out={out}", f"run.seed={seed}", f"run.eval_store={out / 'val.duckdb'}"]
        # an unfinished stage continues from its last checkpoint (a folder holding a run is refused otherwise)
        overrides += ["run.resume=auto"]
        if steps_scale != 1.0:
            overrides += [f"run.max_steps={_scaled_steps(stage, steps_scale)}"]
    return (
        sys.executable,
        "-m",
        f"trainer.{stage.recipe}",
        str(CONFIGS / stage.config),
        *overrides,
    )


def _scaled_steps(stage: Stage, scale: float) -> int:
    import yaml

    cfg = yaml.safe_load((CONFIGS / stage.config).read_text())
    return max(1, round(cfg["run"]["max_steps"] * scale))


def eval_command(name: str, lora: Path | None, store: Path, limit: int | None) -> tuple[str, ...]:
    """``harness eval`` of the base (lora None) or a stage's LoRA on the mini suite into the store, as run id
    ``name`` (10 Euler steps, 32 x 32, the protocol's seed 42: every model is evaluated on the same images' noise)."""
    cmd = [sys.executable, "-m", "flow_opd", "eval", "--model", "mini", "--benchmark", "mini"]
    cmd += ["--run-id", name, "--steps", "10", "--size", "32", "--batch-size", "64"]
    cmd += ["--store", str(store), "--no-progress"]
    if lora is not None:
        cmd += ["--lora", str(lora)]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    return tuple(cmd)


def needs(stage: Stage) -> tuple[str, ...]:
    """The stages whose output ``stage`` reads (the ``{root}/NAME`` in its overrides)."""
    names = re.findall(r"\{root\}/(\w+)", " ".join(stage.overrides))
    return tuple(dict.fromkeys(names))


def _downstream(name: str) -> int:
    """How many stages need ``name``'s output, directly or not (they wait for it: it starts first)."""
    found: set[str] = set()
    frontier = [name]
    while frontier:
        n = frontier.pop()
        for s in STAGES:
            if n in needs(s) and s.name not in found:
                found.add(s.name)
                frontier.append(s.name)
    return len(found)


def plan(
    root: Path,
    *,
    seed: int,
    steps_scale: float = 1.0,
    eval_limit: int | None = None,
    only: Sequence[str] | None = None,
) -> list[Job]:
    """The jobs of one run: each stage not finished in ``root`` (with the unfinished stages it needs when ``only``
    names some) and the evaluation of the base and of every selected stage into ``root/store.duckdb``.

    Evaluations write the one store, so they hold it in turn, and start before training (a stage's evaluation is
    short and nothing waits for it, so it never delays the rest). Among stages, the ones more stages wait for start
    first. A finished evaluation resumes to nothing; a stage trained again drops its earlier evaluation first."""
    by_name = {s.name: s for s in STAGES}
    unknown = sorted(set(only or ()) - set(by_name))
    if unknown:
        raise InputError(f"unknown stages {unknown}; the stages are {list(by_name)}")
    picked = set(by_name) if only is None else set(only)
    frontier = list(picked)
    while frontier:  # what an unfinished picked stage needs, unless it is finished
        s = by_name[frontier.pop()]
        if _done(root / s.name):
            continue
        for n in needs(s):
            if n not in picked and not _done(root / n):
                picked.add(n)
                frontier.append(n)
    store = root / "store.duckdb"
    logs = root / "logs"
    jobs = [
        Job(
            "eval/base",
            eval_command("base", None, store, eval_limit),
            logs / "eval-base.log",
            exclusive="store",
            priority=len(STAGES) + 1,
        )
    ]
    for s in STAGES:
        if s.name not in picked:
            continue
        trained = not _done(root / s.name)
        if trained:
            jobs.append(
                Job(
                    s.name,
                    train_command(s, root, seed, steps_scale),
                    logs / f"{s.name}.log",
                    after=tuple(n for n in needs(s) if not _done(root / n)),
                    priority=_downstream(s.name),
                )
            )
        jobs.append(
            Job(
                f"eval/{s.name}",
                eval_command(s.name, root / s.name / "lora", store, eval_limit),
                logs / f"eval-{s.name}.log",
                after=(s.name,) if trained else (),
                exclusive="store",
                priority=len(STAGES) + 1,
                # rows from an earlier training of this stage are stale
                before=functools.partial(forget_evaluation, store, s.name) if trained else None,
            )
        )
    return jobs


def forget_evaluation(store: Path, name: str) -> None:
    """Drop the store's rows of run ``name`` (evaluation resumes by run id, so a retrained stage must not find
    the previous weights' images there)."""
    if not store.exists():
        return
    gone = Store(store).delete_run(name)
    if gone["runs"]:
        log.info("%s was trained again: dropped its earlier evaluation %s", name, gone)


def collect(store: Path, names: list[str]) -> dict[str, dict[str, float]]:
    """Per run: GenEval (task mean), its six tasks, OCR, quality (mean over both benchmarks' images), Avg."""
    st = Store(store, read_only=True)
    out: dict[str, dict[str, float]] = {}
    for name in names:
        rows = st.benchmark_scores(run_ids=[name])
        got: dict[str, float] = {}
        quality, n_quality = 0.0, 0
        for r in rows:
            if r["scorer"] == "mini_geneval":
                got["GenEval"] = float(r["score"])
            elif r["scorer"] == "mini_ocr":
                got["OCR"] = float(r["score"])
            elif r["scorer"] == "mini_quality":
                quality += float(r["image_mean"]) * int(r["n_images"])
                n_quality += int(r["n_images"])
        if n_quality:
            got["Quality"] = quality / n_quality
        if {"GenEval", "OCR", "Quality"} <= set(got):
            got["Avg"] = (got["GenEval"] + got["OCR"] + got["Quality"]) / 3
        for g in st.group_scores("mini_geneval", run_ids=[name]):
            if g["scorer"] == "mini_geneval":
                got[f"geneval/{g['grp']}"] = float(g["mean"])
        out[name] = got
    return out


COLUMNS = ("GenEval", "OCR", "Quality", "Avg")


def _markdown(first: str, cells: dict[str, dict[str, str]]) -> str:
    """A Markdown table: one row per model (its label), the COLUMNS, "-" where a cell is missing."""
    lines = [f"| {first} | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, row in cells.items():
        shown = [row.get(c, "-") for c in COLUMNS]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def render_table(results: dict[str, dict[str, float]]) -> str:
    """The paper's main table, mini edition (Markdown)."""
    cells = {name: {c: f"{v:.3f}" for c, v in vals.items()} for name, vals in results.items()}
    return _markdown("model", cells)


def _print_retention(student: str, kept: dict[str, float | None]) -> None:
    label = LABELS.get(student, student)
    shown = ", ".join(
        f"{k} {v:.0%}" if v is not None else f"{k} - (teacher not above base)"
        for k, v in kept.items()
    )
    print(f"{label} keeps of each teacher's gain: {shown}")


def print_intervals(stores: Sequence[Path], *, resamples: int = 2000, level: float = 0.95) -> None:
    """Teachers' gains and the students' shares of them, with bootstrap intervals over runs and prompts."""
    res = resample(stores, ["base", *TEACHER_OF.values(), *STUDENTS], resamples=resamples)
    what = "runs and prompts" if res.runs > 1 else "prompts"
    print(f"{level:.0%} bootstrap intervals ({resamples} draws over {what}, {res.runs} run(s)):")
    for col, (g, lo, hi) in gain_intervals(res, level).items():
        label = LABELS.get(TEACHER_OF[col], TEACHER_OF[col])
        said = "" if lo > 0 else "  <- not above its noise: this teacher did not learn here"
        print(f"  {label} gain on {col}: {g:+.3f} [{lo:+.3f}, {hi:+.3f}]{said}")
    for student in STUDENTS:
        if student not in res.value:
            continue
        cells = []
        for col, v in retention_intervals(res, student, level).items():
            cells.append(
                f"{col} {v[0]:.0%} [{v[1]:.0%}, {v[2]:.0%}]"
                if v is not None
                else f"{col} - (teacher not clearly above base)"
            )
        print(f"  {LABELS.get(student, student)} keeps: " + ", ".join(cells))


def render_seeds_table(summaries: list[dict[str, Any]]) -> str:
    """The main table over seeds: ``mean ± spread`` (spread = max - min), Markdown."""
    agg = across_seeds(summaries)
    cells = {
        name: {c: f"{mean:.3f} ± {spread:.3f}" for c, (mean, spread) in vals.items()}
        for name, vals in agg.items()
    }
    seeds = ", ".join(str(s.get("seed")) for s in summaries)
    return _markdown(f"model (seeds {seeds})", cells)


# the students the pre-registered test judges, per seed
JUDGED = ("opd_merge", "opd_merge_gap")


def render_verdicts(folders: Sequence[Path], *, resamples: int = 2000) -> str:
    """One row per seed (Markdown): each teacher's gain with its 95% interval over the test prompts, each judged
    student's share of each gain ("n/m": the gain is not measurable on this seed), pass or fail (every measurable
    share >= 90%) and the run's time; then how many seeds each student passes."""
    head = ["seed", *(f"{c} gain" for c in TEACHER_OF)]
    for s in JUDGED:
        head += [f"{LABELS[s]} keeps", "pass"]
    lines = ["| " + " | ".join([*head, "time"]) + " |", "|---" * (len(head) + 1) + "|"]
    passes = dict.fromkeys(JUDGED, 0)
    ran = dict.fromkeys(JUDGED, 0)
    unmeasured = dict.fromkeys(JUDGED, 0)
    for f in folders:
        summary = json.loads((f / "summary.json").read_text())
        v = seed_verdict(f / "store.duckdb", summary, JUDGED, resamples=resamples)
        row = [str(v.seed)]
        for col in TEACHER_OF:
            g = v.gains.get(col)
            row.append("-" if g is None else f"{g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}]")
        for s in JUDGED:
            if s not in v.kept:
                row += ["-", "-"]
                continue
            ran[s] += 1
            passes[s] += v.passed[s]
            unmeasured[s] += sum(x is None for x in v.kept[s].values())
            row.append(" / ".join("n/m" if x is None else f"{x:.0%}" for x in v.kept[s].values()))
            row.append("pass" if v.passed[s] else "**fail**")
        row.append("-" if v.minutes is None else f"{v.minutes:.1f} min")
        lines.append("| " + " | ".join(row) + " |")
    tally = "; ".join(
        f"{LABELS[s]}: {passes[s]} of {ran[s]} seeds pass"
        + (f" ({unmeasured[s]} share(s) not measurable)" if unmeasured[s] else "")
        for s in JUDGED
        if ran[s]
    )
    return "\n".join(lines) + ("\n\n" + tally if tally else "")


def _exit_user_error(e: UserError) -> None:
    """A user error of the command line: one line, exit status 2 (as every command of the project)."""
    sys.stderr.write(f"error: {one_line(e)}\n")
    raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        prog="python -m trainer.paper",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--out", type=Path, default=Path("runs/paper"), help="folder for every stage and the store"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of every stage")
    ap.add_argument(
        "--steps-scale", type=float, default=1.0, help="scale every stage's optimizer steps"
    )
    ap.add_argument(
        "--eval-limit", type=int, default=None, help="prompts per benchmark in evaluation"
    )
    ap.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="run only these stages (and the unfinished stages they need)",
    )
    cores = os.cpu_count() or 1
    ap.add_argument(
        "--jobs",
        type=int,
        default=min(2, cores),
        help="processes at once (stages and evaluations side by side; default min(2, cores))",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=cores,
        help="CPU threads shared by the processes running at once (default: the cores)",
    )
    ap.add_argument(
        "--summarize",
        nargs="+",
        type=Path,
        default=None,
        metavar="RUN",
        help="print mean ± spread over finished runs (their summary.json) and exit",
    )
    ap.add_argument(
        "--resamples",
        type=int,
        default=2000,
        help="bootstrap draws for the intervals of the gains and of the shares kept",
    )
    args = ap.parse_args(argv)
    if args.summarize:
        missing = [str(f) for f in args.summarize if not (f / "summary.json").exists()]
        if missing:
            _exit_user_error(
                MissingError(
                    f"no summary.json in {', '.join(missing)}: run trainer.paper there first"
                )
            )
        summaries = [json.loads((f / "summary.json").read_text()) for f in args.summarize]
        print(render_seeds_table(summaries))
        if all((f / "store.duckdb").exists() for f in args.summarize):
            print()
            print(render_verdicts(args.summarize, resamples=args.resamples))
            print()
        means = {
            m: {c: v[0] for c, v in cols.items()} for m, cols in across_seeds(summaries).items()
        }
        for student in STUDENTS:
            if student in means:
                _print_retention(student, retention(means, student))
        stores = [f / "store.duckdb" for f in args.summarize]
        if all(p.exists() for p in stores):
            print_intervals(stores, resamples=args.resamples)
        return {"summaries": summaries}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = args.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    store = root / "store.duckdb"
    try:
        jobs = plan(
            root,
            seed=args.seed,
            steps_scale=args.steps_scale,
            eval_limit=args.eval_limit,
            only=args.only,
        )
    except UserError as e:
        _exit_user_error(e)
    start = time.perf_counter()
    try:
        ran = run_jobs(jobs, slots=args.jobs, threads=args.threads)
    except UserError as e:  # --jobs / --threads below 1
        _exit_user_error(e)
    except RuntimeError as e:
        raise SystemExit(
            f"{e}\nrun the same command again to continue: finished stages are kept"
        ) from None

    names = ["base"] + [s.name for s in STAGES if _done(root / s.name)]
    results = collect(store, names)
    table = render_table(results)
    keep = {s: retention(results, s) for s in STUDENTS if s in results}
    summary = {
        "seed": args.seed,
        "results": results,
        "retention": keep,
        "seconds": {name: r.seconds for name, r in ran.items()},
        "jobs": {name: {"start": r.start, "threads": r.threads} for name, r in ran.items()},
        "slots": args.jobs,
        "wall_seconds": time.perf_counter() - start,
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    print(table)
    for s, r in keep.items():
        _print_retention(s, r)
    print_intervals([store], resamples=args.resamples)
    print(f"wall time {summary['wall_seconds'] / 60:.1f} min -> {root}")
    return summary


if __name__ == "__main__":
    main()
