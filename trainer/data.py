"""Prompt datasets with task tags, and the per-epoch plan of which prompt and seed each rank samples.

A dataset is a prompt file tagged with its task (the key in a recipe's ``datasets`` mapping): ``.txt`` files hold
one prompt per line (Flow-GRPO's OCR and PickScore sets), ``.jsonl`` files one GenEval metadata record per line
(the record travels with the prompt as ``meta``, which the GenEval scorer needs). The task tag routes each prompt to
its teacher in OPD and to its reward in GRPO-Mix.

An epoch's plan is the same on every rank (it depends only on the seed and the epoch): ``groups`` prompts, each
repeated ``group_size`` times with its own per-image seeds, laid out group by group; rank ``r`` samples the
``r``-th contiguous slice, so a group may span ranks, as in Flow-GRPO, and advantages are computed on the gathered
rewards. GRPO-Mix alternates whole epochs between task partitions (GenEval : OCR : PickScore = 3 : 1 : 1).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from flowbase.errors import InputError, MissingError
from harness import splits, trainsets
from harness.benchmarks import PromptItem, load_prompt_file
from harness.splits import Overlap
from trainer.config import ConfigError

log = logging.getLogger(__name__)

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def resolve_prompt_path(path: str | Path) -> Path:
    """A prompt file as given, or relative to the project root (so shipped ``harness/prompts/...`` always work).

    A generated training set (``harness.trainsets``: ``harness/prompts/geneval_train/train_metadata.jsonl``, ...) is
    built on first use and its checksum checked every time."""
    p = Path(path).expanduser()
    generated = trainsets.find(p)
    if generated is not None:
        return trainsets.ensure(generated.name)
    if p.exists():
        return p
    shipped = _PACKAGE_ROOT / p
    if not p.is_absolute() and shipped.exists():
        return shipped
    raise MissingError(
        f"prompt file {path} not found (also looked in {_PACKAGE_ROOT}); shipped sets are under harness/prompts/"
    )


def load_datasets(
    datasets: dict[str, str], limit: int | None = None
) -> dict[str, list[PromptItem]]:
    """Every task's prompts: ``{task: path}`` -> ``{task: [PromptItem]}``."""
    if not datasets:
        raise ConfigError("no datasets: give at least one task -> prompt file in `datasets`")
    pools = {}
    for task, path in datasets.items():
        try:
            pools[task] = load_prompt_file(resolve_prompt_path(path), task=task, limit=limit)
        except (OSError, ValueError) as e:  # a missing or malformed file is the user's to fix
            raise ConfigError(f"datasets.{task}: {e}") from None
    return pools


def partition_cycle(partitions: dict[str, int]) -> list[str]:
    """GRPO-Mix's epoch cycle: ``{geneval: 3, ocr: 1, pickscore: 1}`` -> [geneval x3, ocr, pickscore]."""
    cycle: list[str] = []
    for task, n in partitions.items():
        if n < 0:
            raise InputError(f"partition ratio for {task!r} must be >= 0, got {n}")
        cycle += [task] * n
    if not cycle:
        raise InputError("partitions give every task 0 epochs")
    return cycle


def mix_counts(task_mix: Mapping[str, float], groups: int) -> dict[str, int]:
    """Each task's groups in an epoch of ``groups``: proportional to ``task_mix``, rounded by largest remainder
    (ties to the task named first), so the counts always add up to ``groups``."""
    if any(n < 0 for n in task_mix.values()):
        raise InputError(f"task_mix shares must be >= 0, got {task_mix}")
    total = sum(task_mix.values())
    if total <= 0:
        raise InputError("task_mix gives every task 0 groups")
    exact = {name: groups * n / total for name, n in task_mix.items()}
    counts = {name: int(x) for name, x in exact.items()}
    by_remainder = sorted(task_mix, key=lambda name: exact[name] - counts[name], reverse=True)
    for name in by_remainder[: groups - sum(counts.values())]:
        counts[name] += 1
    return counts


class EpochPlan(NamedTuple):
    """What the whole world samples in one epoch: ``groups * group_size`` items, grouped contiguously."""

    items: list[PromptItem]
    seeds: list[int]
    task: str | None  # the partition this epoch belongs to (GRPO-Mix), else None


