"""One GRPO step and OPD's teacher/anchor labels on a fixed batch, the same batch on every rank, written to
``OUT/rank{r}.pt``: launched on 2 processes under FSDP2 (``accelerate launch --config_file .../fsdp.yaml``) and
run as a single process, so tests/trainer/test_fsdp.py can compare the two.

    python tests/support/fsdp_step.py OUT TEACHER_A TEACHER_B ANCHOR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from flowmodels.sampling import rollout
from harness.dist import shutdown_distributed
from trainer import epoch, grpo, opd, optim, runs, student
from trainer.config import load

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["a red cube", "two cats", "a sign that says hi", "a blue bird"]
SEEDS = [11, 12, 13, 14]
ADVANTAGES = torch.tensor([1.0, -0.5, 0.25, 0.75])
NAMES = ["teacher_a", "teacher_b"]


def routings(world: int, rank: int) -> dict[int, torch.Tensor]:
    """Each rank's routing ([4, 2], by the rank it stands for): rank 0 sends rows 0-1 to teacher_a and rows 2-3
    to teacher_b, rank 1 everything to teacher_a (unequal per-adapter passes). One process computes both."""
    split = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    one = torch.tensor([[1.0, 0.0]] * 4)
    table = {0: split, 1: one}
    return table if world == 1 else {rank: table[rank]}


def main(out: Path, teacher_a: Path, teacher_b: Path, anchor: Path) -> None:
    cfg = load(
        grpo.Config,
        ROOT / "trainer" / "configs" / "grpo_tiny.yaml",
        [
            "run.log_with=none",
            f"run.out={out / 'run'}",
            "run.overwrite=true",
            "run.ema=false",
            "run.save_every=0",
        ],
    )
    run = runs.start("grpo", cfg, cfg.run)
    model = student.load_base(run, cfg.model, cfg.sample.t5_length)
    net = model.denoiser
    student.attach_student(run, net, cfg.lora, None, cfg.model)
    g = torch.Generator().manual_seed(
        5
    )  # a student that differs from the base: the KL term is not 0
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name and ".student." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    for name, folder in zip(NAMES, (teacher_a, teacher_b), strict=True):
        student.attach_frozen(net, name, folder)
    student.attach_frozen(net, opd.ANCHOR, anchor)
    tr = optim.prepare(run, net, cfg.optim)
    base = dict(net.named_parameters())["transformer_blocks.0.attn.to_q.base_layer.weight"]
    local = base.to_local() if hasattr(base, "to_local") else base
    s = cfg.sample
    net.eval()
    with torch.no_grad():  # sampling through the (sharded) student
        ro = rollout(
            model,
            PROMPTS,
            SEEDS,
            steps=s.steps,
            cfg=s.cfg,
            noise_level=s.noise_level,
            height=s.size,
            width=s.size,
            decode=False,
        )
    net.train()
    labels = {}
    for r, alpha in routings(run.world, run.rank).items():
        v, va = opd.labels(model, net, ro, 1, NAMES, alpha, anchor=True)
        mixable = opd.mixable
        opd.mixable = lambda _net: False  # the one-pass-per-adapter branch
        try:
            v2, va2 = opd.labels(model, net, ro, 1, NAMES, alpha, anchor=True)
        finally:
            opd.mixable = mixable
        labels[r] = {"mixed": v, "anchor": va, "per_adapter": v2, "anchor_per_adapter": va2}
    b = epoch.Batch(ro=ro, items=[], advantages=ADVANTAGES)
    with run.acc.autocast():
        loss, pol, kl = grpo.step_loss(cfg, model, tr, b, 0)
        run.acc.backward(loss)
    norm = optim.optimizer_step(run, tr, cfg.optim)
    state = optim.student_state(tr)
    torch.save(
        {
            "world": run.world,
            "sharded": optim.sharded(net),
            "base_numel": (base.numel(), local.numel()),
            "loss": float(loss.detach()),
            "kl": float(kl.detach()),
            "grad_norm": norm,
            "state": {k: v.cpu() for k, v in state.items()},
            "labels": labels,
        },
        out / f"rank{run.rank}.pt",
    )
    run.acc.wait_for_everyone()
    if run.world > 1:
        shutdown_distributed()


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:5]))
