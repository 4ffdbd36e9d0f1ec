"""The four recipes on the offline tiny SD3, on CPU: the README chain, resume, OPD behaviour, bad configs, DDP."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flowmodels.adapters import LoraSpec, add_lora, load_adapter
from flowmodels.models import load_model
from flowmodels.sampling import rollout, velocity_at
from flowmodels.tiny import default_tiny_dir
from tests.support.training import QUIET, synthetic_lora
from trainer import grpo, merge, opd, sft
from trainer.config import ConfigError, load
from trainer.metrics import read_metrics
from trainer.objectives import routing_weights

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "trainer" / "configs"


@contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _lora_state(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


# -- the README chain: every recipe, two steps, from its preset ------------------------------------------------------
@pytest.fixture(scope="module")
def chain(tiny_home, tmp_path_factory) -> Path:
    """grpo_tiny -> grpo_tiny_mix -> merge_tiny -> sft_tiny -> opd_tiny, in a fresh workspace, as the README runs them."""
    ws = tmp_path_factory.mktemp("workspace")
    with _cwd(ws):
        grpo.main(load(grpo.Config, CONFIGS / "grpo_tiny.yaml"))  # TensorBoard on, as documented
        grpo.main(load(grpo.Config, CONFIGS / "grpo_tiny_mix.yaml", QUIET))
        merge.main(load(merge.Config, CONFIGS / "merge_tiny.yaml"))
        sft.main(load(sft.Config, CONFIGS / "sft_tiny.yaml", QUIET))
        opd.main(load(opd.Config, CONFIGS / "opd_tiny.yaml", QUIET))
    return ws


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_grpo_runs_two_steps_and_learns_something(chain):
    run = chain / "runs" / "grpo_tiny"
    m = _manifest(run)
    assert (m["recipe"], m["step"], m["world_size"], m["base_model"]) == ("grpo", 2, 1, "tiny")
    assert (run / "config.yaml").exists() and (
        run / "checkpoints" / "step_000002" / "state.json"
    ).exists()
    assert any((run / "logs").rglob("events.out.tfevents.*"))  # TensorBoard by default
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss/total"])) for r in rows)
    # the sanity law: the first update is fully on-policy, so every ratio is exactly 1
    assert rows[0]["train/approx_kl"] == 0.0 and rows[0]["train/clipfrac"] == 0.0
    assert _moved_b(run / "lora")  # B starts at 0: training moved it


def _moved_b(lora: Path) -> bool:
    """Every LoRA B moved off 0, except the last block's context query (SD3's final block discards the context
    stream, so that projection gets no gradient)."""
    state = _lora_state(lora)
    last = max(int(k.split("transformer_blocks.")[1].split(".")[0]) for k in state)
    unused = f"transformer_blocks.{last}.attn.add_q_proj.lora_B"
    moved = [k for k, v in state.items() if "lora_B" in k and unused not in k and v.abs().sum() > 0]
    return len(moved) == sum(1 for k in state if "lora_B" in k and unused not in k) > 0


def test_grpo_mix_uses_each_partitions_reward(chain):
    rows = read_metrics(chain / "runs" / "grpo_tiny_mix")
    # epochs 0 and 1 are GenEval partitions (3 : 1 with OCR): brightness only, never the OCR task's colour reward
    assert all("reward/brightness" in r and "reward/colour" not in r for r in rows)


def test_grpo_with_decoupled_rewards_learns_from_each_reward(tiny_home, tmp_path):
    """GDPO's normalisation in the loop, two rewards at 0.7 / 0.3 on the first (GenEval) partition. B starts at 0
    and the KL's gradient is 0 there, so B moves only if the decoupled advantages are not all 0."""
    out = tmp_path / "grpo_decoupled"
    with _cwd(tmp_path):
        grpo.main(
            load(
                grpo.Config,
                CONFIGS / "grpo_tiny_mix.yaml",
                [
                    *QUIET,
                    "reward_norm=decoupled",
                    "task_rewards.geneval={brightness: 0.7, colour: 0.3}",
                    f"run.out={out}",
                    "run.max_steps=1",
                ],
            )
        )
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1]
    assert {"reward/brightness", "reward/colour"} <= set(rows[0])
    assert _moved_b(out / "lora")


