"""The mini-world paper orchestrator's arithmetic: teacher-gain retention, the seeds table, the CLI's bad input.

The end-to-end run itself takes ~30 minutes on 2 cores; its figures are in the README, not in a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from results.store import Store
from tests.support.runs import TASKS, add_run, put
from trainer import paper, paper_stats

RESULTS = {
    "base": {"GenEval": 0.20, "OCR": 0.10, "Quality": 0.90},
    "grpo_geneval": {"GenEval": 0.40, "OCR": 0.10, "Quality": 0.90},
    "grpo_ocr": {"GenEval": 0.20, "OCR": 0.30, "Quality": 0.90},
    "grpo_quality": {"GenEval": 0.20, "OCR": 0.10, "Quality": 0.85},  # below the base
    "opd_merge": {"GenEval": 0.38, "OCR": 0.25, "Quality": 0.91},
}


def test_retention_is_the_share_of_each_teachers_gain() -> None:
    kept = paper_stats.retention(RESULTS, "opd_merge")
    # (0.38 - 0.20) / (0.40 - 0.20) = 0.9 ; (0.25 - 0.10) / (0.30 - 0.10) = 0.75
    assert kept["GenEval"] == pytest.approx(0.9)
    assert kept["OCR"] == pytest.approx(0.75)
    # the quality teacher did not beat the base: no gain to keep, so no ratio (not -0.2)
    assert kept["Quality"] is None


def test_retention_of_a_missing_model_is_none() -> None:
    assert paper_stats.retention(RESULTS, "opd_sft") == {
        "GenEval": None,
        "OCR": None,
        "Quality": None,
    }


def _summary(seed: int, geneval: float, ocr: float) -> dict:
    return {
        "seed": seed,
        "results": {
            "base": {"GenEval": 0.2, "OCR": 0.1},
            "grpo_geneval": {"GenEval": geneval, "OCR": ocr},
        },
    }


def test_across_seeds_mean_and_spread() -> None:
    agg = paper_stats.across_seeds([_summary(0, 0.30, 0.12), _summary(1, 0.40, 0.10)])
    mean, spread = agg["grpo_geneval"]["GenEval"]
    assert mean == pytest.approx(0.35) and spread == pytest.approx(0.10)
    mean, spread = agg["grpo_geneval"]["OCR"]
    assert mean == pytest.approx(0.11) and spread == pytest.approx(0.02)
    assert agg["base"]["GenEval"] == pytest.approx((0.2, 0.0))


def test_across_seeds_skips_a_column_one_seed_lacks() -> None:
    partial = _summary(1, 0.40, 0.10)
    del partial["results"]["grpo_geneval"]["OCR"]
    agg = paper_stats.across_seeds([_summary(0, 0.30, 0.12), partial])
    assert "OCR" not in agg["grpo_geneval"]  # a mean over one seed would pass for two


def test_seeds_table_renders_mean_and_spread() -> None:
    table = paper.render_seeds_table([_summary(0, 0.30, 0.12), _summary(1, 0.40, 0.10)])
    lines = table.splitlines()
    assert lines[0].startswith("| model (seeds 0, 1) | GenEval | OCR | Quality | Avg |")
    row = next(line for line in lines if line.startswith("| GRPO-GenEval |"))
    assert "0.350 ± 0.100" in row and "0.110 ± 0.020" in row
    assert row.endswith("| - | - |")  # no Quality, no Avg in these summaries


def test_summarize_cli(tmp_path, capsys) -> None:
    for seed, (g, o) in enumerate([(0.30, 0.12), (0.40, 0.10)]):
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "summary.json").write_text(json.dumps(_summary(seed, g, o)))
    paper.main(["--summarize", str(tmp_path / "s0"), str(tmp_path / "s1")])
    assert "0.350 ± 0.100" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        paper.main(["--summarize", str(tmp_path / "nope")])
    assert exit_.value.code == 2  # a user error: one line
    assert capsys.readouterr().err.strip().endswith("nope: run trainer.paper there first")


def test_a_retrained_stage_loses_its_earlier_evaluation(tmp_path) -> None:
    """Evaluation resumes by run id; a stage trained again must not find the old weights' rows."""
    from results.store import RunRecord, Store
    from trainer.paper import forget_evaluation

    store = tmp_path / "store.duckdb"
    forget_evaluation(store, "opd_merge")  # no store yet: nothing to do, nothing created
    assert not store.exists()
    s = Store(store)
    for name in ("opd_merge", "grpo_geneval"):
        s.add_run(RunRecord(name, "mini", f"runs/{name}/lora", {}, {}))
    s.close()
    forget_evaluation(store, "opd_merge")
    assert Store(store, read_only=True).run_ids() == ["grpo_geneval"]


