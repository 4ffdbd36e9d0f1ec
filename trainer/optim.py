"""The student's optimisation state on one process: AdamW, the warmup schedule, accelerate's wrapping, the EMA,
and the optimizer step itself.

Distributed, DDP or DeepSpeed ZeRO-2: the student's gradient passes go through the DDP-wrapped denoiser
(``student_forward``); sampling, teacher and reference passes use the unwrapped one under ``no_grad`` (so ranks may
run different numbers of them).

FSDP2 (an accelerate config with ``distributed_type: FSDP``, ``fsdp_version: 2``): ``fully_shard`` turns the denoiser
itself into the sharded module, so every pass (student, sampling, teachers, reference, anchor) goes through it and
gathers the full weights on entry; its parameters are DTensor shards. Every rank must therefore run the same number
of passes (the recipes do: equal batches per rank, one label pass per step, see ``trainer.opd.labels``), and the
adapter leaves a rank only through ``student_state`` (a collective: every rank calls it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from flowmodels import adapters
from flowmodels.backend import FlowModel
from trainer.config import OptimConfig
from trainer.student import STUDENT

if TYPE_CHECKING:
    from trainer.runs import Run

log = logging.getLogger(__name__)


class EMA:
    """An EMA of the trainable weights with Flow-GRPO's decay ``min((1 + s) / (10 + s), decay)`` at optimizer step
    ``s`` (its flow_grpo/ema.py), used for evaluation and the saved adapter.

    Cadence ``batch`` (Flow-GRPO's train_sd3.py): ``after_batch(s)`` after every training batch, applied when
    ``(s + 1) % every == 0``, so on such a step once per batch of its accumulation (twice a step at 32 GPUs).
    Cadence ``step``: ``after_step(s)`` once after optimizer step ``s`` (1-based) when ``s % every == 0``.
    """

    def __init__(
        self, params: list[nn.Parameter], decay: float, every: int, cadence: str = "batch"
    ) -> None:
        self.params = params
        self.decay = decay
        self.every = every
        self.cadence = cadence
        self.shadow = [p.detach().clone().float() for p in params]

    def after_batch(self, step: int) -> None:
        """Call after each training batch, with the optimizer steps taken so far."""
        if self.cadence == "batch" and (step + 1) % self.every == 0:
            self._apply(step)

    def after_step(self, step: int) -> None:
        """Call after optimizer step ``step`` (1-based)."""
        if self.cadence == "step" and step % self.every == 0:
            self._apply(step)

    @torch.no_grad()
    def _apply(self, step: int) -> None:
        d = min((1 + step) / (10 + step), self.decay)
        for s, p in zip(self.shadow, self.params, strict=True):
            s.mul_(d).add_(p.detach().float(), alpha=1 - d)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Use the EMA weights inside the block (eval, saving), then restore the trained ones."""
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for s, p in zip(self.shadow, self.params, strict=True):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for b, p in zip(backup, self.params, strict=True):
                    p.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": [s.cpu() for s in self.shadow]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for s, saved in zip(self.shadow, state["shadow"], strict=True):
            s.copy_(saved)


@dataclass
class Training:
    """The student's optimisation state on one process."""

    net: nn.Module  # unwrapped denoiser (adapter switching); under FSDP2 the sharded module itself
    ddp: (
        nn.Module
    )  # what accelerate.prepare returned (DDP on several processes, ``net`` under FSDP2)
    params: list[nn.Parameter]  # the trainable weights (DTensor shards under FSDP2)
    optimizer: Any
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: EMA | None

    @contextmanager
    def eval_weights(self) -> Iterator[None]:
        """EMA weights when EMA is on, else the trained ones."""
        if self.ema is None:
            yield
        else:
            with self.ema.swapped():
                yield


def prepare(run: Run, net: nn.Module, ocfg: OptimConfig) -> Training:
    """AdamW on the trainable (student) weights, a warmup schedule, accelerate's wrapping, EMA."""
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError("no trainable parameters: the student adapter is missing")
    opt = torch.optim.AdamW(
        params, lr=ocfg.lr, betas=ocfg.betas, eps=ocfg.eps, weight_decay=ocfg.weight_decay
    )
    warm = ocfg.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0
    )
    ddp, opt = run.acc.prepare(net, opt)
    if sharded(
        ddp
    ):  # fully_shard replaced the parameters by DTensor shards (the optimizer now holds those)
        params = [p for p in ddp.parameters() if p.requires_grad]
    rc = run.rcfg
    ema = EMA(params, rc.ema_decay, rc.ema_every, rc.ema_cadence) if rc.ema else None
    n = sum(p.numel() for p in params)
    log.info("training %d parameters (%d tensors)", n, len(params))
    return Training(net=net, ddp=ddp, params=params, optimizer=opt, scheduler=sched, ema=ema)


def sharded(net: nn.Module) -> bool:
    """Whether ``net`` is an FSDP2 module (``fully_shard``): its parameters are shards, gathered by its forward."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(net, FSDPModule)


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor shard (a collective: every rank calls it), a plain tensor as it is."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def student_state(tr: Training) -> dict[str, torch.Tensor]:
    """The student adapter's full weights in PEFT's key format, on every rank (under FSDP2 each shard is gathered:
    every rank must call it, in the same place)."""
    return {k: _full(v) for k, v in adapters.adapter_state(tr.net, STUDENT).items()}


@contextmanager
def student_forward(model: FlowModel, tr: Training) -> Iterator[None]:
    """Route the model's forward through the DDP wrapper (gradient sync) for the student's gradient pass."""
    plain = model.denoiser
    model.denoiser = tr.ddp
    try:
        yield
    finally:
        model.denoiser = plain


def no_sync(run: Run, tr: Training, sync: bool) -> Any:
    """Skip DDP's gradient all-reduce on accumulation micro-steps (``sync=False``)."""

    return nullcontext() if sync or run.world == 1 else run.acc.no_sync(tr.ddp)


def optimizer_step(run: Run, tr: Training, ocfg: OptimConfig) -> float:
    """Clip, step, schedule, zero, count, EMA; returns the gradient norm before clipping."""
    if ocfg.grad_clip > 0:
        norm = run.acc.clip_grad_norm_(tr.params, ocfg.grad_clip)
    else:
        norm = _full(
            torch.nn.utils.get_total_norm([p.grad for p in tr.params if p.grad is not None])
        )
    tr.optimizer.step()
    tr.scheduler.step()
    tr.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    if tr.ema is not None:
        tr.ema.after_step(run.step)
    return float(norm)


def after_batch(run: Run, tr: Training) -> None:
    """The end of a training batch (all its trained steps): the EMA's ``batch`` cadence (Flow-GRPO's)."""
    if tr.ema is not None:
        tr.ema.after_batch(run.step)


def replicas_identical(run: Run, tr: Training) -> bool:
    """Whether every rank holds the same trainable weights (DDP must keep them so; under FSDP2, the gathered ones).
    Every rank calls it."""
    flat = torch.cat([_full(p.detach()).float().flatten() for p in tr.params])
    if run.world == 1:
        return True
    rows = run.acc.gather(flat[None].to(run.acc.device)).cpu()
    return bool((rows == rows[0:1]).all())
