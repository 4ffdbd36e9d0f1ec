"""The epoch's re-batching (Flow-GRPO's tied-group filter and per-sample shuffle) on traceable fake rollouts."""

from __future__ import annotations

import torch

from harness.benchmarks import PromptItem
from trainer.epoch import regroup


def _epoch(advantages: list[float], batch_size: int):
    """Batches of a fake epoch: sample i's latents hold the value i, so the regrouped rows can be traced."""
    from types import SimpleNamespace

    from flowmodels.backend import Conditioning
    from flowmodels.sampling import Rollout
    from trainer.epoch import Batch

    batches = []
    for lo in range(0, len(advantages), batch_size):
        ids = list(range(lo, min(lo + batch_size, len(advantages))))
        n = len(ids)
        ro = Rollout(
            latents=torch.tensor(ids, dtype=torch.float32)
            .view(n, 1, 1, 1, 1)
            .expand(n, 3, 1, 1, 1),
            log_probs=torch.zeros(n, 2),
            sigmas=torch.tensor([1.0, 0.5, 0.0]),
            images=None,
            cond=Conditioning(torch.zeros(n, 2, 3), torch.zeros(n, 3)),
            uncond=None,
            seeds=ids,
            noise_level=0.7,
            cfg=4.5,
        )
        items = [PromptItem(f"p{i}", i, f"p{i}", task="t") for i in ids]
        batches.append(Batch(ro, items, torch.zeros(n), torch.tensor([advantages[i] for i in ids])))
    run = SimpleNamespace(rcfg=SimpleNamespace(seed=3), epoch=5, rank=0)
    return run, batches


def test_regroup_drops_tied_samples_and_rebatches_as_flow_grpo():
    adv = [0.0] * 8 + [
        1.0,
        -1.0,
        2.0,
        -2.0,
        0.5,
    ]  # 13 samples, 5 with a nonzero advantage, 4 batches
    run, batches = _epoch(adv, 4)
    out = regroup(run, batches, drop_tied=True)
    # 5 kept -> 3 tied ones come back to make 8 (a multiple of 4 batches): 4 batches of 2
    assert (out.kept, out.total) == (8, 13) and [len(b.items) for b in out.batches] == [2] * 4
    rows = [int(i) for b in out.batches for i in b.ro.latents[:, 0].flatten().tolist()]
    assert set(range(8, 13)) <= set(rows) and len(set(rows)) == 8  # every nonzero one, no repeats
    for b in out.batches:  # rows travel with their items, seeds and advantages
        ids = [int(x) for x in b.ro.latents[:, 0].flatten().tolist()]
        assert [it.index for it in b.items] == ids == b.ro.seeds
        assert b.advantages.tolist() == [adv[i] for i in ids]
    again = regroup(*_epoch(adv, 4), drop_tied=True)  # the draws come from seed, epoch and rank
    assert [it.index for b in again.batches for it in b.items] == [
        it.index for b in out.batches for it in b.items
    ]


def test_regroup_keeps_one_sample_per_batch_when_every_group_is_tied():
    run, batches = _epoch([0.0] * 12, 3)  # Flow-GRPO would reshape 0 samples and fail
    out = regroup(run, batches, drop_tied=True)
    assert out.kept == 4 and [len(b.items) for b in out.batches] == [1] * 4


def test_regroup_without_the_filter_shuffles_samples_or_whole_batches():
    run, batches = _epoch([1.0] * 12, 3)
    by_sample = regroup(run, batches, shuffle="samples")
    ids = [it.index for b in by_sample.batches for it in b.items]
    assert sorted(ids) == list(range(12)) and ids != list(range(12))
    whole = regroup(run, batches, shuffle="batches")
    assert sorted(tuple(it.index for it in b.items) for b in whole.batches) == [
        tuple(range(i, i + 3)) for i in range(0, 12, 3)
    ]
