"""Does one GRPO policy-gradient estimate point uphill? Per mini-world task, on the shipped mini base (CPU).

Why a teacher learns or not, measured before paying for training. For each task (prompt set + reward):

1. roll out ``--prompts`` train prompts x ``--group`` images with the trainer's SDE (``flowmodels.sampling.rollout``,
   optionally an SDE window), score them with the registry scorer, take GRPO's group advantages and the policy-
   gradient estimate ``g = grad_theta mean_i A_i log p_theta(x_{t+1} | x_t)`` over what the mini presets train (a
   fresh LoRA, r 16, on attention and MLP; B starts at 0 so the first step moves B) with the trainer's own
   log-prob (``flowmodels.sampling.recompute_step``);
2. do it again on another batch of the same size: ``cos(g1, g2)`` is the estimate's signal share (0 = pure noise);
3. step the weights by ``+eps g/|g|`` and ``-eps g/|g|`` and evaluate each with the ODE on held-out train prompts
   and fixed seeds (common random numbers): ``up - down`` is the first-order gain along the estimate.

    PYTHONPATH=. python bench/gradient_signal.py [--tasks geneval ocr quality] [--prompts 128] [--group 4] [--eps 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from result_lines import emit  # noqa: E402  (bench/, the script's own folder)

TASKS = {  # task -> (train prompt file, registry scorer)
    "geneval": ("harness/prompts/mini/geneval_train.jsonl", "mini_geneval"),
    "ocr": ("harness/prompts/mini/ocr_train.jsonl", "mini_ocr"),
    "quality": ("harness/prompts/mini/geneval_train.jsonl", "mini_quality"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--prompts", type=int, default=128, help="prompts per gradient estimate")
    parser.add_argument("--group", type=int, default=4, help="images per prompt (GRPO group)")
    parser.add_argument(
        "--eval-prompts", type=int, default=256, help="held-out prompts, 2 seeds each"
    )
    parser.add_argument("--steps", type=int, default=10, help="SDE sampling steps of the rollouts")
    parser.add_argument("--noise-level", type=float, default=0.7)
    parser.add_argument(
        "--window",
        default="0,2",
        help="SDE window 'start,stop' (the trained steps), or 'none' for the SDE on every step and the "
        "first half trained",
    )
    parser.add_argument("--eps", type=float, default=0.05, help="step length in LoRA-weight space")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "gradient_signal.json"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(ROOT)
    import torch

    import scorers
    from flowmodels.adapters import LoraSpec, add_lora
    from flowmodels.images import to_pil
    from flowmodels.models import load_model
    from flowmodels.sampling import recompute_step, rollout
    from trainer.objectives import group_advantages

    window = None if args.window == "none" else tuple(int(v) for v in args.window.split(","))
    trained = list(range(*window)) if window else list(range(args.steps // 2))
    torch.manual_seed(0)
    model = load_model("mini", device="cpu")
    spec = LoraSpec(rank=16, alpha=32, targets=("to_q", "to_k", "to_v", "to_out", "mlp.0", "mlp.2"))
    add_lora(model.denoiser, "student", spec, trainable=True)
    params = [p for p in model.denoiser.parameters() if p.requires_grad]
    theta = [p.detach().clone() for p in params]

    def rewards(scorer, images, items) -> torch.Tensor:  # noqa: ANN001
        got = scorer(to_pil(images), [it["prompt"] for it in items], items)
        return torch.tensor(got.values, dtype=torch.float64)

    def estimate(scorer, items, seed0: int) -> tuple[list[torch.Tensor], float]:  # noqa: ANN001
        its = [it for it in items for _ in range(args.group)]
        seeds = [seed0 + k for k in range(len(its))]
        ro = rollout(
            model,
            [it["prompt"] for it in its],
            seeds,
            steps=args.steps,
            noise_level=args.noise_level,
            height=32,
            width=32,
            sde_window=window,
        )
        r = rewards(scorer, ro.images, its)
        adv = group_advantages(r, args.group).float()
        model.denoiser.zero_grad()
        for j in trained:
            for lo in range(0, len(its), 64):
                rows = slice(lo, lo + 64)
                lp = recompute_step(model, ro, j, batch=rows).log_prob
                (-(adv[rows] * lp).sum() / (len(its) * len(trained))).backward()
        return [p.grad.detach().clone() for p in params], float(r.mean())

    def evaluate(scorer, items) -> float:  # noqa: ANN001
        its = [it for it in items for _ in range(2)]
        with torch.no_grad():
            ro = rollout(
                model,
                [it["prompt"] for it in its],
                list(range(len(its))),
                steps=10,
                noise_level=0.0,
                height=32,
                width=32,
            )
        return float(rewards(scorer, ro.images, its).mean())

    def set_weights(direction: list[torch.Tensor] | None, scale: float) -> None:
        with torch.no_grad():
            for p, t, d in zip(params, theta, direction or theta, strict=True):
                p.copy_(t if direction is None else t + scale * d)

    results = []
    print(
        f"mini base, {args.prompts} prompts x {args.group} images per estimate, SDE window {window}, "
        f"eps {args.eps}; eval: ODE 10 steps on {args.eval_prompts} held-out prompts x 2 seeds"
    )
    print(
        f"{'task':8s} {'reward':>7s} {'cos(g1,g2)':>10s} {'base':>7s} {'+eps g':>8s} {'-eps g':>8s}  time"
    )
    for task in args.tasks:
        t0 = time.perf_counter()
        path, name = TASKS[task]
        scorer = scorers.load(name)
        items = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        random.Random(5).shuffle(items)
        batch1 = items[: args.prompts]
        batch2 = items[args.prompts : 2 * args.prompts]
        held = items[2 * args.prompts : 2 * args.prompts + args.eval_prompts]
        g1, r1 = estimate(scorer, batch1, 1000)
        g2, _ = estimate(scorer, batch2, 50_000)
        n1 = torch.sqrt(sum((g**2).sum() for g in g1))
        n2 = torch.sqrt(sum((g**2).sum() for g in g2))
        cos = float(sum((a * b).sum() for a, b in zip(g1, g2, strict=True)) / (n1 * n2))
        unit = [g / n1 for g in g1]
        set_weights(None, 0.0)
        base = evaluate(scorer, held)
        set_weights(unit, -args.eps)  # -eps * grad(loss) = up the reward
        up = evaluate(scorer, held)
        set_weights(unit, args.eps)
        down = evaluate(scorer, held)
        set_weights(None, 0.0)
        secs = time.perf_counter() - t0
        print(
            f"{task:8s} {r1:7.3f} {cos:10.3f} {base:7.4f} {up - base:+8.4f} {down - base:+8.4f}  {secs:.0f} s"
        )
        results.append(
            {"task": task, "train_reward": r1, "cos": cos, "base": base, "up": up, "down": down}
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2
        )
    )
    print(f"-> {args.out}")
    emit(
        {
            r["task"]: {"cos": r["cos"], "up": r["up"] - r["base"], "down": r["down"] - r["base"]}
            for r in results
        }
    )


if __name__ == "__main__":
    main()
