"""Flow-GRPO: train a LoRA with group-relative policy optimisation on SDE rollouts (the paper's teachers and
GRPO baselines).

Flow-GRPO, Liu et al. 2025, https://arxiv.org/abs/2505.05470 (docs/method.md section 3); GRPO-Mix as in Flow-OPD,
https://arxiv.org/abs/2605.08063. One epoch: sample ``groups_per_epoch`` prompts x ``group_size`` images with the
SDE (a = 0.7, 10 steps, CFG 4.5), score them, turn the gathered rewards into group advantages (global std, clipped
to +-5), then for each batch and each of the first ``int(0.99 N)`` steps recompute the log-prob with the current
LoRA and minimise the PPO-clipped surrogate plus ``kl_beta`` x the Gaussian KL to the base model (adapters off).

Rewards, from the same scorers the harness uses (``scorers.load``):
- single or weighted multi-reward: ``rewards: {ocr: 1.0}`` or ``{pickscore: 0.5, deqa: 0.5}``;
- GRPO-Mix: ``datasets`` names several tagged prompt sets, ``partitions: {geneval: 3, ocr: 1, pickscore: 1}``
  alternates whole epochs between them, and ``task_rewards`` gives each task its own scorer plus DeQA by summation
  (``{geneval: {geneval: 1.0, deqa: 1.0}}``; the authors' code uses 0.8 / 0.2). Without ``partitions`` the prompts
  are drawn from the union and each sample still gets its task's reward (the plain weighted-sum mix).

    accelerate launch -m trainer.grpo trainer/configs/grpo_tiny.yaml run.max_steps=2
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from flowmodels.adapters import LoraSpec, disabled
from flowmodels.backend import FlowModel
from flowmodels.images import to_pil
from flowmodels.sampling import recompute_step
from harness.benchmarks import PromptItem
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
    PolicyLoss,
    RewardNorm,
    decoupled_advantages,
    gaussian_kl,
    group_advantages,
    ppo_clip_loss,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config(rewards.TaskRewards):
    """Flow-GRPO on SD3.5-M (Flow-GRPO's 32-GPU recipe; per-GPU numbers follow from the world size)."""

    model: str = "stabilityai/stable-diffusion-3.5-medium"
    init: str | None = (
        None  # start the LoRA from a run folder (SFT+GRPO-Mix, Merge+GRPO-Mix) or a PEFT folder
    )
    datasets: dict[str, str] = field(
        default_factory=lambda: {"geneval": "harness/prompts/geneval_train/train_metadata.jsonl"}
    )
    prompt_limit: int | None = None  # first N prompts of each dataset
    data: DataConfig = field(default_factory=DataConfig)
    rewards: dict[str, float] = field(
        default_factory=lambda: {"geneval": 1.0}
    )  # every prompt's reward
    task_rewards: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # per task, overrides `rewards`
    partitions: dict[str, int] = field(
        default_factory=dict
    )  # GRPO-Mix epoch ratio, e.g. {geneval: 3, ocr: 1}
    reward_servers: dict[str, str] = field(default_factory=dict)  # scorer -> RemoteScorer URL
    # scorers trained on their official value instead of Flow-GRPO's reward (e.g. [mini_geneval]: GenEval's 0/1
    # verdict, not its partial credit, whose negative terms for extra objects can teach a model to draw less)
    value_rewards: tuple[str, ...] = ()
    kl_beta: float = 0.04  # 0.04 GenEval / OCR, 0.01 PickScore
    kl_normaliser: KLNormaliser = "flow_grpo"
    clip_range: float = 1e-4
    adv_clip: float = 5.0
    adv_std: AdvantageStd = "global"
    # Flow-GRPO's filter: each process drops its samples whose advantage is exactly 0 (their group's rewards all
    # equal: no policy gradient) from the loss, the KL term included, before re-batching (epoch.regroup). False keeps
    # them: with half the groups tied the policy gradient halves while the KL term still covers every sample.
    drop_tied_groups: bool = True
    # "sum": Flow-GRPO, the group advantage of the weighted sum of the rewards; "decoupled": GDPO, each reward
    # normalised in its group before the weighted sum (a low-variance reward keeps its weight's share)
    reward_norm: RewardNorm = "sum"
    sample: SampleConfig = field(default_factory=SampleConfig)
    lora: LoraSpec = field(default_factory=LoraSpec)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/grpo"))

    def __post_init__(self) -> None:
        if self.sample.group_size < 2:
            raise ConfigError(
                f"sample.group_size={self.sample.group_size}: GRPO needs >= 2 images per prompt "
                "(advantages are relative to the group)"
            )
        if self.sample.noise_level <= 0:
            raise ConfigError(
                "GRPO needs stochastic rollouts: sample.noise_level must be > 0 (Flow-GRPO: 0.7)"
            )
        if not self.rewards and not self.task_rewards:
            raise ConfigError("no reward: set rewards (e.g. {ocr: 1.0}) or task_rewards")
        for task in list(self.partitions) + list(self.task_rewards):
            if task not in self.datasets:
                raise ConfigError(
                    f"task {task!r} has no prompt set in datasets ({sorted(self.datasets)})"
                )
        if self.partitions and not self.task_rewards:
            raise ConfigError(
                "partitions (GRPO-Mix) need task_rewards: each partition's own scorer"
            )
        if self.kl_beta < 0 or self.clip_range <= 0:
            raise ConfigError("kl_beta must be >= 0 and clip_range > 0")
        unused = sorted(set(self.value_rewards) - self.scorer_names())
        if unused:
            raise ConfigError(
                f"value_rewards names {unused}, which no reward uses (rewards / task_rewards use "
                f"{sorted(self.scorer_names())}): name a scorer the recipe trains on"
            )


def reward_matrix(
    cfg: Config, got: rewards.Rewards, items: list[PromptItem], names: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's reward from each scorer in ``names`` and its weight for the sample's task: [n, K] each
    (NaN and 0 where the task does not use the scorer), the input of ``decoupled_advantages``."""
    nan = torch.full_like(got.total, float("nan"))
    parts = torch.stack([got.parts.get(n, nan) for n in names], dim=1)
    weights = torch.tensor(
        [[cfg.weights_for(it.task).get(n, 0.0) for n in names] for it in items],
        dtype=torch.float64,
    )
    return parts, weights


def step_loss(
    cfg: Config, model: FlowModel, tr: optim.Training, b: epoch.Batch, j: int
) -> tuple[torch.Tensor, PolicyLoss, torch.Tensor]:
    """One micro-step's loss on batch ``b`` at SDE step ``j``: the PPO-clipped surrogate of the student's log-prob
    (its gradient pass) plus ``kl_beta`` x the Gaussian KL to the base (adapters off, no grad). Returns (loss, the
    policy terms, the KL)."""
    s = cfg.sample
    with optim.student_forward(model, tr):
        st = recompute_step(model, b.ro, j, logprob=s.logprob)
    pol = ppo_clip_loss(st.log_prob, b.ro.log_probs[:, j], b.advantages, cfg.clip_range)
    loss = pol.loss
    kl = torch.zeros(())
    if cfg.kl_beta > 0:
        with torch.no_grad(), disabled(tr.net):
            ref = recompute_step(model, b.ro, j, logprob=s.logprob)
        dt = b.ro.sigmas[j + 1] - b.ro.sigmas[j]
        kl = gaussian_kl(st.mean, ref.mean, st.sigma_t, dt, cfg.kl_normaliser).mean()
        loss = loss + cfg.kl_beta * kl
    return loss, pol, kl


def main(cfg: Config) -> None:
    """Train, checkpoint, evaluate in the loop, and leave ``run.out/{lora/, manifest.json}``."""
    runs.setup_logging()
    if not runs.check_folder("grpo", cfg.run):  # a folder holding a run: refused, or finished
        return
    # fail before any work: names, files, layout
    rewards.check_scorer_names(cfg.scorer_names(), cfg.reward_servers)
    pools = load_datasets(cfg.datasets, cfg.prompt_limit)
    layout = epoch.epoch_layout(cfg.sample, runs.launched_world())
    init = folders.check_adapter_base("init", cfg.init, cfg.model) if cfg.init is not None else None
    audit = audit_split(pools, cfg.data.allow_eval_prompts, {"init": init})
    run = runs.start("grpo", cfg, cfg.run, audit)
    scorers = rewards.load_scorers(cfg.scorer_names(), cfg.reward_servers)

    model = student.load_base(run, cfg.model, cfg.sample.t5_length)
    net = model.denoiser
    student.attach_student(run, net, cfg.lora, cfg.init, cfg.model)
    tr = optim.prepare(run, net, cfg.optim)
    checkpoints.resume(run, tr)
    runs.begin(run)  # the per-step progress line from here
    s = cfg.sample
    eval_protocol = evalhook.protocol(cfg.run, s.cfg, s.size, s.t5_length)  # run.eval_every
    T = s.train_timesteps
    micro_per_step = layout.accum_batches * T
    log.info(
        "grpo: %d images/process/epoch in %d batches, %d optimizer steps/epoch, %d micro-steps each",
        layout.images_per_rank,
        layout.batches_per_rank,
        s.steps_per_epoch,
        micro_per_step,
    )

    while run.step < run.rcfg.max_steps:
        step_before = run.step
        t_epoch = time.perf_counter()
        # 1. sample this process's share of the epoch's groups
        mine, batches, window = epoch.sample_epoch(
            run, model, pools, s, partitions=cfg.partitions or None
        )

        # 2. rewards -> gathered -> group advantages (global std) -> this process's slice
        parts: dict[str, list[torch.Tensor]] = {}
        decoupled = cfg.reward_norm == "decoupled"
        names = sorted(cfg.scorer_names())
        per_reward, weights = [], []  # [n, K] each: the decoupled advantages' input
        for b in batches:
            got = rewards.score(
                scorers,
                cfg.weights_for,
                to_pil(b.ro.images),
                b.items,
                use_values=set(cfg.value_rewards),
            )
            b.rewards = got.total
            for name, part in got.parts.items():
                parts.setdefault(name, []).append(part)
            if decoupled:
                r, w = reward_matrix(cfg, got, b.items, names)
                per_reward.append(r)
                weights.append(w)
        local = torch.cat([b.rewards for b in batches])
        everyone = epoch.gather_cat(run, local)
        if decoupled:
            adv = decoupled_advantages(
                epoch.gather_cat(run, torch.cat(per_reward)),
                epoch.gather_cat(run, torch.cat(weights)),
                s.group_size,
                clip=cfg.adv_clip,
            )
        else:
            adv = group_advantages(everyone, s.group_size, std=cfg.adv_std, clip=cfg.adv_clip)
        adv_local = adv[mine].split(s.batch_size)
        for b, a in zip(batches, adv_local, strict=True):
            b.advantages = a.float()
        groups = everyone.view(-1, s.group_size)
        epoch_stats = {
            "reward/total": float(everyone.mean()),
            "reward/std": float(everyone.std(correction=0)),
            "reward/zero_std_ratio": float((groups.std(dim=1, correction=0) == 0).float().mean()),
        }
        for name, chunks in parts.items():
            vals = epoch.gather_cat(run, torch.cat(chunks))
            epoch_stats[f"reward/{name}"] = float(vals.nanmean())

        epoch_stats["time/sample_s"] = time.perf_counter() - t_epoch  # rollouts + rewards
        t_train = time.perf_counter()
        # 3. Flow-GRPO's re-batching: tied groups' samples dropped (drop_tied_groups), the rest shuffled sample by
        # sample into as many batches as were sampled
        todo = epoch.regroup(run, batches, drop_tied=cfg.drop_tied_groups, shuffle=s.shuffle)
        # the share of this process's samples trained on (Flow-GRPO logs rank 0's)
        epoch_stats["train/kept_fraction"] = todo.kept / todo.total
        # 4. train: every batch x its T SDE steps, one optimizer step per `accum_batches` batches (at a batch's end)
        tr.ddp.train()
        sums: dict[str, float] = {}
        micro = 0
        for b in todo.batches:
            for j in s.trained_steps(window):
                micro += 1
                sync = micro % micro_per_step == 0
                with optim.no_sync(run, tr, sync), run.acc.autocast():
                    loss, pol, kl = step_loss(cfg, model, tr, b, j)
                    run.acc.backward(loss / micro_per_step)
                for key, val in (
                    ("loss/policy", pol.loss),
                    ("loss/kl", kl),
                    ("loss/total", loss),
                    ("train/clipfrac", pol.clipfrac),
                    ("train/approx_kl", pol.approx_kl),
                    ("train/ratio", pol.ratio.mean()),
                ):
                    sums[key] = sums.get(key, 0.0) + float(val.detach()) / micro_per_step
            stepping = micro % micro_per_step == 0  # this batch ends an optimizer step
            if stepping:
                norm = optim.optimizer_step(run, tr, cfg.optim)  # clip, step, schedule, zero, count
            optim.after_batch(run, tr)  # the EMA, Flow-GRPO's cadence
            if not stepping:
                continue
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

    runs.finish(run, tr, cfg.model)


if __name__ == "__main__":
    # the recipes' entry point; trainer.rehearse imports the recipes, so only the script imports it
    from trainer import rehearse

    rehearse.cli(Config, main)
