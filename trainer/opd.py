"""Flow-OPD: multi-teacher on-policy distillation with Manifold Anchor Regularization (MAR).

Flow-OPD, Fang et al. 2026, https://arxiv.org/abs/2605.08063 (docs/method.md section 5). Each epoch the student draws
SDE trajectories for prompts from several tagged tasks; on its own visited states ``x_t`` every sample is routed
by its task tag to that task's teacher (hard routing, or optional soft weights ``alpha_k``), which labels the state
with its velocity (same CFG, no gradient). The default loss is the paper's final form (Eq. 15):

    L = E[ w(t) ||v_theta(x_t) - sg(v_T)||^2 ] + lambda E[ w(t) ||v_theta(x_t) - sg(v_anchor)||^2 ]

with ``w(t)`` from the exact Gaussian KL between the two SDE transitions (``trainer.objectives``). ``pg`` (dense
detached reward in the PPO surrogate) and ``mixed`` (plus the GRPO task advantage) are the named variants.
Teachers and the anchor are frozen LoRA adapters on the one base model, run together in one no-grad pass with
per-row adapters (``labels``): memory is base + K adapters. No sample is dropped for tied task rewards; rewards are optional and only logged (or used by ``mixed``).

    accelerate launch -m trainer.opd trainer/configs/opd_tiny.yaml
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from flowmodels.adapters import LoraSpec, mixable, per_row, using
from flowmodels.backend import FlowModel
from flowmodels.images import to_pil
from flowmodels.sampling import Rollout, recompute_step, velocity_at
from trainer import (
    checkpoints,
    epoch,
    evalhook,
    folders,
    metrics,
    optim,
    rewards,
    runs,
    student,
)
from trainer.config import ConfigError, DataConfig, OptimConfig, RunConfig, SampleConfig
from trainer.data import audit_split, load_datasets
from trainer.objectives import (
    AdvantageStd,
    KLNormaliser,
    OPDMode,
    VelocityWeight,
    group_advantages,
    mix_targets,
    opd_loss,
    routing_weights,
    velocity_weight,
)
from trainer.routing import GapRouter, Probe, RoutingConfig

log = logging.getLogger(__name__)

ANCHOR = "anchor"
# step_weight="uniform": every trained step weighs 1, the squared gap a mean over pixels
UNIFORM = VelocityWeight(torch.ones(()), "mean")

_PROMPTS = "harness/prompts"


@dataclass(frozen=True)
class Config(rewards.TaskRewards):
    """Flow-OPD on SD3.5-M: GenEval, OCR and PickScore teachers (official Flow-GRPO LoRAs), direct loss."""

    model: str = "stabilityai/stable-diffusion-3.5-medium"
    init: str | None = (
        None  # cold start: a run folder from `sft` or `merge` (its lora/), or a PEFT folder
    )
    datasets: dict[str, str] = field(
        default_factory=lambda: {
            "geneval": f"{_PROMPTS}/geneval_train/train_metadata.jsonl",
            "ocr": f"{_PROMPTS}/ocr_train/train.txt",
            "pickscore": f"{_PROMPTS}/pickscore_train/train.txt",
        }
    )
    prompt_limit: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    # Each task's share of every epoch's prompt groups ({geneval: 3, ocr: 1}: 3 GenEval groups to 1 OCR group,
    # routed per sample in the same batches); empty: drawn from the union of the prompt sets (their sizes decide).
    task_mix: dict[str, int] = field(default_factory=dict)
    # routing.mode=gap: each epoch's shares follow each task's missing share of its teacher's gain (task_mix the
    # prior), measured on a probe of training prompts (trainer.routing)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    teachers: dict[str, str] = field(
        default_factory=lambda: {
            "geneval": "jieliu/SD3.5M-FlowGRPO-GenEval",
            "ocr": "jieliu/SD3.5M-FlowGRPO-Text",
            "pickscore": "jieliu/SD3.5M-FlowGRPO-PickScore",
        }
    )  # task -> teacher LoRA (run folder, PEFT folder or hub id)
    soft_routing: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # task -> {teacher task: alpha}
    anchor: str | None = None  # MAR anchor LoRA (e.g. a DeQA teacher); None: no MAR
    mar_lambda: float = 0.02  # paper; the authors' code uses 0.04
    # MAR only on the steps that start at noise level sigma <= this (1.0: every trained step, the paper). Lower
    # values leave the early, layout-deciding steps to the routed teachers and anchor the late, detail steps.
    mar_sigma_max: float = 1.0
    loss: OPDMode = "direct"
    # step_weight "kl" only ("uniform" is always a mean over pixels)
    kl_normaliser: KLNormaliser = "exact_mean"
    # How the trained steps weigh against each other: "kl" is w(t), the exact KL of the two transitions (the
    # paper's Eq. 15; it puts most of the weight on the last, low-noise steps); "uniform" weighs every step 1
    # (plain velocity regression on the student's states), so the early steps that decide layout count as much.
    step_weight: Literal["kl", "uniform"] = "kl"
    clip_range: float = 1e-4  # pg / mixed
    rewards: dict[str, float] = field(
        default_factory=dict
    )  # optional: logged (and the task advantage of `mixed`)
    task_rewards: dict[str, dict[str, float]] = field(default_factory=dict)
    reward_servers: dict[str, str] = field(default_factory=dict)
    adv_std: AdvantageStd = "global"
    adv_clip: float = 5.0  # pg / mixed: advantages clamped to +-adv_clip (the authors' code)
    sample: SampleConfig = field(default_factory=SampleConfig)
    lora: LoraSpec = field(default_factory=LoraSpec)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-4)
    )  # authors' multi-teacher lr
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/opd"))

    def __post_init__(self) -> None:
        if not self.teachers:
            raise ConfigError("OPD needs at least one teacher: teachers: {task: lora_path}")
        for task in self.datasets:
            if task not in self.teachers and task not in self.soft_routing:
                raise ConfigError(
                    f"task {task!r} has prompts but no teacher: add teachers.{task}=PATH "
                    f"(teachers cover {sorted(self.teachers)})"
                )
        unknown_mix = sorted(set(self.task_mix) - set(self.datasets))
        if unknown_mix:
            raise ConfigError(
                f"task_mix names {unknown_mix}, which have no prompt set in datasets ({sorted(self.datasets)})"
            )
        missing_mix = sorted(set(self.datasets) - set(self.task_mix)) if self.task_mix else []
        if missing_mix:
            raise ConfigError(
                f"task_mix gives no share to {missing_mix}: give every task in datasets a share (0 leaves one out)"
            )
        if self.task_mix and (min(self.task_mix.values()) < 0 or sum(self.task_mix.values()) <= 0):
            raise ConfigError(f"task_mix shares must be >= 0 and not all 0, got {self.task_mix}")
        self.routing.check(sorted(self.datasets))
        for task, weights in self.soft_routing.items():
            unknown = sorted(set(weights) - set(self.teachers))
            if unknown:
                raise ConfigError(
                    f"soft_routing.{task} names teachers {unknown} that are not in teachers ({sorted(self.teachers)})"
                )
            if sum(weights.values()) <= 0 or min(weights.values()) < 0:
                raise ConfigError(f"soft_routing.{task} weights must be >= 0 and not all 0")
        if self.sample.noise_level <= 0:
            raise ConfigError(
                "OPD samples with the SDE: sample.noise_level must be > 0 (paper: 0.7)"
            )
        if self.mar_lambda < 0:
            raise ConfigError(f"mar_lambda={self.mar_lambda} must be >= 0")
        if not 0.0 < self.mar_sigma_max <= 1.0:
            raise ConfigError(
                f"mar_sigma_max={self.mar_sigma_max} must be in (0, 1] (1.0 anchors every step)"
            )
        if self.loss == "mixed":
            if self.sample.group_size < 2:
                raise ConfigError(
                    "loss=mixed uses GRPO task advantages: sample.group_size must be >= 2"
                )
            if not self.rewards and not self.task_rewards:
                raise ConfigError("loss=mixed needs task rewards (rewards or task_rewards)")


def main(cfg: Config) -> None:
    """Distil the routed teachers into the student on its own rollouts; leave ``run.out/{lora/, manifest.json}``."""
    runs.setup_logging()
    if not runs.check_folder("opd", cfg.run):  # a folder holding a run: refused, or finished
        return
    # fail before any work: teachers and anchor exist and share the student's base; reward names; prompt files
    teacher_dirs = {
        task: folders.check_adapter_base(f"teachers.{task}", src, cfg.model)
        for task, src in cfg.teachers.items()
    }
    anchor_dir = folders.check_adapter_base("anchor", cfg.anchor, cfg.model) if cfg.anchor else None
    init = folders.check_adapter_base("init", cfg.init, cfg.model) if cfg.init is not None else None
    rewards.check_scorer_names(cfg.scorer_names(), cfg.reward_servers)
    rewards.check_scorer_names(set(cfg.routing.scorers.values()), cfg.reward_servers)
    pools = load_datasets(cfg.datasets, cfg.prompt_limit)
    layout = epoch.epoch_layout(cfg.sample, runs.launched_world())
    parents = {"init": init, "anchor": anchor_dir}
    parents.update({f"teachers.{task}": folder for task, folder in teacher_dirs.items()})
    audit = audit_split(pools, cfg.data.allow_eval_prompts, parents)
    run = runs.start("opd", cfg, cfg.run, audit)
    # the task rewards (logged, or mixed's advantage) and the gap routing's probe scorers, each loaded once
    probing = set(cfg.routing.scorers.values()) if cfg.routing.mode == "gap" else set()
    loaded = rewards.load_scorers(cfg.scorer_names() | probing, cfg.reward_servers)
    scorers = {name: loaded[name] for name in cfg.scorer_names()}

    model = student.load_base(run, cfg.model, cfg.sample.t5_length)
    net = model.denoiser
    student.attach_student(run, net, cfg.lora, cfg.init, cfg.model)
    adapter_of = _attach_teachers(net, teacher_dirs)  # task -> adapter (one per distinct folder)
    names = sorted(set(adapter_of.values()))
    if anchor_dir is not None:
        student.attach_frozen(net, ANCHOR, anchor_dir)
    tr = optim.prepare(run, net, cfg.optim)
    checkpoints.resume(run, tr)
    runs.begin(run)  # the per-step progress line from here
    s = cfg.sample
    eval_protocol = evalhook.protocol(cfg.run, s.cfg, s.size, s.t5_length)  # run.eval_every
    T = s.train_timesteps
    micro_per_step = layout.accum_batches * T
    soft: dict[str, dict[str, float]] = {}
    for task, weights in cfg.soft_routing.items():
        for teacher_task, w in weights.items():
            name = adapter_of[teacher_task]
            soft.setdefault(task, {})[name] = soft.get(task, {}).get(name, 0.0) + w
    log.info(
        "opd: %d teacher adapter(s) %s, anchor %s, loss %s, %d images/process/epoch",
        len(names),
        names,
        anchor_dir,
        cfg.loss,
        layout.images_per_rank,
    )

    router = None
    if cfg.routing.mode == "gap":  # the base and the teachers on the probe, once
        probe = Probe(pools, cfg.routing, run.rcfg.seed, {n: loaded[n] for n in probing})
        prior = cfg.task_mix or dict.fromkeys(pools, 1)
        router = GapRouter(probe, model, s, prior, adapter_of)

    while run.step < run.rcfg.max_steps:
        step_before = run.step
        t_epoch = time.perf_counter()
        mix: dict[str, float] | None = dict(cfg.task_mix) or None
        route_stats: dict[str, float] = {}
        if router is not None:  # this epoch's shares from the student's probe
            mix, route_stats = router.epoch_shares(student.STUDENT)
        mine, batches, window = epoch.sample_epoch(
            run,
            model,
            pools,
            s,
            keep=rollout_keep(cfg, bool(scorers)),
            task_mix=mix,
        )
        epoch_stats = {**route_stats, **_rewards(run, cfg, scorers, batches, mine)}
        epoch_stats["time/sample_s"] = (
            time.perf_counter() - t_epoch
        )  # rollouts (+ optional rewards)
        t_train = time.perf_counter()

        todo = epoch.regroup(run, batches, shuffle=s.shuffle)  # Flow-GRPO's per-sample shuffle
        tr.ddp.train()
        sums: dict[str, float] = {}
        anchored: list[float] = []  # the anchor's gap on this optimizer step's anchored micro-steps
        micro = 0
        for b in todo.batches:
            alpha = routing_weights([it.task for it in b.items], names, adapter_of, soft)  # [b, K]
            for j in s.trained_steps(window):
                micro += 1
                sync = micro % micro_per_step == 0
                sigma_cap = float(b.ro.sigmas[1]) if len(b.ro.sigmas) > 2 else None
                vw = (
                    UNIFORM
                    if cfg.step_weight == "uniform"
                    else velocity_weight(
                        b.ro.sigmas[j],
                        b.ro.sigmas[j + 1],
                        s.noise_level,
                        sigma_cap,
                        cfg.kl_normaliser,
                    )
                )
                with optim.no_sync(run, tr, sync), run.acc.autocast():
                    # teacher labels on the student's states, each teacher only on its routed samples, and
                    # the anchor's where MAR weighs this step: one no-grad pass (per-row adapters)
                    anchored_step = anchor_dir is not None and mar_on(cfg, float(b.ro.sigmas[j]))
                    v_teacher, v_anchor = labels(
                        model, net, b.ro, j, names, alpha, anchor=anchored_step
                    )
                    with optim.student_forward(model, tr):
                        v = velocity_at(model, b.ro, j)
                    logp_new = logp_old = None
                    if cfg.loss != "direct":
                        logp_new = recompute_step(model, b.ro, j, logprob=s.logprob, v=v).log_prob
                        logp_old = b.ro.log_probs[:, j]
                    terms = opd_loss(
                        cfg.loss,
                        v,
                        v_teacher,
                        vw,
                        v_anchor=v_anchor,
                        mar_lambda=cfg.mar_lambda,
                        logp_new=logp_new,
                        logp_old=logp_old,
                        task_advantages=b.advantages,
                        clip_range=cfg.clip_range,
                        adv_clip=cfg.adv_clip,
                    )
                    run.acc.backward(terms.loss / micro_per_step)
                for key, val in (
                    ("loss/total", terms.loss),
                    ("loss/opd", terms.distill),
                    ("loss/mar", terms.mar),
                    ("opd/gap", terms.gap),
                ):
                    sums[key] = sums.get(key, 0.0) + float(val.detach()) / micro_per_step
                if v_anchor is not None:
                    anchored.append(float(terms.anchor_gap))
            stepping = micro % micro_per_step == 0  # this batch ends an optimizer step
            if stepping:
                norm = optim.optimizer_step(run, tr, cfg.optim)  # clip, step, schedule, zero, count
            optim.after_batch(run, tr)  # the EMA, Flow-GRPO's cadence
            if not stepping:
                continue
            # the anchor's gap: a mean over the anchored steps only (mar_sigma_max < 1 skips others)
            if anchored:
                sums["opd/anchor_gap"] = sum(anchored) / len(anchored)
                anchored = []
            sums["time/train_s"] = time.perf_counter() - t_train
            metrics.log_step(run, tr, {**sums, **epoch_stats, "train/grad_norm": norm})
            # every run.eval_every steps, on the EMA weights as a run stopped here would save them
            evalhook.maybe_evaluate(run, model, tr, eval_protocol)
            t_train = time.perf_counter()
            sums = {}
            if run.step >= run.rcfg.max_steps:
                break
        run.epoch += 1
        if checkpoints.checkpoint_due(run, step_before):
            checkpoints.save_checkpoint(run, tr)

    runs.finish(
        run,
        tr,
        cfg.model,
        {
            "teachers": dict(cfg.teachers),
            "anchor": cfg.anchor,
            "mar_lambda": cfg.mar_lambda,
            "mar_sigma_max": cfg.mar_sigma_max,
            "loss": cfg.loss,
            "step_weight": cfg.step_weight,
            "task_mix": dict(cfg.task_mix),
            "routing": cfg.routing.mode,
        },
    )


def rollout_keep(cfg: Config, scoring: bool) -> epoch.Keep:
    """How much of a rollout OPD reads: the final images only when rewards are scored (logged, or the task
    advantage of ``mixed``), the next states only when a log-prob is trained (``pg``, ``mixed``), else the visited
    states alone. The student's sampling then stops after the last trained state (the same bits up to it)."""
    if scoring:
        return "all"
    return "states" if cfg.loss == "direct" else "transitions"


