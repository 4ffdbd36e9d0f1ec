"""Scorers: one file per metric, one protocol (``scorers.base``), one registry dict.

``load(name)`` imports the scorer's module only when asked, so ``harness --help`` and ``harness ls`` stay light.
The README ``## Scorers`` table is ``scorers.catalog.table_markdown()``.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from flowbase.errors import UnknownNameError
from scorers.base import Requirements, Scorer, Scores

# registry name -> "module:Class"
SCORERS: dict[str, str] = {
    "geneval": "scorers.geneval:GenEval",
    "ocr": "scorers.ocr:OCR",
    "pickscore": "scorers.pickscore:PickScore",
    "hps": "scorers.hps:HPS",
    "imagereward": "scorers.imagereward:ImageReward",
    "aesthetic": "scorers.aesthetic:Aesthetic",
    "clipscore": "scorers.clipscore:CLIPScore",
    "deqa": "scorers.deqa:DeQA",
    "unifiedreward": "scorers.judge:UnifiedReward",
    "judge": "scorers.judge:Judge",
    "soft_tifa": "scorers.soft_tifa:SoftTIFA",
    "compbench": "scorers.compbench:CompBench",
    "jpeg": "scorers.jpeg:JpegCompressibility",
    "mini_geneval": "scorers.mini:MiniGenEval",
    "mini_ocr": "scorers.mini:MiniOCR",
    "mini_quality": "scorers.mini:MiniQuality",
    "brightness": "scorers.brightness:Brightness",
    "colour": "scorers.brightness:ColourCloseness",
}

__all__ = [
    "SCORERS",
    "Requirements",
    "Scorer",
    "Scores",
    "load",
    "scorer_class",
    "UnknownScorerError",
]


class UnknownScorerError(UnknownNameError):
    """A scorer name that is not in SCORERS."""


def scorer_class(name: str) -> Any:
    """The class registered as ``name`` (its module imported, nothing instantiated)."""
    if name not in SCORERS:
        hint = difflib.get_close_matches(name, list(SCORERS), n=3)
        maybe = f" (did you mean {', '.join(hint)}?)" if hint else ""
        raise UnknownScorerError(
            f"unknown scorer {name!r}{maybe}; known: {', '.join(sorted(SCORERS))}"
        )
    module, cls = SCORERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load(name: str, **kwargs: Any) -> Scorer:
    """Instantiate the scorer registered as ``name``."""
    scorer: Scorer = scorer_class(name)(**kwargs)
    return scorer
