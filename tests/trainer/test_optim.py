"""The EMA: its two cadences, the per-step rule by hand and Flow-GRPO's per-batch rule replayed."""

from __future__ import annotations

import pytest
import torch

from trainer.optim import EMA


def test_ema_step_cadence_by_hand():
    p = torch.nn.Parameter(torch.zeros(3))
    ema = EMA([p], decay=0.9, every=2, cadence="step")
    with torch.no_grad():
        p.fill_(1.0)
    ema.after_step(1)  # not a multiple of `every`: no update
    ema.after_batch(1)  # the batch cadence is off
    assert torch.equal(ema.shadow[0], torch.zeros(3))
    ema.after_step(2)  # d = min((1 + 2) / (10 + 2), 0.9) = 0.25
    assert torch.allclose(ema.shadow[0], torch.full((3,), 0.75))
    ema.after_step(100)  # d = min(101 / 110, 0.9) = 0.9
    assert torch.allclose(ema.shadow[0], torch.full((3,), 0.9 * 0.75 + 0.1))
    with ema.swapped():
        assert torch.allclose(p.detach(), ema.shadow[0])
    assert torch.equal(p.detach(), torch.ones(3))  # restored


def test_ema_batch_cadence_is_flow_grpos():
    """Flow-GRPO's train_sd3.py calls ``ema.step(params, global_step)`` after every training chunk (global_step is
    raised after the chunk whose last micro-step syncs), and its ema.py applies it when (step + 1) % 8 == 0 with
    decay min((1 + s) / (10 + s), 0.9). Replayed here by hand over 40 chunks at 2 chunks per optimizer step, the
    parameter set to the step count after each optimizer step; the EMA driven the way the recipes drive it agrees."""
    chunks_per_step, every = 2, 8
    # the reference, written from Flow-GRPO's loop and ema.py
    ref, global_step, value = 0.0, 0, 0.0
    for chunk in range(40):
        if (chunk + 1) % chunks_per_step == 0:  # the sync micro-step: optimizer step
            global_step += 1
            value = float(global_step)
        if (global_step + 1) % every == 0:
            d = min((1 + global_step) / (10 + global_step), 0.9)
            ref = d * ref + (1 - d) * value
    # ours: optimizer_step -> after_step, the end of each batch -> after_batch
    p = torch.nn.Parameter(torch.zeros(()))
    ema = EMA([p], decay=0.9, every=every, cadence="batch")
    step = 0
    for chunk in range(40):
        if (chunk + 1) % chunks_per_step == 0:
            step += 1
            with torch.no_grad():
                p.fill_(float(step))
            ema.after_step(step)
        ema.after_batch(step)
    assert step == global_step == 20
    assert ema.shadow[0].item() == pytest.approx(ref, rel=1e-6)
    # steps 7 and 15 applied twice each (d = 8 / 17, then 16 / 25): not the once-per-step rule
    once = 0.0
    for s in (8, 16):
        d = min((1 + s) / (10 + s), 0.9)
        once = d * once + (1 - d) * s
    assert abs(ref - once) > 0.5
