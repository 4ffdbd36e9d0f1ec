"""The scorer protocol: images + prompts + per-item metadata -> raw values, training rewards, details.

Only a Protocol, dataclasses and ``check_meta`` live here. Every scorer reports the **raw** value in the metric's native
scale (PickScore about 21, DeQA 1-5, GenEval 0/1) and, separately, the reward value Flow-GRPO trains on
(PickScore / 26, DeQA / 5, GenEval partial credit, ...). The trainer and the harness call the same objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from PIL import Image

from flowbase.errors import InputError


@dataclass(frozen=True)
class MetaField:
    """One field of the per-image metadata a scorer reads: its JSON type and a valid value."""

    name: str
    kind: str  # "string", "list" or "object" (JSON types)
    example: Any
    required: bool = True  # an optional field is checked only when present


@dataclass(frozen=True)
class MetaNeed:
    """The per-image metadata a scorer cannot work without, and where a user gets it."""

    fields: tuple[MetaField, ...]
    source: str  # the prompt files / formats that carry it, for the error message

    def example(self) -> dict[str, Any]:
        """One valid metadata object (the required fields)."""
        return {f.name: f.example for f in self.fields if f.required}


@dataclass(frozen=True)
class Requirements:
    """What a scorer needs before it can run."""

    weights: tuple[
        str, ...
    ] = ()  # "org/repo@revision" pinned, or a local path; `harness fetch <name>` gets them
    extra: str | None = None  # pip extra with the heavy deps, e.g. "ocr"
    gpu_gb: float = 0.0  # 0 means CPU is fine
    meta: MetaNeed | None = None  # per-image metadata it needs; check_meta checks it first


_KINDS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "list": (list, tuple),
    "object": (Mapping,),
}


def check_meta(name: str, requires: Requirements, meta: Sequence[Any] | None) -> None:
    """``InputError`` naming the first missing or mistyped metadata field of scorer ``name`` (its
    ``requires.meta``), with a valid value and where such metadata comes from; nothing for other scorers."""
    need = requires.meta
    if need is None:
        return
    example = json.dumps(need.example())
    hint = f"e.g. {example}; {need.source}"
    if meta is None:
        fields = ", ".join(repr(f.name) for f in need.fields if f.required)
        raise InputError(f"scorer {name} needs per-image metadata with {fields}: {hint}")
    for i, m in enumerate(meta):
        if not isinstance(m, Mapping):
            raise InputError(f"meta {i}: scorer {name} needs an object, got {m!r}: {hint}")
        for f in need.fields:
            value = m.get(f.name)
            if f.name not in m and not f.required:
                continue
            if value is None or not isinstance(value, _KINDS[f.kind]):
                got = "missing" if f.name not in m else f"{json.dumps(value, default=str)[:80]}"
                raise InputError(
                    f"meta {i}: scorer {name} needs {f.name!r} as a {f.kind} (got {got}); "
                    f"a valid entry: {example}; {need.source}"
                )


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
