"""The scorer protocol: images + prompts + per-item metadata -> raw values, training rewards, details.

Only a Protocol and dataclasses live here. Every scorer reports the **raw** value in the metric's native
scale (PickScore about 21, DeQA 1-5, GenEval 0/1) and, separately, the reward value Flow-GRPO trains on
(PickScore / 26, DeQA / 5, GenEval partial credit, ...). The trainer and the harness call the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from PIL import Image


@dataclass(frozen=True)
class Requirements:
    """What a scorer needs before it can run."""

    weights: tuple[
        str, ...
    ] = ()  # "org/repo@revision" pinned, or a local path; `harness fetch <name>` gets them
    extra: str | None = None  # pip extra with the heavy deps, e.g. "ocr"
    gpu_gb: float = 0.0  # 0 means CPU is fine


class Scores(NamedTuple):
    """Per-image results, aligned with the input images."""

    values: list[float]  # raw metric value, native scale, higher is better
    rewards: list[float]  # Flow-GRPO's training scale for this metric
    details: list[dict[str, Any]] | None = None  # geneval tags, OCR text, judge rationale, ...


@runtime_checkable
class Scorer(Protocol):
    name: str
    version: str  # bump whenever numbers can change
    requires: Requirements

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores: ...
