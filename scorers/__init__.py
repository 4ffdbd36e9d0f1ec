"""Scorers: one file per metric, one protocol (``scorers.base``), one registry dict.

``load(name)`` imports the scorer's module only when asked, so ``harness --help`` and ``harness ls`` stay light.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from scorers.base import Requirements, Scorer, Scores

# registry name -> "module:Class"
SCORERS: dict[str, str] = {
    "geneval": "scorers.geneval:GenEval",
    "compbench": "scorers.compbench:CompBench",
    "mini_geneval": "scorers.mini:MiniGenEval",
    "mini_ocr": "scorers.mini:MiniOCR",
    "mini_quality": "scorers.mini:MiniQuality",
    "pickscore": "scorers.pickscore:PickScore",
    "hps": "scorers.hps:HPS",
    "clipscore": "scorers.clipscore:CLIPScore",
    "aesthetic": "scorers.aesthetic:Aesthetic",
    "imagereward": "scorers.imagereward:ImageReward",
}

__all__ = ["SCORERS", "Requirements", "Scorer", "Scores", "load", "UnknownScorerError"]


class UnknownScorerError(KeyError):
    """A scorer name that is not in SCORERS."""

    def __str__(self) -> str:
        return str(self.args[0])


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