def mar_on(cfg: Config, sigma: float) -> bool:
    """Whether MAR anchors a step that starts at noise level ``sigma`` (a float32 schedule's 0.5 may be 0.50000006)."""
    return cfg.mar_lambda > 0 and sigma <= cfg.mar_sigma_max + 1e-6


@torch.no_grad()
def labels(
    model: FlowModel,
    net: torch.nn.Module,
    ro: Rollout,
    j: int,
    names: list[str],
    alpha: torch.Tensor,
    anchor: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Step ``j``'s targets on the recorded states: ``v_target = sum_k alpha_k v_k`` of the routed teachers and,
    with ``anchor``, the anchor's velocity. Each sample runs once under each teacher routed to it (and once under
    the anchor), all in one pass with per-row adapters where the adapters allow (``adapters.mixable``), else one
    pass per adapter; the numbers are the same. alpha: [b, K] -> ([b, C, h, w], [b, C, h, w] or None).

    Under FSDP2 every pass is a collective, so every rank runs the same passes whatever it routed: one per-row pass,
    or, where the adapters are not mixable, one pass per teacher (on row 0 for a teacher no row of this rank's
    batch is routed to, its output dropped) and the anchor's."""
    rows = {k: torch.nonzero(alpha[:, k] > 0).flatten() for k in range(len(names))}
    parts = [(names[k], rows[k]) for k in range(len(names)) if len(rows[k])]
    if anchor:
        parts.append((ANCHOR, torch.arange(alpha.shape[0])))
    if optim.sharded(net) and not mixable(net):
        outs = []
        for k, name in enumerate(names):
            with using(net, name):
                v = velocity_at(model, ro, j, batch=rows[k] if len(rows[k]) else torch.arange(1))
            if len(rows[k]):
                outs.append(v)
        if anchor:
            with using(net, ANCHOR):
                outs.append(velocity_at(model, ro, j, batch=torch.arange(alpha.shape[0])))
    elif len(parts) > 1 and mixable(net):
        tags = [name for name, r in parts for _ in range(len(r))]
        with per_row(net, tags):
            v = velocity_at(model, ro, j, batch=torch.cat([r for _, r in parts]))
        outs = list(v.split([len(r) for _, r in parts]))
    else:
        outs = []
        for name, r in parts:
            with using(net, name):
                outs.append(velocity_at(model, ro, j, batch=r))
    v_anchor = outs.pop() if anchor else None
    routed = [k for k in range(len(names)) if len(rows[k])]
    return mix_targets(dict(zip(routed, outs, strict=True)), alpha, rows), v_anchor


