"""Pretrain the mini model on the mini world by flow matching (the base model every mini experiment starts from).

Rectified-flow / flow-matching objective in the diffusers convention (docs/method.md 1): ``x_s = (1 - s) x0 + s eps``,
regress ``v_theta(x_s, s, c)`` onto ``eps - x0``, with ``s`` drawn logit-normal (SD3's choice) and the prompt
dropped to "" 10% of the time so classifier-free guidance works. An EMA of the weights is what gets saved.

Reproduce the shipped checkpoint (two stages, about 40 + 47 minutes on 2 CPU cores; the second continues the
first with smaller batches and a cosine decay, and each stage's record, the first's included, is in
``model_index.json``)::

    python -m trainer.pretrain --out /tmp/mini-stage1 --max-steps 2651 --minutes 60 --seed 0
    python -m trainer.pretrain --out flowmodels/assets/mini-base --init /tmp/mini-stage1 --batch 64 \
        --lr 1e-3 --schedule cosine --max-steps 6900 --minutes 60

The checkpoint is deliberately decent but imperfect (it should leave room for GRPO to learn).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from flowmodels.mini import MiniConfig, MiniFlow
from mini_world import world
from trainer.objectives import flow_matching_loss, noisy_latents, train_sigmas

log = logging.getLogger(__name__)


def world_batch(stream, batch: int) -> tuple[list[str], torch.Tensor]:  # noqa: ANN001
    """(prompts, images in [-1, 1] as [B, 3, 32, 32]) from a ``mini_world.world.sample_pairs`` stream."""
    prompts, arrays = [], []
    for _ in range(batch):
        meta, img = next(stream)
        prompts.append(meta["prompt"])
        arrays.append(np.asarray(img, dtype=np.float32))
    x0 = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0
    return prompts, x0


def lr_at(step: int, peak: float, total: int, schedule: str, warmup: int = 200) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up over ``warmup`` steps, then constant or cosine to 0."""
    lr = peak * min(1.0, (step + 1) / warmup)
    if schedule == "cosine":
        lr *= 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))
    return lr


def batch_loss(model, prompts: list[str], x0: torch.Tensor, drop: float, gen: torch.Generator):  # noqa: ANN001, ANN201
    """One flow-matching loss on a batch, training text encoder and denoiser together (``drop``: the share of
    prompts replaced by the empty one, for classifier-free guidance)."""
    b = x0.shape[0]
    keep = torch.rand(b, generator=gen) >= drop
    prompts = [p if k else "" for p, k in zip(prompts, keep.tolist(), strict=True)]
    tokens, pooled = model.text_encoder(model.encode_ids(prompts))
    s = train_sigmas(b, gen, scheme="logit_normal", shift=1.0)
    eps = torch.randn(x0.shape, generator=gen)
    v = model.denoiser(noisy_latents(x0, eps, s), s * 1000, tokens, pooled)
    return flow_matching_loss(v, x0, eps)


def _save(model, ema, args, argv, step, losses, start, previous=None) -> Path:  # noqa: ANN001
    """Write the EMA weights (swapped in for the save, then swapped back) with the recipe in model_index.json."""
    trained = (model.text_encoder, model.denoiser)
    model.text_encoder, model.denoiser = ema
    try:
        out = model.save_pretrained(
            args.out,
            extra={
                "pretrain": {
                    "steps": step,
                    "minutes": round((time.time() - start) / 60, 2),
                    "batch": args.batch,
                    "lr": args.lr,
                    "ema": args.ema,
                    "seed": args.seed,
                    "init": str(args.init) if args.init else None,
                    "schedule": args.schedule,
                    "faded": args.faded,
                    "final_loss": float(np.mean(losses[-100:])) if losses else None,
                    "command": "python -m trainer.pretrain "
                    + " ".join(argv if argv is not None else sys.argv[1:]),
                    # the stage this one continued from (its own record), so a chain reproduces step by step
                    "previous": previous,
                }
            },
        )
        (Path(args.out) / "loss.json").write_text(json.dumps(losses[:: max(1, len(losses) // 500)]))
    finally:
        model.text_encoder, model.denoiser = trained
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(
        prog="python -m trainer.pretrain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--out", type=Path, required=True, help="folder for the checkpoint")
    ap.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget")
    ap.add_argument("--max-steps", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="learning rate after the 200-step warm-up: constant, or cosine to 0 at --max-steps",
    )
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--faded",
        type=float,
        default=0.0,
        help="share of training images on the faded background (mini_world.world.fade), unmentioned by prompts",
    )
    ap.add_argument("--dim", type=int, default=MiniConfig.dim)
    ap.add_argument("--layers", type=int, default=MiniConfig.layers)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--init", type=Path, default=None, help="continue from a saved mini checkpoint")
    ap.add_argument(
        "--save-every", type=int, default=500, help="also save the EMA weights every N steps"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    previous = None
    if args.init is not None:
        previous = json.loads((Path(args.init) / "model_index.json").read_text()).get("pretrain")
        model = MiniFlow.from_pretrained(args.init, str(args.init))
        model.text_encoder.requires_grad_(True).train()
        model.denoiser.requires_grad_(True).train()
    else:
        model = MiniFlow.create(MiniConfig(dim=args.dim, layers=args.layers), seed=args.seed)
    params = list(model.text_encoder.parameters()) + list(model.denoiser.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ema = copy.deepcopy((model.text_encoder, model.denoiser))
    stream = world.sample_pairs(
        world.TASKS, "train", seed=args.seed + (1000 if args.init else 0), faded=args.faded
    )
    gen = torch.Generator().manual_seed(args.seed)
    start, step, losses = time.time(), 0, []
    deadline = start + args.minutes * 60
    while step < args.max_steps and time.time() < deadline:
        prompts, x0 = world_batch(stream, args.batch)
        lr = lr_at(step, args.lr, args.max_steps, args.schedule)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = batch_loss(model, prompts, x0, 0.1, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for src, dst in zip(params, [p for m in ema for p in m.parameters()], strict=True):
                dst.lerp_(src, 1 - decay)
        losses.append(loss.item())
        step += 1
        if args.save_every and step % args.save_every == 0:
            _save(model, ema, args, argv, step, losses, start, previous)
        if step % args.log_every == 0:
            log.info(
                "step %d loss %.4f (%.2f s/step)",
                step,
                np.mean(losses[-args.log_every :]),
                (time.time() - start) / step,
            )
    out = _save(model, ema, args, argv, step, losses, start, previous)
    log.info("saved %s after %d steps", out, step)
    (Path(args.out) / "loss.json").write_text(json.dumps(losses[:: max(1, len(losses) // 500)]))
    return out


if __name__ == "__main__":
    main()
