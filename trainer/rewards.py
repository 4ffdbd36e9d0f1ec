"""Rewards: the recipe's scorers (the harness's registry, in process or through a reward server) and each sample's
weighted reward.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch import Tensor

import scorers
from harness.benchmarks import PromptItem
from scorers.remote import RemoteScorer
from trainer.config import ConfigError


class TaskRewards:
    """What a recipe config with ``datasets``, ``rewards`` and ``task_rewards`` says about rewards (GRPO, OPD):
    each task's weights and the scorers any task uses (mixed into the recipes' Config dataclasses)."""

    datasets: dict[str, str]
    rewards: dict[str, float]
    task_rewards: dict[str, dict[str, float]]

    def weights_for(self, task: str) -> dict[str, float]:
        """The reward weights a sample of ``task`` is scored with: its ``task_rewards`` entry, else ``rewards``."""
        return self.task_rewards.get(task, self.rewards)

    def scorer_names(self) -> set[str]:
        """Every scorer some task uses (``rewards`` only if a task falls back on it)."""
        used = set(self.rewards) if set(self.datasets) - set(self.task_rewards) else set()
        for weights in self.task_rewards.values():
            used |= set(weights)
        return used


# The rehearsal (trainer.rehearse) sets this to stand in for scorers whose weights cannot be on a CPU machine; it is
# None in every real run.
stand_in_scorers: Callable[[str], Any] | None = None


def load_scorers(names: set[str], servers: dict[str, str]) -> dict[str, Any]:
    """Reward scorers by registry name, in process or through ``RemoteScorer`` when a server URL is given."""

    if stand_in_scorers is not None:
        return {name: stand_in_scorers(name) for name in sorted(names)}
    out: dict[str, Any] = {}
    for name in sorted(names):
        if name in servers:
            out[name] = RemoteScorer(servers[name], name)
        else:
            out[name] = scorers.load(name)
    return out


def check_scorer_names(names: set[str], servers: dict[str, str]) -> None:
    """Unknown reward names fail before any work, with suggestions."""

    for name in sorted(names):
        if name not in scorers.SCORERS and name not in servers:
            try:
                scorers.load(name)
            except scorers.UnknownScorerError as e:
                raise ConfigError(f"unknown reward: {e}") from None


class Rewards(NamedTuple):
    """Per-sample rewards: the weighted total that is trained on and each scorer's part (NaN where not used)."""

    total: Tensor  # [B]
    parts: dict[str, Tensor]  # scorer -> [B]


def score(
    scorers: dict[str, Any],
    weights_for: Callable[[str], dict[str, float]],
    images: list[Image.Image],
    items: list[PromptItem],
    use_values: Collection[str] = (),
) -> Rewards:
    """Each sample's reward is the weighted sum of its task's scorers (Flow-GRPO's ``multi_score`` 'avg').

    A scorer gives each image a ``value`` (its official metric, e.g. GenEval's 0/1 verdict) and a ``reward``
    (Flow-GRPO's training scale, e.g. GenEval's partial credit); the scorers named in ``use_values`` are read on
    their value, the others on their reward."""
    n = len(items)
    total = torch.zeros(n, dtype=torch.float64)
    parts: dict[str, Tensor] = {}
    for name, scorer in scorers.items():
        rows = [i for i, it in enumerate(items) if weights_for(it.task).get(name, 0.0) != 0.0]
        if not rows:
            continue
        got = scorer(
            [images[i] for i in rows],
            [items[i].prompt for i in rows],
            [items[i].meta for i in rows],
        )
        kind = "values" if name in use_values else "rewards"
        got_rows = getattr(got, kind)
        if len(got_rows) != len(rows):
            raise RuntimeError(
                f"scorer {name!r} returned {len(got_rows)} {kind} for {len(rows)} images"
            )
        part = torch.full((n,), float("nan"), dtype=torch.float64)
        part[rows] = torch.tensor(got_rows, dtype=torch.float64)
        if not torch.isfinite(part[rows]).all():
            raise RuntimeError(f"scorer {name!r} returned a NaN or infinite reward")
        parts[name] = part
        for i in rows:
            total[i] += weights_for(items[i].task)[name] * part[i]
    return Rewards(total, parts)
