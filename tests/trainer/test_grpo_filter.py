"""Flow-GRPO's tied-group filter and per-sample re-batching, checked on the real recipe against the loss written
out from Flow-GRPO's train_sd3.py.

Flow-GRPO (train_sd3.py): advantages ``(r - mean_group) / (std_all + 1e-4)`` clipped to +-5; samples whose advantage
is exactly 0 are dropped (``mask = adv.abs().sum(dim=1) != 0``); the rest are permuted and cut into
``num_batches_per_epoch`` equal chunks; each chunk and trained step adds ``mean_chunk(max(-A rho, -A clip(rho)) +
beta KL)`` to the gradient, divided by the accumulation (chunks per optimizer step x trained steps); KL =
``mean_CHW (mu - mu_ref)^2 / (2 std_dev_t^2)`` with the reference the LoRA disabled. When every chunk lands in one
optimizer step and the kept count divides the number of chunks, that gradient is
``sum_kept sum_j grad(l_bj) / (kept x T)`` whatever the permutation, which is what the reference below computes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scorers
from flowmodels.adapters import disabled
from flowmodels.sampling import recompute_step
from tests.support import fakes
from tests.support.training import QUIET
from trainer import epoch, grpo, metrics, optim, student
from trainer.config import load

BETA = 0.04
CLIP = 1e-4


def _capture(monkeypatch) -> dict:
    """Record the model, the rolled-out batches and, at the first optimizer step, the accumulated gradient and
    the reference gradient computed on the same weights."""
    seen: dict = {}
    real_load, real_sample, real_step = student.load_base, epoch.sample_epoch, optim.optimizer_step

    def load_base(*a, **k):
        seen["model"] = real_load(*a, **k)
        return seen["model"]

    def sample_epoch(*a, **k):
        seen["epoch"] = real_sample(*a, **k)
        return seen["epoch"]

    def optimizer_step(run, tr, ocfg):
        if "ours" not in seen:
            seen["ours"] = [p.grad.detach().clone() for p in tr.params]
            for p in tr.params:
                p.grad = None
            _reference_backward(seen["model"], tr, seen["epoch"].batches, run.cfg)
            seen["ref"] = [p.grad.detach().clone() for p in tr.params]
            for p, g in zip(tr.params, seen["ours"], strict=True):
                p.grad = g.clone()
        return real_step(run, tr, ocfg)

    monkeypatch.setattr(student, "load_base", load_base)
    monkeypatch.setattr(epoch, "sample_epoch", sample_epoch)
    monkeypatch.setattr(optim, "optimizer_step", optimizer_step)
    return seen


def _reference_backward(model, tr, batches, cfg) -> None:
    """Flow-GRPO's loss on the kept samples, written out here (not through trainer.objectives)."""
    rewards = np.concatenate([b.rewards.numpy() for b in batches])
    g = cfg.sample.group_size
    groups = rewards.reshape(-1, g)
    adv = ((groups - groups.mean(axis=1, keepdims=True)) / (rewards.std() + 1e-4)).reshape(-1)
    adv = np.clip(adv, -5, 5)
    adv[np.repeat((groups == groups[:, :1]).all(axis=1), g)] = 0.0  # a tied group: exactly 0
    keep = np.nonzero(adv != 0)[0] if cfg.drop_tied_groups else np.arange(len(adv))
    ro = type(batches[0].ro).cat([b.ro for b in batches]).select(torch.as_tensor(keep))
    a = torch.as_tensor(adv[keep], dtype=torch.float32)
    steps = cfg.sample.trained_steps(None)
    total = 0.0
    with optim.student_forward(model, tr):
        for j in steps:
            st = recompute_step(model, ro, j)
            ratio = torch.exp(st.log_prob - ro.log_probs[:, j])
            policy = torch.maximum(-a * ratio, -a * ratio.clamp(1 - CLIP, 1 + CLIP))
            with torch.no_grad(), disabled(tr.net):
                ref = recompute_step(model, ro, j)
            kl = ((st.mean - ref.mean) ** 2).mean(dim=(1, 2, 3)) / (2 * st.sigma_t.view(-1) ** 2)
            total = total + (policy + cfg.kl_beta * kl).sum()
    (total / (len(keep) * len(steps))).backward()


def _config(tmp_path, monkeypatch, drop: bool, beta: float = BETA):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\na tied knot\na blue ball\na tied bow\n")
    monkeypatch.setitem(scorers.SCORERS, "fake_tied", fakes.FAKES["fake_tied"])
    return load(
        grpo.Config,
        None,
        [
            "model=tiny",
            f"datasets={{fake: {prompts}}}",
            "rewards={fake_tied: 1.0}",
            f"kl_beta={beta}",
            f"clip_range={CLIP}",
            f"drop_tied_groups={str(drop).lower()}",
            "sample={steps: 4, size: 32, group_size: 4, groups_per_epoch: 4, batch_size: 4, "
            "steps_per_epoch: 1, timestep_fraction: 0.75}",
            "lora={rank: 4, alpha: 8}",
            f"run={{out: {tmp_path / 'run'}, max_steps: 1, mixed_precision: 'no', ema: false}}",
            *QUIET,
        ],
    )


@pytest.mark.parametrize("drop", [True, False])
def test_policy_gradient_with_tied_groups(tiny_home, tmp_path, monkeypatch, drop):  # noqa: F811
    """Filter on: the recipe's accumulated gradient is Flow-GRPO's. Off: every sample stays in the loss."""
    seen = _capture(monkeypatch)
    cfg = _config(tmp_path, monkeypatch, drop)
    grpo.main(cfg)
    rewards = torch.cat([b.rewards for b in seen["epoch"].batches]).view(-1, 4)
    tied = (rewards == rewards[:, :1]).all(dim=1)
    assert tied.sum() == 2, "the epoch must hold two tied groups (prompts that say 'tied')"
    for ours, ref in zip(seen["ours"], seen["ref"], strict=True):  # float32 sums in another order
        assert (ours - ref).norm() <= 1e-4 * ref.norm()
    kept = metrics.read_metrics(tmp_path / "run")[0]["train/kept_fraction"]
    assert kept == (0.5 if drop else 1.0)


def test_without_the_filter_the_policy_gradient_is_the_kept_share(tiny_home, tmp_path, monkeypatch):  # noqa: F811
    """beta 0: dropping tied samples only changes the denominator, so keeping them scales the policy gradient by
    kept / total = 1/2 (the 0.5x the issue measured)."""
    grads = {}
    for drop in (True, False):
        seen = _capture(monkeypatch)
        (tmp_path / str(drop)).mkdir()
        grpo.main(_config(tmp_path / str(drop), monkeypatch, drop, beta=0.0))
        grads[drop] = seen["ours"]
    for with_filter, without in zip(grads[True], grads[False], strict=True):
        assert (without - 0.5 * with_filter).norm() <= 1e-4 * with_filter.norm()
    assert any(g.abs().sum() > 0 for g in grads[True])