# --- bootstrap intervals over runs and prompts ------------------------------------------------------------------

G_IMAGES = 24  # 12 prompts (2 per GenEval task) x 2 images
O_IMAGES = 6  # 6 OCR prompts x 1 image
G_GROUPS = [t for t in TASKS for _ in range(4)]


def _values(v: float | list[float], n: int) -> list[float]:
    return [float(v)] * n if isinstance(v, int | float) else list(v)


def _store(path, models: dict[str, dict]) -> Path:  # noqa: ANN001
    """A real store holding each model's mini evaluation: G (GenEval images), O (OCR), Qg / Qo (quality on each)."""
    s = Store(path)
    for run, v in models.items():
        add_run(s, run, {"mini_geneval": (12, 2), "mini_ocr": (6, 1)})
        g = _values(v["G"], G_IMAGES)
        put(s, run, "mini_geneval", "mini_geneval", g, G_GROUPS, per_prompt=2)
        put(
            s,
            run,
            "mini_geneval",
            "mini_quality",
            _values(v["Qg"], G_IMAGES),
            G_GROUPS,
            per_prompt=2,
        )
        put(s, run, "mini_ocr", "mini_ocr", _values(v["O"], O_IMAGES))
        put(s, run, "mini_ocr", "mini_quality", _values(v["Qo"], O_IMAGES))
    s.close()
    return Path(path)


def _world(student_g: float = 0.35) -> dict[str, dict]:
    # Quality pools both benchmarks' images: base (24 x 0.8 + 6 x 0.6) / 30 = 0.76, not (0.8 + 0.6) / 2
    return {
        "base": {"G": 0.2, "O": 0.1, "Qg": 0.8, "Qo": 0.6},
        "grpo_geneval": {"G": 0.4, "O": 0.1, "Qg": 0.8, "Qo": 0.6},
        "grpo_ocr": {"G": 0.2, "O": 0.3, "Qg": 0.8, "Qo": 0.6},
        "grpo_quality": {"G": 0.2, "O": 0.1, "Qg": 0.9, "Qo": 0.9},
        "opd_merge": {"G": student_g, "O": 0.3, "Qg": 0.83, "Qo": 0.8},
    }


def test_intervals_of_noise_free_scores_are_the_observed_values(tmp_path) -> None:
    """Every image of a model scores the same: no draw can move a mean, so each interval is one point."""
    res = paper_stats.resample(
        [_store(tmp_path / "s.duckdb", _world())],
        ["base", *paper_stats.TEACHER_OF.values(), "opd_merge"],
    )
    assert res.value["base"]["Quality"] == pytest.approx(0.76)
    assert res.value["opd_merge"]["Quality"] == pytest.approx((24 * 0.83 + 6 * 0.8) / 30)  # 0.824
    gains = paper_stats.gain_intervals(res)
    assert gains["GenEval"] == pytest.approx((0.2, 0.2, 0.2))
    assert gains["Quality"] == pytest.approx((0.14, 0.14, 0.14))
    kept = paper_stats.retention_intervals(res, "opd_merge")
    assert kept["GenEval"] == pytest.approx((0.75, 0.75, 0.75))
    assert kept["OCR"] == pytest.approx((1.0, 1.0, 1.0))
    q = (0.824 - 0.76) / (0.9 - 0.76)  # 0.457
    assert kept["Quality"] == pytest.approx((q, q, q))


def test_geneval_is_the_mean_of_task_means_under_resampling(tmp_path) -> None:
    # the base passes 1 of the 4 single_object images (prompt 0's first), nothing else: task means 1/4, 0, 0, ...
    world = _world()
    world["base"]["G"] = [1.0, 0.0, 0.0, 0.0] + [0.0] * 20
    res = paper_stats.resample([_store(tmp_path / "s.duckdb", world)], ["base"])
    assert res.value["base"]["GenEval"] == pytest.approx(0.25 / 6)
    # stratified: each draw holds 2 single_object prompts, so prompt 0 is in it 0, 1 or 2 times (task mean 0, 1/4,
    # 1/2); unstratified draws could hold it up to 12 times, or no single_object prompt at all
    assert set(np.round(res.draws["base"]["GenEval"] * 6, 6)) == {0.0, 0.25, 0.5}