def _attach_teachers(net: torch.nn.Module, dirs: dict[str, Path]) -> dict[str, str]:
    """Load each distinct teacher folder once as a frozen adapter; returns task -> adapter name."""
    by_folder: dict[Path, str] = {}
    adapter_of: dict[str, str] = {}
    for task in sorted(dirs):
        folder = dirs[task].resolve()
        if folder not in by_folder:
            name = f"teacher_{task}"
            student.attach_frozen(net, name, folder)
            by_folder[folder] = name
        adapter_of[task] = by_folder[folder]
    return adapter_of


def _rewards(
    run: runs.Run, cfg: Config, scorers: dict, batches: list[epoch.Batch], mine: slice
) -> dict[str, float]:
    """Optional task rewards: logged, and turned into GRPO advantages for ``loss=mixed``."""
    if not scorers:
        return {}
    parts: dict[str, list[torch.Tensor]] = {}
    for b in batches:
        got = rewards.score(scorers, cfg.weights_for, to_pil(b.ro.images), b.items)
        b.rewards = got.total
        for name, part in got.parts.items():
            parts.setdefault(name, []).append(part)
    everyone = epoch.gather_cat(run, torch.cat([b.rewards for b in batches]))
    stats = {"reward/total": float(everyone.mean())}
    for name, chunks in parts.items():
        stats[f"reward/{name}"] = float(epoch.gather_cat(run, torch.cat(chunks)).nanmean())
    if cfg.loss == "mixed":
        adv = group_advantages(everyone, cfg.sample.group_size, std=cfg.adv_std, clip=cfg.adv_clip)
        for b, a in zip(batches, adv[mine].split(cfg.sample.batch_size), strict=True):
            b.advantages = a.float()
    return stats


if __name__ == "__main__":
    # the recipes' entry point; trainer.rehearse imports the recipes, so only the script imports it
    from trainer import rehearse

    rehearse.cli(Config, main)
