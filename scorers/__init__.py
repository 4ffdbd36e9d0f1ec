"""Scorers: one file per metric, one protocol (``scorers.base``), one registry dict.

``load(name)`` imports the scorer's module only when asked, so ``harness --help`` and ``harness ls`` stay light.
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
    "UnknownScorerError",
    "table_markdown",
]


class UnknownScorerError(UnknownNameError):
    """A scorer name that is not in SCORERS."""


def load(name: str, **kwargs: Any) -> Scorer:
    """Instantiate the scorer registered as ``name``."""
    if name not in SCORERS:
        hint = difflib.get_close_matches(name, list(SCORERS), n=3)
        maybe = f" (did you mean {', '.join(hint)}?)" if hint else ""
        raise UnknownScorerError(
            f"unknown scorer {name!r}{maybe}; known: {', '.join(sorted(SCORERS))}"
        )
    module, cls = SCORERS[name].split(":")
    scorer: Scorer = getattr(importlib.import_module(module), cls)(**kwargs)
    return scorer


def table_markdown() -> str:
    """The README ``## Scorers`` table, generated from the registered classes (see ``scorers.catalog``)."""
    from scorers.catalog import table_markdown as render

    return render()
