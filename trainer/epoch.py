"""An epoch of on-policy rollouts: the per-process layout, the plan, this process's share of it rolled out, and
Flow-GRPO's re-batching before training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from flowmodels.backend import FlowModel
from flowmodels.sampling import Rollout, rollout
from harness.benchmarks import PromptItem
from trainer.config import ConfigError, SampleConfig
from trainer.data import plan_epoch, shard

if TYPE_CHECKING:
    from trainer.runs import Run

# how much of each rollout an epoch keeps (``rollout_stop``)
Keep = Literal["all", "transitions", "states"]


class EpochLayout(NamedTuple):
    """Per-process share of an epoch, derived from the global numbers and the world size."""

    images_per_rank: int
    batches_per_rank: int
    accum_batches: int  # batches per optimizer step


def epoch_layout(sample: SampleConfig, world: int) -> EpochLayout:
    """Flow-GRPO's derivation: ``groups * G / world`` images per GPU, in batches, ``steps_per_epoch`` updates."""
    total = sample.groups_per_epoch * sample.group_size
    if total % world:
        raise ConfigError(
            f"{sample.groups_per_epoch} groups x {sample.group_size} images = {total} images per epoch do not "
            f"split over {world} processes; change sample.groups_per_epoch or sample.group_size"
        )
    per_rank = total // world
    if per_rank % sample.batch_size:
        raise ConfigError(
            f"{per_rank} images per process (of {total} per epoch over {world}) are not a multiple of "
            f"sample.batch_size={sample.batch_size}"
        )
    batches = per_rank // sample.batch_size
    if batches % sample.steps_per_epoch:
        raise ConfigError(
            f"{batches} batches per process per epoch do not split into sample.steps_per_epoch="
            f"{sample.steps_per_epoch} optimizer steps"
        )
    return EpochLayout(per_rank, batches, batches // sample.steps_per_epoch)


@dataclass
class Batch:
    """One sampled batch on this process: the rollout and the prompt items behind it."""

    ro: Rollout
    items: list[PromptItem]
    rewards: Tensor | None = None  # [b] totals (filled by recipes that score)
    advantages: Tensor | None = None  # [b]


class EpochRollouts(NamedTuple):
    """One epoch's sampling: this process's share (``mine`` of the plan's images), its batches and the SDE window."""

    mine: slice
    batches: list[Batch]
    window: tuple[int, int] | None


def sample_epoch(
    run: Run,
    model: FlowModel,
    pools: dict[str, list[PromptItem]],
    s: SampleConfig,
    *,
    keep: Keep = "all",
    **mixing: Mapping[str, float] | None,
) -> EpochRollouts:
    """Plan the epoch (the same on every process; ``mixing``: ``partitions`` or ``task_mix``), take this process's
    share of it and roll it out with the epoch's SDE window, as far as ``keep`` needs (``rollout_stop``)."""
    plan = plan_epoch(
        pools,
        run.epoch,
        groups=s.groups_per_epoch,
        group_size=s.group_size,
        seed=run.rcfg.seed,
        **mixing,
    )
    mine = shard(len(plan.items), run.rank, run.world)
    window = s.sde_window(run.rcfg.seed, run.epoch)
    stop = rollout_stop(s, window, keep)
    return EpochRollouts(
        mine, sample(run, model, plan.items[mine], plan.seeds[mine], s, window, stop), window
    )


def rollout_stop(s: SampleConfig, window: tuple[int, int] | None, keep: Keep) -> int | None:
    """How many sampling steps an epoch's rollouts take (None: all of them, decoded for rewards).

    ``"all"``: every step and the final images; ``"transitions"``: up to the next state of the last trained step
    (its log-prob needs it); ``"states"``: up to the last trained state (a velocity loss reads only the visited
    states). The steps after it change nothing that training reads, so they are not taken.
    """
    if keep == "all":
        return None
    last = max(s.trained_steps(window))
    return last + 1 if keep == "transitions" else last


def sample(
    run: Run,
    model: FlowModel,
    items: list[PromptItem],
    seeds: list[int],
    scfg: SampleConfig,
    sde_window: tuple[int, int] | None = None,
    stop: int | None = None,
) -> list[Batch]:
    """SDE rollouts of this process's items with the student, in ``batch_size`` chunks (no gradient).

    ``sde_window``: this epoch's ``scfg.sde_window(...)`` (SDE only on those steps), None for the SDE throughout.
    ``stop``: take only that many steps, no images (``rollout_stop``).
    """
    batches = []
    was_training = model.denoiser.training
    model.denoiser.eval()
    with run.acc.autocast():
        for lo in range(0, len(items), scfg.batch_size):
            chunk = items[lo : lo + scfg.batch_size]
            ro = rollout(
                model,
                [it.prompt for it in chunk],
                seeds[lo : lo + scfg.batch_size],
                steps=scfg.steps,
                cfg=scfg.cfg,
                noise_level=scfg.noise_level,
                height=scfg.size,
                width=scfg.size,
                negative_prompt=scfg.negative_prompt,
                logprob=scfg.logprob,
                sde_window=sde_window,
                stop=stop,
            )
            batches.append(Batch(ro=ro, items=chunk))
    model.denoiser.train(was_training)
    return batches


class Regrouped(NamedTuple):
    """This process's epoch, ready to train: its batches in training order and how many samples they keep."""

    batches: list[Batch]
    kept: int  # samples trained on (all of them without the tied-group filter)
    total: int  # samples rolled out


def regroup(
    run: Run, batches: list[Batch], *, drop_tied: bool = False, shuffle: str = "samples"
) -> Regrouped:
    """Order this process's epoch for training, as Flow-GRPO's train_sd3.py does before its inner epoch.

    ``drop_tied`` (Flow-GRPO's filter): samples whose advantage is exactly 0 (every reward of their group equal)
    are dropped from the loss, policy and KL term alike; randomly chosen dropped ones come back until the kept
    count divides the number of batches, and at least one per batch (where Flow-GRPO would fail on an empty one).
    ``shuffle="samples"``: one permutation of the kept samples, cut into as many equal batches as were rolled
    out (smaller ones when samples were dropped); ``"batches"``: the rolled-out batches in a shuffled order.
    The draws come from the run seed, the epoch and the rank, so a resumed run repeats them.
    """
    n_batches = len(batches)
    sizes = [len(b.items) for b in batches]
    total = sum(sizes)
    if shuffle == "batches" and not drop_tied:
        order = torch.randperm(
            n_batches, generator=torch.Generator().manual_seed(run.rcfg.seed + run.epoch)
        )
        return Regrouped([batches[i] for i in order.tolist()], total, total)
    seed = np.random.SeedSequence([run.rcfg.seed, run.epoch, run.rank]).generate_state(1)[0]
    g = torch.Generator().manual_seed(int(seed))
    keep = torch.ones(total, dtype=torch.bool)
    if drop_tied:
        if any(b.advantages is None for b in batches):
            raise RuntimeError("regroup(drop_tied=True) needs every batch's advantages")
        keep = torch.cat([b.advantages for b in batches]) != 0  # type: ignore[misc]
        kept = int(keep.sum())
        need = n_batches - kept if kept < n_batches else (-kept) % n_batches
        dropped = torch.nonzero(~keep).flatten()
        keep[dropped[torch.randperm(len(dropped), generator=g)[:need]]] = True
    rows = torch.nonzero(keep).flatten()
    if shuffle == "samples":
        rows = rows[torch.randperm(len(rows), generator=g)]
    chunks = list(rows.view(n_batches, -1))
    if shuffle == "batches":
        chunks = [chunks[i] for i in torch.randperm(n_batches, generator=g).tolist()]
    ro = Rollout.cat([b.ro for b in batches])
    ro.images = None  # scored already; training needs the trajectory only
    items = [it for b in batches for it in b.items]
    rewards = (
        torch.cat([b.rewards for b in batches])
        if all(b.rewards is not None for b in batches)
        else None
    )
    adv = (
        torch.cat([b.advantages for b in batches])
        if all(b.advantages is not None for b in batches)
        else None
    )
    out = [
        Batch(
            ro=ro.select(c),
            items=[items[i] for i in c.tolist()],
            rewards=None if rewards is None else rewards[c],
            advantages=None if adv is None else adv[c],
        )
        for c in chunks
    ]
    return Regrouped(out, len(rows), total)


def gather_cat(run: Run, local: Tensor) -> Tensor:
    """All ranks' [n] tensors concatenated in rank order (the epoch plan's order)."""
    if run.world == 1:
        return local
    return run.acc.gather(local.to(run.acc.device)).cpu()
