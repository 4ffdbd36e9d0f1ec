"""In-loop evaluation: ``harness.evaluate`` on the EMA weights every ``run.eval_every`` steps, into the same store
the command line uses, and ``run.keep_best``'s choice of the step to keep.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flowmodels import adapters
from flowmodels.backend import FlowModel
from harness import benchmarks
from harness.evaluation import evaluate
from harness.protocol import EvalProtocol
from results.store import Store
from trainer.config import ConfigError, RunConfig
from trainer.metrics import log_metrics
from trainer.student import STUDENT

if TYPE_CHECKING:
    from trainer.optim import Training
    from trainer.runs import Run

log = logging.getLogger(__name__)


def check_eval_hook(rcfg: RunConfig) -> None:
    """``run.keep_best`` names benchmarks and scorers the in-loop evaluation has; fail before any work if not."""
    if not rcfg.eval_every:
        return
    for key in rcfg.keep_best:
        bench, _, scorer = key.partition("/")
        try:
            scorers = benchmarks.get(bench).scorers
        except benchmarks.UnknownBenchmarkError as e:
            raise ConfigError(f"run.keep_best {key!r}: {e}") from None
        if scorer not in scorers:
            raise ConfigError(
                f"run.keep_best {key!r}: {bench} is scored by {', '.join(scorers)}, not {scorer!r}"
            )


def protocol(rcfg: RunConfig, cfg: float, size: int, t5_length: int) -> EvalProtocol:
    """The in-loop evaluation's protocol: the paper's (Euler ODE, ``run.eval_steps`` steps; ``EvalProtocol``'s
    defaults for the rest) at the recipe's own CFG, image size and T5 length."""
    return EvalProtocol(
        steps=rcfg.eval_steps, cfg=cfg, height=size, width=size, t5_length=t5_length
    )


def maybe_evaluate(run: Run, model: FlowModel, tr: Training, protocol: EvalProtocol) -> None:
    """Every ``run.eval_every`` steps: ``harness.evaluate`` with the EMA weights under ``protocol``, rows tagged
    with the run id and step, written to the same store the CLI uses; the headline numbers are logged as
    ``eval/<bench>/<scorer>``.

    Every rank calls it (the harness shards the prompts over the processes accelerate launched). With
    ``run.keep_best`` the last step is evaluated too and ``keep_if_best`` decides whether these weights are kept.
    """
    every = run.rcfg.eval_every
    # the checkpoint choice must see the last weights too, whatever eval_every
    last = bool(run.rcfg.keep_best) and run.step == run.rcfg.max_steps
    if not every or (run.step % every and not last):
        return
    with tr.eval_weights():
        result = evaluate(
            model,
            list(run.rcfg.eval_benchmarks),
            run_id=run.run_id,
            step=run.step,
            limit=run.rcfg.eval_limit,
            store=run.rcfg.eval_store,
            protocol=protocol,
            progress=False,
            contaminated=run.audit.contaminated if run.audit is not None else None,
        )
        if not run.main:
            return
        rows = Store(result.store, read_only=True).benchmark_scores(
            run_ids=[run.run_id], latest=False
        )
        flat = {
            f"eval/{r['benchmark']}/{r['scorer']}": float(r["score"])
            for r in rows
            if r["step"] == run.step and r.get("score") is not None
        }
        if run.rcfg.keep_best:
            flat["eval/keep_best"] = keep_if_best(run, tr, flat)
    if flat:
        log_metrics(run, flat)


def keep_if_best(run: Run, tr: Training, flat: dict[str, float]) -> float:
    """``run.keep_best``: the mean of the named in-loop scores; when it beats this run's best so far (ties keep the
    earlier step), save the weights being evaluated to ``best/`` with ``best.json`` written last (a resumed run
    reads it back). Main process, inside ``tr.eval_weights()``. Returns the score."""
    keys = [f"eval/{k}" for k in run.rcfg.keep_best]
    missing = [k for k in keys if k not in flat]
    if missing:
        have = ", ".join(k.removeprefix("eval/") for k in sorted(flat)) or "none"
        raise ConfigError(
            f"run.keep_best names {', '.join(k.removeprefix('eval/') for k in missing)}, which the in-loop "
            f"evaluation did not score (it scored: {have})"
        )
    score = float(np.mean([flat[k] for k in keys]))
    best = read_best(run)
    if best is None or score > best["score"]:
        folder = best_dir(run)
        (folder / "best.json").unlink(missing_ok=True)
        adapters.save_adapter(tr.net, STUDENT, folder)
        record = {
            "run_id": run.run_id,
            "step": run.step,
            "score": score,
            "by": list(run.rcfg.keep_best),
        }
        (folder / "best.json").write_text(json.dumps(record))
        log.info("keep_best: step %d scores %.4f, the best so far", run.step, score)
    else:
        log.info(
            "keep_best: step %d scores %.4f, below step %d's %.4f",
            run.step,
            score,
            best["step"],
            best["score"],
        )
    return score


def best_dir(run: Run) -> Path:
    return run.out / "best"


def read_best(run: Run) -> dict[str, Any] | None:
    """This run's best evaluation so far (``best/best.json``), or None; another run's record does not count."""
    path = best_dir(run) / "best.json"
    if not path.exists():
        return None
    best = json.loads(path.read_text())
    return best if best.get("run_id") == run.run_id else None


def save_best(run: Run, manifest: dict[str, Any]) -> None:
    """``lora/`` = the adapter ``keep_if_best`` saved, with the run's manifest (its ``selected`` says which step)."""

    src, dst = best_dir(run), run.out / "lora"
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "adapter_model.safetensors", dst / "adapter_model.safetensors")
    cfg = json.loads((src / "adapter_config.json").read_text())
    if manifest.get("base_model"):
        cfg["base_model_name_or_path"] = manifest["base_model"]
    (dst / "adapter_config.json").write_text(json.dumps(cfg, indent=2, default=str))
    full = {"adapter": STUDENT, "adapter_config": cfg, **manifest}
    (dst / "manifest.json").write_text(json.dumps(full, indent=2, default=str))