def test_merge_and_sft_and_opd_hand_over_through_run_folders(chain):
    runs = chain / "runs"
    m = _manifest(runs / "merge_tiny")
    assert m["output"] == "lora" and m["rank"] == 8 and m["base_model"] == "tiny"
    s = _manifest(runs / "sft_tiny")
    assert s["step"] == 2 and (runs / "sft_tiny" / "teacher_samples" / "rank0_of1.pt").exists()
    assert all(
        torch.isfinite(torch.tensor(r["loss/flow_matching"]))
        for r in read_metrics(runs / "sft_tiny")
    )
    o = _manifest(runs / "opd_tiny")
    assert o["step"] == 2 and o["parent"]["path"] == "runs/merge_tiny"
    assert o["parent"]["run_id"] == m["run_id"]
    assert json.loads((runs / "opd_tiny" / "lora" / "adapter_config.json").read_text())["r"] == 8
    rows = read_metrics(runs / "opd_tiny")
    assert all(r["opd/gap"] > 0 and r["loss/mar"] > 0 for r in rows)


# -- resume ---------------------------------------------------------------------------------------------------------
def test_interrupted_and_resumed_run_ends_with_the_same_weights(tiny_home, tmp_path):
    base = [*QUIET, "run.save_every=2", "run.max_steps=4", "sample.groups_per_epoch=1"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    grpo.main(load(grpo.Config, CONFIGS / "grpo_tiny.yaml", [*base, f"run.out={straight}"]))
    grpo.main(
        load(
            grpo.Config, CONFIGS / "grpo_tiny.yaml", [*base, f"run.out={split}", "run.max_steps=2"]
        )
    )
    assert _manifest(split)["step"] == 2
    grpo.main(
        load(
            grpo.Config, CONFIGS / "grpo_tiny.yaml", [*base, f"run.out={split}", "run.resume=auto"]
        )
    )
    assert _manifest(split)["step"] == 4
    for rel in ("lora/adapter_model.safetensors", "checkpoints/step_000004/student.safetensors"):
        a, b = load_file(str(straight / rel)), load_file(str(split / rel))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rel
    assert (
        _manifest(split)["run_id"]
        == json.loads((split / "checkpoints/step_000004/state.json").read_text())["run_id"]
    )


# -- OPD ------------------------------------------------------------------------------------------------------------
def _opd(tmp_path: Path, *overrides: str) -> Path:
    out = tmp_path / "opd"
    cfg = load(
        opd.Config,
        CONFIGS / "opd_tiny.yaml",
        [
            *QUIET,
            "init=null",
            "anchor=null",
            f"run.out={out}",
            "optim.weight_decay=0",
            "run.ema=false",
            *overrides,
        ],
    )
    opd.main(cfg)
    return out


def test_teacher_equal_to_student_gives_exactly_zero_loss(tiny_home, tmp_path):
    teacher = synthetic_lora(tmp_path / "teacher", seed=1, scale=0.3)
    out = _opd(
        tmp_path,
        f"init={teacher}",
        f"teachers={{geneval: {teacher}}}",
        "datasets={geneval: harness/prompts/geneval_train/train_metadata.jsonl}",
    )
    rows = read_metrics(out)
    assert len(rows) == 2 and all(r["loss/opd"] == 0.0 and r["opd/gap"] == 0.0 for r in rows)


def test_task_mix_decides_which_tasks_prompts_the_student_sees(tiny_home, tmp_path):
    # the student starts as the GenEval teacher: GenEval prompts cost nothing, OCR prompts (teacher b) do
    a = synthetic_lora(tmp_path / "a", seed=1, scale=0.3)
    b = synthetic_lora(tmp_path / "b", seed=4, scale=0.3)
    common = (f"init={a}", f"teachers={{geneval: {a}, ocr: {b}}}")
    only_geneval = read_metrics(_opd(tmp_path / "g", *common, "task_mix={geneval: 1, ocr: 0}"))
    assert len(only_geneval) == 2 and all(r["loss/opd"] == 0.0 for r in only_geneval)
    both = read_metrics(_opd(tmp_path / "both", *common, "task_mix={geneval: 1, ocr: 1}"))
    assert all(r["loss/opd"] > 0 for r in both)
    assert _manifest(tmp_path / "both" / "opd")["task_mix"] == {"geneval": 1, "ocr": 1}


def test_each_prompt_is_routed_to_its_task_teacher(tiny_home, tmp_path):
    a = synthetic_lora(tmp_path / "a", seed=2, scale=0.5)
    b = synthetic_lora(tmp_path / "b", seed=3, scale=0.5)
    model = load_model(default_tiny_dir())
    net = model.denoiser
    add_lora(net, "student", LoraSpec(rank=4, alpha=8), trainable=True)
    load_adapter(net, a, "teacher_geneval")
    load_adapter(net, b, "teacher_ocr")
    tasks = ["ocr", "geneval", "ocr", "geneval", "mix"]
    ro = rollout(
        model,
        [f"p{i}" for i in range(5)],
        list(range(5)),
        steps=3,
        height=64,
        width=64,
        decode=False,
    )
    names = ["teacher_geneval", "teacher_ocr"]
    soft = {
        "mix": {"teacher_geneval": 1.0, "teacher_ocr": 3.0}
    }  # optional soft weights for one task
    alpha = routing_weights(
        tasks, names, {"geneval": "teacher_geneval", "ocr": "teacher_ocr"}, soft
    )
    got, no_anchor = opd.labels(model, net, ro, 1, names, alpha, anchor=False)
    assert no_anchor is None
    expected = {}
    for name in names:
        from flowmodels.adapters import using

        with torch.no_grad(), using(net, name):
            expected[name] = velocity_at(model, ro, 1)
    for i, task in enumerate(tasks[:4]):
        mine, other = f"teacher_{task}", names[1 - names.index(f"teacher_{task}")]
        assert torch.allclose(got[i], expected[mine][i], atol=1e-5)
        assert not torch.allclose(got[i], expected[other][i], atol=1e-3)
    blend = 0.25 * expected["teacher_geneval"][4] + 0.75 * expected["teacher_ocr"][4]
    assert torch.allclose(got[4], blend, atol=1e-5)


def test_merge_into_the_base_equals_the_merged_lora(tiny_home, tmp_path):
    """output=merged (deltas added into the weights) and output=lora (SVD factors) give the same model."""
    from trainer.folders import resolve_model

    a = synthetic_lora(tmp_path / "a", seed=8, scale=0.3)
    b = synthetic_lora(tmp_path / "b", seed=9, scale=0.3)
    teachers = f"teachers={{a: {a}, b: {b}}}"
    merge.main(load(merge.Config, None, [teachers, f"out={tmp_path / 'as_lora'}"]))
    merge.main(
        load(
            merge.Config,
            None,
            [teachers, "output=merged", "model=tiny", f"out={tmp_path / 'full'}"],
        )
    )
    assert _manifest(tmp_path / "full")["output"] == "merged"
    full = load_model(
        resolve_model(str(tmp_path / "full"))
    )  # a run folder with merged/ loads as a model
    with_lora = load_model(default_tiny_dir())
    load_adapter(with_lora.denoiser, tmp_path / "as_lora" / "lora", "merged")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = full.encode(["a cat", "a dog"])
    with torch.no_grad():
        v_full, v_lora = full.velocity(x, 0.6, cond), with_lora.velocity(x, 0.6, cond)
        v_base = load_model(default_tiny_dir()).velocity(x, 0.6, cond)
    assert torch.allclose(v_full, v_lora, atol=1e-5)
    assert not torch.allclose(v_full, v_base, atol=1e-3)


def _training_prompts() -> list[str]:
    """Two prompts of each task the OPD tests train on (the student is only asked to match on those tasks)."""
    from harness.benchmarks import load_prompt_file
    from trainer.data import (
        resolve_prompt_path,  # builds a generated training set on first use (fresh checkout)
    )

    files = ("geneval_train/train_metadata.jsonl", "ocr_train/train.txt")
    return [
        it.prompt
        for f in files
        for it in load_prompt_file(resolve_prompt_path(f"harness/prompts/{f}"), limit=2)
    ]


PROBE_PROMPTS = _training_prompts()


def _probe_gap(student: Path | None, target: Path) -> float:
    """``E_t w(t) ||v_student - v_target||^2`` on fixed-seed SDE rollouts of the student (None: a fresh student,
    i.e. the base): its own states, without the step-to-step sampling noise of the training metric."""
    from flowmodels.adapters import using
    from trainer.objectives import velocity_gap, velocity_weight

    model = load_model(default_tiny_dir())
    net = model.denoiser
    load_adapter(net, target, "target")
    if student is not None:
        load_adapter(net, student, "student")
    with torch.no_grad():
        with using(net, "student" if student is not None else None):  # the student's own states
            ro = rollout(
                model,
                PROBE_PROMPTS,
                list(range(len(PROBE_PROMPTS))),
                steps=4,
                height=64,
                width=64,
                decode=False,
            )
        total = 0.0
        for j in range(3):
            with using(net, "student" if student is not None else None):
                v = velocity_at(model, ro, j)
            with using(net, "target"):
                v_t = velocity_at(model, ro, j)
            vw = velocity_weight(
                ro.sigmas[j], ro.sigmas[j + 1], 0.7, float(ro.sigmas[1]), "exact_mean"
            )
            total += float(velocity_gap(v, v_t, vw).mean())
    return total / 3


@pytest.mark.slow
def test_opd_learns_the_velocity_gap_falls(tiny_home, tmp_path):
    teacher = synthetic_lora(tmp_path / "teacher", seed=4, scale=0.3)
    out = _opd(
        tmp_path,
        f"teachers={{geneval: {teacher}, ocr: {teacher}}}",
        "run.max_steps=10",
        "optim.lr=1e-2",
        "lora.rank=4",
        "lora.alpha=8",
    )
    gaps = [r["opd/gap"] for r in read_metrics(out)]  # on the states each step's student visited
    assert len(gaps) == 10 and sum(gaps[-3:]) < sum(gaps[:3]), gaps
    # the same measure on a fixed set of the student's own trajectories, before and after: no sampling noise
    before, after = _probe_gap(None, teacher), _probe_gap(out / "lora", teacher)
    assert after < 0.7 * before, (before, after)


@pytest.mark.slow
def test_mar_pulls_toward_the_anchor(tiny_home, tmp_path):
    base_like = synthetic_lora(
        tmp_path / "zero", seed=5, scale=0.0
    )  # B = 0: the teacher is the base itself
    anchor = synthetic_lora(tmp_path / "anchor", seed=6, scale=0.3)
    common = [
        f"teachers={{geneval: {base_like}, ocr: {base_like}}}",
        f"anchor={anchor}",
        "run.max_steps=6",
        "optim.lr=2e-2",
        "lora.rank=4",
        "lora.alpha=8",
    ]
    pulled = _opd(tmp_path / "on", *common, "mar_lambda=4.0")
    assert all(r["loss/mar"] > 0 and r["loss/opd"] >= 0 for r in read_metrics(pulled))
    before, after = _probe_gap(None, anchor), _probe_gap(pulled / "lora", anchor)
    assert after < 0.9 * before, (before, after)  # measured: 0.213 -> 0.173
    # without MAR the student sits on its teacher (the base): zero gradient, so it does not move at all
    off = _opd(tmp_path / "off", *common, "mar_lambda=0", "run.max_steps=2")
    assert all(t.abs().max() == 0 for k, t in _lora_state(off / "lora").items() if "lora_B" in k)


def test_mar_sigma_max_anchors_only_the_late_steps(tiny_home, tmp_path):
    # the teacher is the base itself; trained steps 0-2 start at noise levels sig[0:3]
    base_like = synthetic_lora(tmp_path / "zero", seed=5, scale=0.0)
    anchor = synthetic_lora(tmp_path / "anchor", seed=6, scale=0.3)
    sig = [float(s) for s in load_model(default_tiny_dir()).sigmas(4)]
    common = [
        f"teachers={{geneval: {base_like}, ocr: {base_like}}}",
        f"anchor={anchor}",
        "mar_lambda=4.0",
        "run.max_steps=1",  # one optimizer step: every micro-step sees the same (untrained) student and rollouts
        "lora.rank=4",
        "lora.alpha=8",
    ]

    def first_step(name: str, cut: float) -> tuple[dict, Path]:
        out = _opd(tmp_path / name, *common, f"mar_sigma_max={cut}")
        return read_metrics(out)[0], out

    every, _ = first_step("every", 1.0)
    late, _ = first_step("late", (sig[1] + sig[2]) / 2)  # step 2 only
    none, out = first_step("none", sig[2] / 2)  # below every trained step
    assert 0 < late["loss/mar"] < every["loss/mar"], (late["loss/mar"], every["loss/mar"])
    # loss/mar is MAR's share of the step's loss: lambda x the anchored micro-steps' gaps / all 6 micro-steps (2
    # batches x 3 trained steps); opd/anchor_gap is the mean gap over the anchored ones only (6, then 2 of them)
    assert every["loss/mar"] == pytest.approx(4.0 * every["opd/anchor_gap"], rel=1e-5)
    assert late["loss/mar"] == pytest.approx(4.0 * late["opd/anchor_gap"] * 2 / 6, rel=1e-5)
    assert none["loss/mar"] == 0.0 and "opd/anchor_gap" not in none
    # nothing anchored and the teacher is the base: no gradient, the student does not move
    assert all(t.abs().max() == 0 for k, t in _lora_state(out / "lora").items() if "lora_B" in k)
    assert json.loads((out / "manifest.json").read_text())["mar_sigma_max"] == sig[2] / 2


def test_step_weight_uniform_drops_the_kl_weight(tiny_home, tmp_path):
    # one trained step (an SDE window of 1 on step 1), one optimizer step, the same seed: the same rollouts and
    # the same untrained student, so the squared gap g is the same in both runs. "kl" reports w(t) g, "uniform" g.
    teacher = synthetic_lora(tmp_path / "teacher", seed=4, scale=0.3)
    common = [
        f"teachers={{geneval: {teacher}, ocr: {teacher}}}",
        "run.max_steps=1",
        "sample.sde_window_size=1",
        "sample.sde_window_range=[1, 2]",
        "lora.rank=4",
        "lora.alpha=8",
    ]
    kl_out = _opd(tmp_path / "kl", *common)
    uniform_out = _opd(tmp_path / "uniform", *common, "step_weight=uniform")
    kl, uniform = read_metrics(kl_out)[0], read_metrics(uniform_out)[0]
    # the manifest says which weighting trained the student
    for out, name in ((kl_out, "kl"), (uniform_out, "uniform")):
        assert json.loads((out / "manifest.json").read_text())["step_weight"] == name
    sig = [float(s) for s in load_model(default_tiny_dir()).sigmas(4)]
    t, dt = sig[1], sig[1] - sig[2]
    sigma_t = 0.7 * math.sqrt(t / (1 - t))  # Flow-GRPO's std_dev_t at a = 0.7 (docs/method.md 2)
    w = dt / 2 * (sigma_t * (1 - t) / (2 * t) + 1 / sigma_t) ** 2  # docs/method.md 5.4, by hand
    assert uniform["opd/gap"] > 0
    assert kl["opd/gap"] == pytest.approx(w * uniform["opd/gap"], rel=1e-4), (kl, uniform, w)
    assert uniform["loss/opd"] == pytest.approx(uniform["opd/gap"], rel=1e-6)


# -- bad configs fail before any work ------------------------------------------------------------------------------
def test_unknown_reward_fails_before_any_work(tiny_home, tmp_path):
    cfg = load(
        grpo.Config,
        CONFIGS / "grpo_tiny.yaml",
        [*QUIET, "rewards={brightnes: 1.0}", f"run.out={tmp_path / 'r'}"],
    )
    with pytest.raises(
        ConfigError, match="unknown reward: unknown scorer 'brightnes' \\(did you mean brightness"
    ):
        grpo.main(cfg)
    assert not (tmp_path / "r").exists()


def test_teacher_on_another_base_fails_before_any_work(tiny_home, tmp_path):
    alien = synthetic_lora(
        tmp_path / "alien", seed=7, scale=0.1, base="stabilityai/stable-diffusion-3.5-large"
    )
    cfg = load(
        opd.Config,
        CONFIGS / "opd_tiny.yaml",
        [
            *QUIET,
            "init=null",
            f"teachers={{geneval: {alien}, ocr: {alien}}}",
            "anchor=null",
            f"run.out={tmp_path / 'r'}",
        ],
    )
    with pytest.raises(
        ConfigError,
        match="teachers.geneval .* is a LoRA for base model 'stabilityai/stable-diffusion-3.5-large'",
    ):
        opd.main(cfg)
    assert not (tmp_path / "r").exists()


def test_missing_teacher_folder_fails_before_any_work(tiny_home, tmp_path):
    cfg = load(
        opd.Config,
        CONFIGS / "opd_tiny.yaml",
        [
            *QUIET,
            "init=null",
            "anchor=null",
            f"teachers={{geneval: {tmp_path}/nope, ocr: {tmp_path}/nope}}",
            f"run.out={tmp_path / 'r'}",
        ],
    )
    with pytest.raises(ConfigError, match="teachers.geneval"):
        opd.main(cfg)
    assert not (tmp_path / "r").exists()


# -- distributed ----------------------------------------------------------------------------------------------------
def _accelerate() -> str:
    exe = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    if not Path(exe).exists():
        pytest.skip("accelerate CLI not found")
    return exe


def test_two_process_ddp_on_cpu_keeps_replicas_identical(tiny_home, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        _accelerate(),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
        "-m",
        "trainer.grpo",
        str(CONFIGS / "grpo_tiny.yaml"),
        f"run.out={out}",
        *QUIET,
        "run.save_every=0",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLOW_OPD_HOME": str(tiny_home),
        "CUDA_VISIBLE_DEVICES": "",
    }
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = _manifest(out)
    assert m["world_size"] == 2, "accelerate ran fewer processes than asked"
    assert m["replicas_identical"] is True and m["step"] == 2
    assert _moved_b(out / "lora")
    # rank 0 alone reports: each progress line and each INFO line once, rank 1 silent
    for line in ("step 1/2  reward", "step 2/2  reward", "grpo: run ", "grpo done: "):
        assert proc.stderr.count(line) == 1, (line, proc.stderr[-3000:])


# -- slow: the README commands verbatim, and a learning curve -----------------------------------------------------
README_COMMANDS = [
    ["-m", "trainer.grpo", "trainer/configs/grpo_tiny.yaml"],
    ["-m", "trainer.grpo", "trainer/configs/grpo_tiny_mix.yaml"],
    ["-m", "trainer.merge", "trainer/configs/merge_tiny.yaml"],
    ["-m", "trainer.sft", "trainer/configs/sft_tiny.yaml"],
    ["-m", "trainer.opd", "trainer/configs/opd_tiny.yaml"],
]


@pytest.mark.slow
def test_readme_commands_run_two_steps_each(tiny_home, tmp_path):
    """`accelerate launch -m trainer.<recipe> trainer/configs/<recipe>_tiny.yaml`, as the README gives them."""
    ws = tmp_path / "checkout"
    shutil.copytree(
        ROOT, ws, ignore=shutil.ignore_patterns(".git", "runs", "__pycache__", ".pytest_cache")
    )
    env = {
        **os.environ,
        "FLOW_OPD_HOME": str(tiny_home),
        "PYTHONPATH": str(ws),
        "CUDA_VISIBLE_DEVICES": "",
    }
    for args in README_COMMANDS:
        proc = subprocess.run(
            [_accelerate(), "launch", *args],
            cwd=ws,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, (args, proc.stderr[-3000:])
    for name in ("grpo_tiny", "grpo_tiny_mix", "sft_tiny", "opd_tiny"):
        assert _manifest(ws / "runs" / name)["step"] == 2
    assert _manifest(ws / "runs" / "merge_tiny")["output"] == "lora"


@pytest.mark.slow
def test_grpo_raises_a_weightless_reward(tiny_home, tmp_path):
    """Mean brightness rises clearly over 25 GRPO steps (bench/learning_curves.py records the curve)."""
    out = tmp_path / "learn"
    cfg = load(
        grpo.Config,
        CONFIGS / "grpo_tiny.yaml",
        [
            *QUIET,
            f"run.out={out}",
            "run.max_steps=25",
            "run.save_every=0",
            "kl_beta=0",
            "sample.groups_per_epoch=2",
            "sample.group_size=8",
            "sample.batch_size=8",
            "optim.lr=1e-2",
            "lora.rank=8",
            "lora.alpha=16",
            "datasets={geneval: harness/prompts/geneval_train/train_metadata.jsonl}",
        ],
    )
    grpo.main(cfg)
    rows = read_metrics(out)
    first = sum(r["reward/brightness"] for r in rows[:5]) / 5
    last = sum(r["reward/brightness"] for r in rows[-5:]) / 5
    spread = sum(r["reward/std"] for r in rows[:5]) / 5
    assert last > first + 3 * spread, (first, last, spread)


def test_grpo_and_opd_with_an_sde_window_train_only_the_window(chain, tmp_path, monkeypatch):
    """Flow-GRPO-Fast: rollouts are the SDE on a 1-step window and the ODE elsewhere; training recomputes only that
    step (recomputing an ODE step raises), on policy (first ratio exactly 1), and the adapters move."""
    from trainer import epoch

    windows: list = []
    real = epoch.rollout

    def recording(*args, **kwargs):  # the real rollout, noting the window each epoch asked for
        windows.append(kwargs.get("sde_window"))
        return real(*args, **kwargs)

    monkeypatch.setattr(epoch, "rollout", recording)
    window = ["sample.sde_window_size=1", "sample.sde_window_range=[1, 3]"]
    out = tmp_path / "fast"
    with _cwd(chain):
        _fast_chain(out, tmp_path / "fast_opd", window)
    assert windows and all(w in ((1, 2), (2, 3)) for w in windows)
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["train/approx_kl"] == 0.0 and rows[0]["train/ratio"] == 1.0
    assert _moved_b(out / "lora")
    assert _manifest(tmp_path / "fast_opd")["step"] == 1 and _moved_b(
        tmp_path / "fast_opd" / "lora"
    )


def _fast_chain(out: Path, student: Path, window: list[str]) -> None:
    grpo.main(load(grpo.Config, CONFIGS / "grpo_tiny.yaml", [*QUIET, f"run.out={out}", *window]))
    opd_overrides = [*QUIET, f"run.out={student}", "run.max_steps=1", *window]
    opd.main(load(opd.Config, CONFIGS / "opd_tiny.yaml", opd_overrides))


def test_recompute_with_a_given_velocity_is_bitwise_the_same(tiny_home):
    """``velocity_at`` + ``recompute_step(v=...)`` (OPD's pg path) equals ``recompute_step`` alone."""
    from flowmodels.sampling import recompute_step

    model = load_model(default_tiny_dir())
    ro = rollout(model, ["a", "b"], [0, 1], steps=3, height=64, width=64, decode=False)
    for j in range(3):
        plain = recompute_step(model, ro, j)
        v = velocity_at(model, ro, j)
        given = recompute_step(model, ro, j, v=v)
        assert torch.equal(plain.log_prob, given.log_prob) and torch.equal(plain.mean, given.mean)
        assert torch.equal(plain.log_prob, ro.log_probs[:, j])  # the sanity law: ratio exactly 1


# -- in-loop evaluation through the harness ---------------------------------------------------------------------
def test_in_loop_evaluation_writes_rows_with_run_id_and_step(tiny_home, tmp_path):
    from harness.benchmarks import load_prompt_file
    from results.store import Store

    store = tmp_path / "store.duckdb"
    cfg = load(
        grpo.Config,
        CONFIGS / "grpo_tiny.yaml",
        [
            *QUIET,
            f"run.out={tmp_path / 'run'}",
            "run.eval_every=1",
            "run.eval_benchmarks=[ocr]",
            "run.eval_limit=2",
            "run.eval_steps=2",
            f"run.eval_store={store}",
        ],
    )
    grpo.main(cfg)
    run_id = _manifest(tmp_path / "run")["run_id"]
    st = Store(store, read_only=True)
    hist = st.history(run_id)
    assert sorted({(r["step"], r["benchmark"], r["scorer"]) for r in hist}) == [
        (1, "ocr", "ocr"),
        (2, "ocr", "ocr"),
    ]
    assert all(r["n_images"] == 2 for r in hist)
    protocol = st.get_run(run_id).protocol["generation"]
    assert (protocol["steps"], protocol["height"], protocol["noise_level"]) == (2, 64, 0.0)
    logged = [r for r in read_metrics(tmp_path / "run") if "eval/ocr/ocr" in r]
    assert [r["step"] for r in logged] == [1, 2]
    assert {r["eval/ocr/ocr"] for r in logged} == {h["score"] for h in hist}
    assert (
        len(load_prompt_file(ROOT / "harness" / "prompts" / "flow_grpo_ocr" / "test.txt")) == 1018
    )


def test_a_run_trained_on_evaluation_prompts_is_marked_in_its_manifest_and_store(
    tiny_home, tmp_path
):
    """data.allow_eval_prompts: the run trains on DrawBench prompts; its manifest (and lora/'s) says so and its
    in-loop evaluations are recorded as contaminated, so every table marks them; a student started from it
    inherits the verdict."""
    from results.store import Store

    store = tmp_path / "store.duckdb"
    common = [*QUIET, "datasets={pickscore: harness/prompts/drawbench/test.txt}", "run.max_steps=1"]
    evals = [
        "run.eval_every=1",
        "run.eval_benchmarks=[ocr]",
        "run.eval_limit=1",
        "run.eval_steps=2",
    ]
    with pytest.raises(ConfigError, match="allow_eval_prompts"):
        grpo.main(
            load(grpo.Config, CONFIGS / "grpo_tiny.yaml", [*common, f"run.out={tmp_path / 'no'}"])
        )
    assert not (tmp_path / "no").exists()
    cfg = load(
        grpo.Config,
        CONFIGS / "grpo_tiny.yaml",
        [
            *common,
            *evals,
            f"run.eval_store={store}",
            "data.allow_eval_prompts=true",
            f"run.out={tmp_path / 'run'}",
        ],
    )
    grpo.main(cfg)
    manifest = _manifest(tmp_path / "run")
    assert manifest["split_audit"]["overlap"]["pickscore"]["by_benchmark"] == {"drawbench": 64}
    (reason,) = manifest["contaminated"]
    assert reason.startswith(
        "datasets.pickscore: 64 of 64 training prompts are evaluation prompts (drawbench 64)"
    )
    assert json.loads((tmp_path / "run" / "lora" / "manifest.json").read_text())[
        "contaminated"
    ] == [reason]
    assert Store(store, read_only=True).contaminated_runs() == {manifest["run_id"]: [reason]}
    child = load(
        grpo.Config,
        CONFIGS / "grpo_tiny.yaml",
        [*QUIET, "run.max_steps=1", f"init={tmp_path / 'run'}", f"run.out={tmp_path / 'child'}"],
    )
    grpo.main(child)
    inherited = _manifest(tmp_path / "child")["contaminated"]
    assert inherited == [f"init {tmp_path / 'run' / 'lora'}: {reason}"]


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_keep_best_saves_the_best_evaluated_step_and_ignores_another_runs_record(
    tiny_home, tmp_path
):
    """``run.keep_best``: the last step is evaluated too (3 is not a multiple of eval_every 2), the saved lora/ is
    bit for bit the EMA weights of the step with the highest logged score (ties: the earlier), which a run stopped
    at that step saves as its own lora/; a best.json left by another run in the folder does not count."""
    out = tmp_path / "run"
    (out / "best").mkdir(parents=True)
    (out / "best" / "best.json").write_text(
        json.dumps({"run_id": "older", "step": 9, "score": 99.0})
    )
    evals = [
        "run.eval_every=2",
        "run.eval_benchmarks=[ocr]",
        "run.eval_limit=2",
        "run.eval_steps=2",
        f"run.eval_store={tmp_path / 'store.duckdb'}",
    ]
    cfg = load(
        grpo.Config,
        CONFIGS / "grpo_tiny.yaml",
        [*QUIET, f"run.out={out}", "run.max_steps=3", *evals, "run.keep_best=[ocr/ocr]"],
    )
    grpo.main(cfg)
    logged = {r["step"]: r["eval/keep_best"] for r in read_metrics(out) if "eval/keep_best" in r}
    assert sorted(logged) == [2, 3]
    assert {
        r["step"]: r["eval/ocr/ocr"] for r in read_metrics(out) if "eval/ocr/ocr" in r
    } == logged
    want = 2 if logged[2] >= logged[3] else 3
    selected = _manifest(out)["selected"]
    assert (selected["step"], selected["last_step"], selected["by"]) == (want, 3, ["ocr/ocr"])
    assert selected["score"] == logged[want] and selected["run_id"] == _manifest(out)["run_id"]
    lora = _adapter(out / "lora")
    assert json.loads((out / "lora" / "manifest.json").read_text())["selected"]["step"] == want
    for stop, same in (
        (want, True),
        (5 - want, False),
    ):  # the selected step's run, and the other one
        ref = tmp_path / f"ref{stop}"
        grpo.main(
            load(
                grpo.Config,
                CONFIGS / "grpo_tiny.yaml",
                [*QUIET, f"run.out={ref}", f"run.max_steps={stop}"],
            )
        )
        other = _adapter(ref / "lora")
        assert all(torch.equal(lora[k], other[k]) for k in lora) is same, stop


def test_keep_best_config_errors_name_the_fix(tiny_home, tmp_path):
    """keep_best without in-loop evaluation, on a benchmark the loop does not evaluate, or with a scorer the
    benchmark does not have: each a ConfigError before any work, naming what to set."""
    from trainer.config import ConfigError

    base = [*QUIET, f"run.out={tmp_path / 'run'}"]
    with pytest.raises(ConfigError, match="run.eval_every > 0"):
        load(grpo.Config, CONFIGS / "grpo_tiny.yaml", [*base, "run.keep_best=[ocr/ocr]"])
    evals = ["run.eval_every=1", "run.eval_benchmarks=[ocr]"]
    with pytest.raises(ConfigError, match=r"'geneval/geneval'.*run.eval_benchmarks \(ocr\)"):
        load(
            grpo.Config,
            CONFIGS / "grpo_tiny.yaml",
            [*base, *evals, "run.keep_best=[geneval/geneval]"],
        )
    cfg = load(
        grpo.Config, CONFIGS / "grpo_tiny.yaml", [*base, *evals, "run.keep_best=[ocr/pickscore]"]
    )
    with pytest.raises(ConfigError, match="ocr is scored by ocr, not 'pickscore'"):
        grpo.main(cfg)
    assert not (tmp_path / "run" / "lora").exists()


def test_keep_best_continues_its_comparison_across_a_resume(tiny_home, tmp_path):
    """A keep_best run interrupted after step 2 and resumed keeps the same step and the same weights as the run
    straight through: the resumed run reads its own best.json back (were it ignored, the first evaluation after
    the resume, step 4, would be kept whatever step 2 scored)."""
    base = [
        *QUIET,
        "run.save_every=2",
        "run.max_steps=4",
        "sample.groups_per_epoch=1",
        "run.eval_every=2",
        "run.eval_benchmarks=[ocr]",
        "run.eval_limit=2",
        "run.eval_steps=2",
        "run.keep_best=[ocr/ocr]",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    store = [f"run.eval_store={tmp_path / 'store.duckdb'}"]
    grpo.main(load(grpo.Config, CONFIGS / "grpo_tiny.yaml", [*base, *store, f"run.out={straight}"]))
    first = [*base, *store, f"run.out={split}", "run.max_steps=2"]
    grpo.main(load(grpo.Config, CONFIGS / "grpo_tiny.yaml", first))
    assert _manifest(split)["selected"]["step"] == 2
    grpo.main(
        load(
            grpo.Config,
            CONFIGS / "grpo_tiny.yaml",
            [*base, *store, f"run.out={split}", "run.resume=auto"],
        )
    )
    scores = {
        r["step"]: r["eval/keep_best"] for r in read_metrics(straight) if "eval/keep_best" in r
    }
    want = 2 if scores[2] >= scores[4] else 4
    assert _manifest(straight)["selected"]["step"] == _manifest(split)["selected"]["step"] == want
    a, b = _adapter(straight / "lora"), _adapter(split / "lora")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
