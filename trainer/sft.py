"""Cold start by SFT: each teacher samples images for its own task's prompts, and the student LoRA learns them with
the flow-matching loss.

Flow-OPD, https://arxiv.org/abs/2605.08063 (docs/method.md section 4, "SFT"). Teachers are frozen LoRA adapters on the
student's base. For every task, the teacher generates ``images_per_prompt`` images per prompt with the evaluation
sampler (Euler ODE, CFG); the clean latents ``x0`` are kept (no VAE round trip) and saved in the run folder, so a
resumed run does not sample again. Training draws ``x_s = (1 - s) x0 + s eps`` with SD3's logit-normal ``s`` (and
the scheduler's shift) and regresses ``v_theta(x_s, s, c)`` to ``eps - x0``.

    accelerate launch -m trainer.sft trainer/configs/sft_tiny.yaml
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from flowmodels.adapters import LoraSpec, using
from flowmodels.backend import Conditioning
from flowmodels.sampling import rollout
from harness.benchmarks import PromptItem
from trainer import checkpoints, evalhook, folders, metrics, optim, runs, student
from trainer.config import ConfigError, DataConfig, OptimConfig, RunConfig
from trainer.data import audit_split, load_datasets
from trainer.objectives import flow_matching_loss, noisy_latents, train_sigmas

log = logging.getLogger(__name__)

_PROMPTS = "harness/prompts"


@dataclass(frozen=True)
class Config:
    """SFT cold start from the GenEval, OCR and PickScore teachers (official Flow-GRPO LoRAs)."""

    model: str = "stabilityai/stable-diffusion-3.5-medium"
    init: str | None = None
    teachers: dict[str, str] = field(
        default_factory=lambda: {
            "geneval": "jieliu/SD3.5M-FlowGRPO-GenEval",
            "ocr": "jieliu/SD3.5M-FlowGRPO-Text",
            "pickscore": "jieliu/SD3.5M-FlowGRPO-PickScore",
        }
    )
    datasets: dict[str, str] = field(
        default_factory=lambda: {
            "geneval": f"{_PROMPTS}/geneval_train/train_metadata.jsonl",
            "ocr": f"{_PROMPTS}/ocr_train/train.txt",
            "pickscore": f"{_PROMPTS}/pickscore_train/train.txt",
        }
    )
    data: DataConfig = field(default_factory=DataConfig)
    prompts_per_task: int = 512
    images_per_prompt: int = 1
    sample_steps: int = 40  # the evaluation sampler: Euler ODE, 40 steps, CFG 4.5
    cfg: float = 4.5
    size: int = 512
    negative_prompt: str = ""
    t5_length: int = 128
    batch_size: int = 8  # per process, for teacher sampling and training
    grad_accum: int = 1
    timesteps: Literal["logit_normal", "uniform"] = "logit_normal"
    shift: float = 3.0  # SD3.5's scheduler shift
    lora: LoraSpec = field(default_factory=LoraSpec)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4))
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/sft"))

    def __post_init__(self) -> None:
        for task in self.datasets:
            if task not in self.teachers:
                raise ConfigError(
                    f"task {task!r} has prompts but no teacher: add teachers.{task}=PATH "
                    f"(teachers cover {sorted(self.teachers)})"
                )
        for name in (
            "prompts_per_task",
            "images_per_prompt",
            "sample_steps",
            "batch_size",
            "grad_accum",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")


def plan_samples(pools: dict[str, list[PromptItem]], cfg: Config) -> list[tuple[PromptItem, int]]:
    """Every (prompt, seed) the teachers sample: ``prompts_per_task`` prompts per task, fixed by the seed."""
    rng = np.random.default_rng([cfg.run.seed, 7])
    out = []
    for task in sorted(pools):
        pool = pools[task]
        n = min(cfg.prompts_per_task, len(pool))
        for i in sorted(rng.choice(len(pool), size=n, replace=False).tolist()):
            for _ in range(cfg.images_per_prompt):
                out.append((pool[i], int(rng.integers(0, 2**31 - 1))))
    return out


def main(cfg: Config) -> None:
    """Sample from the teachers, then train the student with flow matching; leave ``lora/`` + manifest."""
    runs.setup_logging()
    if not runs.check_folder("sft", cfg.run):  # a folder holding a run: refused, or finished
        return
    teacher_dirs = {
        task: folders.check_adapter_base(f"teachers.{task}", src, cfg.model)
        for task, src in cfg.teachers.items()
    }
    init = folders.check_adapter_base("init", cfg.init, cfg.model) if cfg.init is not None else None
    pools = load_datasets(cfg.datasets)
    parents = {"init": init, **{f"teachers.{task}": f for task, f in teacher_dirs.items()}}
    audit = audit_split(pools, cfg.data.allow_eval_prompts, parents)
    run = runs.start("sft", cfg, cfg.run, audit)
    todo = plan_samples(pools, cfg)[run.rank :: run.world]
    if not todo:
        raise ConfigError(f"{run.world} processes but too few teacher samples to give each one")

    model = student.load_base(run, cfg.model, cfg.t5_length)
    net = model.denoiser
    student.attach_student(run, net, cfg.lora, cfg.init, cfg.model)
    for task, folder in sorted(teacher_dirs.items()):
        student.attach_frozen(net, f"teacher_{task}", folder)
    x0, cond = _teacher_samples(run, model, net, todo, cfg)
    tr = optim.prepare(run, net, cfg.optim)
    checkpoints.resume(run, tr)
    runs.begin(run)  # the per-step progress line from here
    eval_protocol = evalhook.protocol(cfg.run, cfg.cfg, cfg.size, cfg.t5_length)  # run.eval_every

    n = x0.shape[0]
    tr.ddp.train()
    while run.step < run.rcfg.max_steps:
        sums: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            seed = np.random.SeedSequence(
                [run.rcfg.seed, run.step, micro, run.rank]
            ).generate_state(1)[0]
            g = torch.Generator().manual_seed(int(seed))
            idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=g)
            noise = torch.randn(x0[idx].shape, generator=g)
            sigma = train_sigmas(len(idx), g, scheme=cfg.timesteps, shift=cfg.shift)
            x_s = noisy_latents(x0[idx], noise, sigma)
            sync = micro == cfg.grad_accum - 1
            with optim.no_sync(run, tr, sync), run.acc.autocast(), optim.student_forward(model, tr):
                dev = run.acc.device
                v = model.velocity(x_s.to(dev), sigma.to(dev), cond.select(idx).to(dev))
                loss = flow_matching_loss(v, x0[idx].to(dev), noise.to(dev))
                run.acc.backward(loss / cfg.grad_accum)
            sums["loss/flow_matching"] = (
                sums.get("loss/flow_matching", 0.0) + float(loss.detach()) / cfg.grad_accum
            )
        norm = optim.optimizer_step(run, tr, cfg.optim)  # clip, step, schedule, zero, count
        optim.after_batch(
            run, tr
        )  # the EMA: an SFT step's micro-batches are one batch to its cadence
        metrics.log_step(run, tr, {**sums, "train/grad_norm": norm})
        evalhook.maybe_evaluate(run, model, tr, eval_protocol)
        if checkpoints.checkpoint_due(run, run.step - 1):
            checkpoints.save_checkpoint(run, tr)
    runs.finish(run, tr, cfg.model, {"teachers": dict(cfg.teachers)})


def _teacher_samples(
    run: runs.Run, model, net: torch.nn.Module, todo: list[tuple[PromptItem, int]], cfg: Config
) -> tuple[torch.Tensor, Conditioning]:
    """Clean latents and prompt conditioning from each task's teacher (cached per rank in the run folder)."""
    cache = run.out / "teacher_samples" / f"rank{run.rank}_of{run.world}.pt"
    todo = sorted(todo, key=lambda pair: pair[0].task)  # one adapter switch per task
    key = [(it.task, it.index, seed) for it, seed in todo]
    if cache.exists():
        saved = torch.load(cache, weights_only=False)
        if saved["key"] == key:
            log.info("reusing %d teacher samples from %s", len(key), cache)
            return saved["x0"], Conditioning(saved["embeds"], saved["pooled"])
    latents, conds = [], []
    net.eval()
    with torch.no_grad(), run.acc.autocast():
        for task in sorted({it.task for it, _ in todo}):
            mine = [(it, seed) for it, seed in todo if it.task == task]
            with using(net, f"teacher_{task}"):
                for lo in range(0, len(mine), cfg.batch_size):
                    chunk = mine[lo : lo + cfg.batch_size]
                    ro = rollout(
                        model,
                        [it.prompt for it, _ in chunk],
                        [seed for _, seed in chunk],
                        steps=cfg.sample_steps,
                        cfg=cfg.cfg,
                        noise_level=0.0,
                        height=cfg.size,
                        width=cfg.size,
                        negative_prompt=cfg.negative_prompt,
                        decode=False,
                    )
                    latents.append(ro.latents[:, -1].float().cpu())
                    conds.append(ro.cond.to("cpu"))
    x0 = torch.cat(latents)
    cond = Conditioning.cat(conds)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "x0": x0, "embeds": cond.embeds, "pooled": cond.pooled}, cache)
    log.info("sampled %d teacher images on this process", len(key))
    return x0, cond


if __name__ == "__main__":
    # the recipes' entry point; trainer.rehearse imports the recipes, so only the script imports it
    from trainer import rehearse

    rehearse.cli(Config, main)