def plan_epoch(
    pools: dict[str, list[PromptItem]],
    epoch: int,
    *,
    groups: int,
    group_size: int,
    seed: int,
    partitions: dict[str, int] | None = None,
    task_mix: Mapping[str, float] | None = None,
) -> EpochPlan:
    """The epoch's prompts and per-image seeds; identical on every rank (depends on seed and epoch only).

    Prompts are drawn without replacement while the pool lasts. With ``partitions`` the epoch draws from one task
    (cycling through ``partition_cycle``); with ``task_mix`` (``{geneval: 3, ocr: 1}``) every epoch holds each task's
    share of the groups (``mix_counts``), shuffled together; otherwise it draws from the union of all tasks.
    """
    rng = np.random.default_rng([seed, epoch])
    task: str | None = None
    if partitions and task_mix:
        raise ValueError(
            "give partitions (whole epochs per task) or task_mix (shares of each epoch), not both"
        )
    if task_mix:
        picked: list[PromptItem] = []
        for name, n in mix_counts(task_mix, groups).items():
            if name not in pools:
                raise KeyError(
                    f"task_mix names {name!r}, which has no dataset; datasets: {sorted(pools)}"
                )
            picked += _draw(rng, pools[name], n)
        picked = [picked[int(i)] for i in rng.permutation(len(picked))]
    else:
        if partitions:
            cycle = partition_cycle(partitions)
            task = cycle[epoch % len(cycle)]
            if task not in pools:
                raise KeyError(f"partition {task!r} has no dataset; datasets: {sorted(pools)}")
            pool = pools[task]
        else:
            pool = [item for name in sorted(pools) for item in pools[name]]
        picked = _draw(rng, pool, groups)
    items = [item for item in picked for _ in range(group_size)]
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=len(items))]
    return EpochPlan(items, seeds, task)


def _draw(rng: np.random.Generator, pool: list[PromptItem], n: int) -> list[PromptItem]:
    """``n`` prompts of ``pool``: without replacement while the pool lasts (none drawn, no randomness used, for 0)."""
    if not n:
        return []
    return [pool[int(i)] for i in rng.choice(len(pool), size=n, replace=len(pool) < n)]


def shard(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s contiguous share of ``n`` items; ``n`` must divide evenly."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} out of range for world size {world}")
    if n % world:
        raise ValueError(f"{n} items do not split evenly over {world} processes")
    per = n // world
    return slice(rank * per, (rank + 1) * per)


# -- the split audit ---------------------------------------------------------------------------------------------
class SplitAudit(NamedTuple):
    """What a run's training prompts share with evaluation, and what it inherits from the models it starts from."""

    audited: tuple[str, ...]  # the benchmarks checked (harness.splits.audited_benchmarks)
    allow_eval_prompts: bool
    overlaps: dict[str, Overlap]  # task -> its pool's overlap with the audited benchmarks
    inherited: tuple[
        str, ...
    ]  # "<role> <source>: <reason>" for each parent trained on evaluation prompts

    @property
    def contaminated(self) -> list[str]:
        """Why a model trained by this run counts as trained on evaluation prompts ([] when it does not)."""
        own = [f"datasets.{o.describe()}" for o in self.overlaps.values() if o.lines]
        return own + list(self.inherited)

    def manifest(self) -> dict[str, Any]:
        """The run manifest's record of the audit (``split_audit``) and its verdict (``contaminated``)."""
        return {
            "split_audit": {
                "audited": list(self.audited),
                "allow_eval_prompts": self.allow_eval_prompts,
                "overlap": {
                    task: {"lines": o.lines, "of": o.total, "by_benchmark": o.by_benchmark}
                    for task, o in self.overlaps.items()
                },
            },
            "contaminated": self.contaminated,
        }


def audit_split(
    pools: dict[str, list[PromptItem]],
    allow_eval_prompts: bool,
    parents: dict[str, str | Path | None] | None = None,
) -> SplitAudit:
    """Audit the training pools against the evaluation benchmarks, before any work.

    A pool with evaluation prompts is refused (``ConfigError``, one line naming the fix) unless
    ``allow_eval_prompts``. ``parents`` (``{"init": folder, "teachers.ocr": folder, ...}``, resolved adapter or run
    folders) pass on their own manifests' verdicts: a student of a contaminated teacher is contaminated too.
    """
    overlaps = {
        task: splits.overlap(task, (it.prompt for it in pool)) for task, pool in pools.items()
    }
    found = [o for o in overlaps.values() if o.lines]
    if found and not allow_eval_prompts:
        more = f" (and {len(found) - 1} more task(s))" if len(found) > 1 else ""
        raise ConfigError(
            f"datasets.{found[0].describe()}{more}: train on sets that hold no evaluation prompt "
            "(`python -m harness.trainsets list`), or set data.allow_eval_prompts=true to train on them anyway "
            "(the model is then marked as trained on evaluation prompts)"
        )
    inherited = []
    for role, source in (parents or {}).items():
        for reason in splits.recorded_contamination(source):
            inherited.append(f"{role} {source}: {reason}")
    return SplitAudit(splits.audited_benchmarks(), allow_eval_prompts, overlaps, tuple(inherited))
