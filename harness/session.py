"""``Session``: one ``evaluate`` call as each of its parts sees it (planning on rank 0, the workers on every rank)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.dist import Dist
from harness.plan import BenchmarkPlan
from harness.protocol import EvalProtocol


@dataclass
class Session:
    """What is evaluated, into which run, under which protocol, on which processes."""

    model: Any  # a hub id or folder (each process loads it on first use) or a loaded FlowModel
    model_id: str  # what the store records as the model
    model_dir: str | None  # the resolved folder of a model given by name (None for a loaded one)
    lora: str | None
    run_id: str
    step: int
    protocol: EvalProtocol
    plans: dict[str, BenchmarkPlan]
    versions: dict[str, str | None]  # each scorer's version, as planned
    batch_size: int
    device: str
    dtype: str
    dist: Dist
    contaminated: list[str]  # why the model counts as trained on evaluation prompts ([] when clean)
    lent: dict[str, Any] = field(
        default_factory=dict
    )  # scorers the caller lends, by name (already loaded)
    # how the model reads cfg when it declares it (FLUX.1-dev: "distilled", one pass with the guidance embedding
    # at cfg and no negative prompt); recorded in the run's generation protocol. None: classifier-free guidance
    guidance: str | None = None
    # what the protocol records about the model family (flowmodels.models.model_record); None: a loaded model
    model_record: dict[str, Any] | None = None
