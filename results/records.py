"""The store's rows as frozen dataclasses, and the JSON its ``meta``/``details``/protocol columns hold."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowbase.errors import InputError


def contamination(provenance: Any) -> list[str]:
    """Why a run's model counts as trained on evaluation prompts: ``provenance["contaminated"]`` (a dict or its
    JSON text) as a list of one-line reasons; [] when clean or never recorded (stores older than the audit)."""
    if isinstance(provenance, str):
        try:
            provenance = json.loads(provenance)
        except json.JSONDecodeError:
            return []
    reasons = provenance.get("contaminated") if isinstance(provenance, dict) else None
    if not reasons:
        return []
    return [str(r) for r in reasons] if isinstance(reasons, list) else [str(reasons)]


RESERVED_SUFFIX = "/samples"  # GET /v1/runs/{id}/samples: a run id ending so could not be addressed


def check_run_id(run_id: str) -> None:
    """``InputError`` unless ``run_id`` is a usable run id: not empty, and not ending in ``/samples`` (the
    service's ``/v1/runs/{id}/samples`` would read it as another run's images)."""
    if not run_id.strip():
        raise InputError("a run id cannot be empty; pass --run-id NAME")
    if run_id.endswith(RESERVED_SUFFIX) or run_id.endswith(RESERVED_SUFFIX + "/"):
        raise InputError(
            f"run id {run_id!r} ends in {RESERVED_SUFFIX!r}, which the service's URLs reserve "
            "(/v1/runs/{id}/samples); choose another run id"
        )


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``."""

    run_id: str
    model: str
    lora: str | None
    protocol: dict[str, Any]
    provenance: dict[str, Any]
    protocol_version: str = ""
    created_at: Any = None

    @property
    def contamination(self) -> list[str]:
        """Why this run's model counts as trained on evaluation prompts ([] when clean); see ``contamination``."""
        return contamination(self.provenance)

    @property
    def contaminated(self) -> bool:
        """Whether this run's model was trained on evaluation prompts (its numbers are not held-out results)."""
        return bool(self.contamination)


@dataclass(frozen=True)
class SampleRow:
    """One generated image (a row of ``samples``)."""

    run_id: str
    step: int
    benchmark: str
    benchmark_version: str
    prompt_id: str
    prompt_index: int
    prompt: str
    meta: dict[str, Any]
    grp: str | None
    image_index: int
    seed: int
    image_sha256: str
    image_path: str


@dataclass(frozen=True)
class ScoreRow:
    """One scorer's verdict on one image (a row of ``scores``)."""

    run_id: str
    step: int
    benchmark: str
    benchmark_version: str
    prompt_id: str
    grp: str | None
    image_index: int
    scorer: str
    scorer_version: str
    value: float
    reward: float | None
    details: dict[str, Any] | None = field(default=None)


def to_json(obj: Any) -> str:
    """JSON for details/meta columns: numpy scalars and arrays become numbers and lists, NaN is refused."""

    def default(o: Any) -> Any:
        if hasattr(o, "tolist"):
            return o.tolist()
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        if isinstance(o, Path):
            return str(o)
        return str(o)

    return json.dumps(obj, default=default, allow_nan=False, sort_keys=True)