def test_run_resampling_spans_the_seeds(tmp_path) -> None:
    """Two seeds, the student at 0.35 and 0.45 on GenEval (teacher gain 0.2): 75% and 125%, 100% on the mean.

    A draw takes seed 0 twice with probability 1/4, so the 2.5 and 97.5 percentiles are the two seeds' values."""
    stores = [_store(tmp_path / f"s{i}.duckdb", _world(g)) for i, g in enumerate((0.35, 0.45))]
    res = paper_stats.resample(stores, ["base", "grpo_geneval", "opd_merge"], resamples=4000)
    kept = paper_stats.retention_intervals(res, "opd_merge")["GenEval"]
    assert kept == pytest.approx((1.0, 0.75, 1.25))
    assert set(np.round(res.draws["opd_merge"]["GenEval"], 6)) == {0.35, 0.4, 0.45}
    # prompts alone: noise-free scores, so no spread; runs alone: the seeds' spread
    assert paper_stats.retention_intervals(
        paper_stats.resample(stores, ["base", "grpo_geneval", "opd_merge"], over=("prompts",)),
        "opd_merge",
    )["GenEval"] == pytest.approx((1.0, 1.0, 1.0))


def test_the_same_draws_pair_every_model(tmp_path) -> None:
    """A student whose images score exactly as the teacher's keeps 100% in every draw, however noisy the scores."""
    rng = np.random.default_rng(0)
    world = _world()
    # per prompt: image 0 fails for the base and passes for the teacher, image 1 is a coin flip for both
    noise = rng.integers(0, 2, G_IMAGES // 2).astype(float)
    base = [v for r in noise for v in (0.0, r)]
    teacher = [v for r in noise for v in (1.0, r)]
    world["base"]["G"], world["grpo_geneval"]["G"], world["opd_merge"]["G"] = base, teacher, teacher
    res = paper_stats.resample(
        [_store(tmp_path / "s.duckdb", world)], ["base", "grpo_geneval", "opd_merge"]
    )
    assert np.std(res.draws["grpo_geneval"]["GenEval"]) > 0.01  # the prompts do get resampled
    assert paper_stats.retention_intervals(res, "opd_merge")["GenEval"] == pytest.approx(
        (1.0, 1.0, 1.0)
    )


def test_a_teacher_not_clearly_above_the_base_gives_no_interval(tmp_path) -> None:
    world = _world()
    base = [0.0, 1.0] * (G_IMAGES // 2)
    # one image better: a gain on the observed prompts, none in the draws that leave its prompt out
    world["base"]["G"], world["grpo_geneval"]["G"] = base, [1.0] + base[1:]
    models = ["base", "grpo_geneval", "grpo_ocr", "opd_merge"]
    res = paper_stats.resample([_store(tmp_path / "s.duckdb", world)], models)
    # the point estimate exists
    assert paper_stats.retention(res.value, "opd_merge")["GenEval"] is not None
    assert paper_stats.retention_intervals(res, "opd_merge")["GenEval"] is None
    assert paper_stats.retention_intervals(res, "opd_merge")["OCR"] == pytest.approx(
        (1.0, 1.0, 1.0)
    )


def test_resample_leaves_out_a_model_one_store_lacks_and_checks_its_input(tmp_path) -> None:
    full = _store(tmp_path / "a.duckdb", _world())
    partial_world = _world()
    del partial_world["opd_merge"]
    partial = _store(tmp_path / "b.duckdb", partial_world)
    res = paper_stats.resample([full, partial], ["base", "grpo_geneval", "opd_merge"])
    assert set(res.value) == {"base", "grpo_geneval"}
    assert paper_stats.retention_intervals(res, "opd_merge")["GenEval"] is None
    with pytest.raises(ValueError, match="runs and/or prompts, not \\['seeds'\\]"):
        paper_stats.resample([full], ["base"], over=("seeds",))
    with pytest.raises(FileNotFoundError, match="no store at .*nope.duckdb: run trainer.paper"):
        paper_stats.resample([tmp_path / "nope.duckdb"], ["base"])


def test_summarize_prints_intervals_when_the_runs_have_their_stores(tmp_path, capsys) -> None:
    for seed, g in enumerate((0.35, 0.45)):
        run = tmp_path / f"s{seed}"
        run.mkdir()
        world = _world(g)
        _store(run / "store.duckdb", world)
        results = {
            m: {"GenEval": v["G"], "OCR": v["O"], "Quality": (24 * v["Qg"] + 6 * v["Qo"]) / 30}
            for m, v in world.items()
        }
        (run / "summary.json").write_text(json.dumps({"seed": seed, "results": results}))
    paper.main(["--summarize", str(tmp_path / "s0"), str(tmp_path / "s1"), "--resamples", "4000"])
    out = capsys.readouterr().out
    assert "95% bootstrap intervals (4000 draws over runs and prompts, 2 run(s))" in out
    assert "GRPO-GenEval gain on GenEval: +0.200 [+0.200, +0.200]" in out
    assert "Flow-OPD (Merge) keeps: GenEval 100% [75%, 125%], OCR 100% [100%, 100%]" in out


def test_summarize_gives_each_seed_its_verdict_and_time(tmp_path, capsys) -> None:
    """Seed 0's fixed-mix student keeps 75% of GenEval's gain (fail), seed 1's 125% (pass); the gap-routed student
    keeps all of every gain on both; on seed 1 the OCR teacher gains nothing, so no share of it is measured."""
    folders = []
    for seed, g in enumerate((0.35, 0.45)):
        run = tmp_path / f"s{seed}"
        run.mkdir()
        world = _world(g)
        world["opd_merge"].update(Qg=0.9, Qo=0.9)
        world["opd_merge_gap"] = {"G": 0.4, "O": 0.3, "Qg": 0.9, "Qo": 0.9}
        if seed == 1:
            world["grpo_ocr"]["O"] = 0.1
        _store(run / "store.duckdb", world)
        (run / "summary.json").write_text(
            json.dumps({"seed": seed, "results": {}, "wall_seconds": 1200 + 60 * seed})
        )
        folders.append(run)
    paper.main(["--summarize", *map(str, folders), "--resamples", "500"])
    out = capsys.readouterr().out
    assert (
        "| 0 | +0.200 [+0.200, +0.200] | +0.200 [+0.200, +0.200] | +0.140 [+0.140, +0.140] "
        "| 75% / 100% / 100% | **fail** | 100% / 100% / 100% | pass | 20.0 min |"
    ) in out
    assert "| 1 | +0.200 [+0.200, +0.200] | +0.000 [+0.000, +0.000] |" in out
    # pooled, a draw of seed 1 twice has no OCR gain: the teacher is flagged, not hidden
    assert "GRPO-OCR gain on OCR: +0.100 [+0.000, +0.200]  <- not above its noise" in out
    assert "GRPO-GenEval gain on GenEval: +0.200 [+0.200, +0.200]\n" in out
    assert "| 125% / n/m / 100% | pass | 100% / n/m / 100% | pass | 21.0 min |" in out
    assert (
        "Flow-OPD (Merge): 1 of 2 seeds pass (1 share(s) not measurable); "
        "Flow-OPD (Merge), gap routing: 2 of 2 seeds pass (1 share(s) not measurable)" in out
    )


# --- the run's jobs ---------------------------------------------------------------------------------------------


def _finish(root: Path, *names: str) -> None:
    for n in names:
        (root / n / "lora").mkdir(parents=True)
        (root / n / "manifest.json").write_text("{}")


def _by_name(jobs) -> dict:  # noqa: ANN001
    return {j.name: j for j in jobs}


def test_stages_wait_for_the_outputs_they_read() -> None:
    by = {s.name: s for s in paper.STAGES}
    assert paper.needs(by["grpo_mix"]) == ()
    assert set(paper.needs(by["merge"])) == {"grpo_geneval", "grpo_ocr", "grpo_quality"}
    assert set(paper.needs(by["opd_merge"])) == {
        "grpo_geneval",
        "grpo_ocr",
        "grpo_quality",
        "merge",
    }
    assert set(paper.needs(by["opd_merge_nomar"])) == {"grpo_geneval", "grpo_ocr", "merge"}
    assert set(paper.needs(by["opd_sft"])) == {"grpo_geneval", "grpo_ocr", "grpo_quality", "sft"}
    assert set(paper.needs(by["opd_sft_nomar"])) == {"grpo_geneval", "grpo_ocr", "sft"}
    # the gap-routed student reads what the fixed-mix one reads, and routes by the probe
    assert paper.needs(by["opd_merge_gap"]) == paper.needs(by["opd_merge"])
    assert "routing.mode=gap" in by["opd_merge_gap"].overrides


def test_a_fresh_run_trains_and_evaluates_every_stage(tmp_path) -> None:
    jobs = _by_name(paper.plan(tmp_path, seed=7))
    stages = [s.name for s in paper.STAGES]
    assert set(jobs) == {"eval/base", *stages, *(f"eval/{s}" for s in stages)}
    assert set(jobs["opd_sft"].after) == {"grpo_geneval", "grpo_ocr", "grpo_quality", "sft"}
    assert jobs["eval/opd_sft"].after == ("opd_sft",)
    # every evaluation holds the store; no training does
    assert {n for n, j in jobs.items() if j.exclusive == "store"} == {
        n for n in jobs if n.startswith("eval/")
    }
    # evaluations first, then the teachers every cold start waits for, the Mix baseline (nothing waits) last of them
    prio = {n: j.priority for n, j in jobs.items()}
    assert min(prio[n] for n in jobs if n.startswith("eval/")) > prio["grpo_geneval"]
    assert prio["grpo_geneval"] == prio["grpo_ocr"] == prio["grpo_quality"] == 7
    assert prio["merge"] == 3 and prio["sft"] == 2 and prio["grpo_mix"] == prio["opd_sft"] == 0
    # the recipe's own command with the run's folder and seed
    cmd = jobs["opd_merge"].cmd
    assert cmd[1:3] == ("-m", "trainer.opd") and f"init={tmp_path}/merge" in cmd
    assert "run.seed=7" in cmd and f"run.out={tmp_path}/opd_merge" in cmd
    ev = jobs["eval/grpo_ocr"].cmd
    assert ev[1:4] == ("-m", "flow_opd", "eval")
    assert ev[ev.index("--lora") + 1] == str(tmp_path / "grpo_ocr" / "lora")
    assert ev[ev.index("--run-id") + 1] == "grpo_ocr"
    assert "--lora" not in jobs["eval/base"].cmd


def test_a_resumed_run_evaluates_finished_stages_without_training_them(tmp_path) -> None:
    _finish(tmp_path, "grpo_geneval", "grpo_ocr", "grpo_quality", "merge")
    jobs = _by_name(paper.plan(tmp_path, seed=0))
    assert "grpo_ocr" not in jobs and "merge" not in jobs
    assert jobs["eval/merge"].after == () and jobs["eval/merge"].before is None
    assert jobs["opd_merge"].after == ()  # what it reads is there already
    assert jobs["opd_sft"].after == ("sft",)
    assert jobs["eval/sft"].before is not None  # trained again: its earlier rows go first


def test_only_adds_the_unfinished_stages_a_stage_needs(tmp_path, capsys) -> None:
    _finish(tmp_path, "grpo_geneval", "grpo_ocr")
    jobs = _by_name(paper.plan(tmp_path, seed=0, only=["opd_merge_nomar"]))
    assert set(jobs) == {
        "eval/base",
        "grpo_quality",
        "eval/grpo_quality",
        "merge",
        "eval/merge",
        "opd_merge_nomar",
        "eval/opd_merge_nomar",
    }  # the finished teachers it reads are neither trained nor evaluated again
    with pytest.raises(ValueError, match=r"unknown stages \['opd'\]; the stages are"):
        paper.plan(tmp_path, seed=0, only=["opd"])
    for args, said in (
        (["--only", "opd"], "unknown stages ['opd']"),
        (["--jobs", "0"], "--jobs must be >= 1"),
    ):
        with pytest.raises(SystemExit) as exit_:
            paper.main(["--out", str(tmp_path), *args])
        err = capsys.readouterr().err.strip()
        assert (
            exit_.value.code == 2 and err.startswith("error: ") and said in err and "\n" not in err
        )
    assert not (tmp_path / "logs").exists()  # nothing started
