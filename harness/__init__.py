"""Flow-OPD's benchmark harness: protocol -> generate -> score -> store -> tables.

``harness.evaluate(model, benchmarks, ...)`` is the library entry point shared by ``harness eval`` and the
trainer's in-loop evaluation. It is imported lazily, so ``import harness`` does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from harness.evaluation import evaluate  # deferred: torch (import harness stays light)

        return evaluate
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
