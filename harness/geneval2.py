"""GenEval 2's analysis (``soft_tifa_analysis.py`` at facebookresearch/GenEval2 a6e82d2) over stored scores.

Soft-TIFA GM and AM = 100 x the mean over images (one per prompt by default) of each image's GM and AM; per skill =
100 x the sum of that skill's question scores over the benchmark / their number (AM over questions); per atomicity
3-10 = 100 x the mean GM of the images whose prompt has that many atoms. Built from the rows of
``Store.sample_scores`` (the prompt's ``skills`` and ``atom_count`` in its metadata, each question's soft score in
the ``soft_tifa`` details).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scorers.soft_tifa import amean, gmean

SKILLS = ("object", "attribute", "count", "position", "verb")
SKILL_TITLES = ("Object", "Attribute", "Count", "Position", "Verb")
ATOMS = tuple(range(3, 11))


@dataclass(frozen=True)
class Summary:
    """One run's GenEval 2 numbers, x100 (None where it has no image or question of that kind)."""

    gm: float | None
    am: float | None
    skills: dict[str, float] = field(default_factory=dict)
    atoms: dict[int, float] = field(default_factory=dict)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def summarise(rows: Iterable[Mapping[str, Any]], scorer: str = "soft_tifa") -> Summary:
    """The official analysis over ``scorer``'s rows (others are skipped)."""
    gms: list[float] = []
    ams: list[float] = []
    per_skill: dict[str, list[float]] = {}
    per_atom: dict[int, list[float]] = {}
    for row in rows:
        if row["scorer"] != scorer:
            continue
        details, meta = _json(row["details"]) or {}, _json(row["meta"]) or {}
        scores = [float(s) for s in details.get("scores", [])]
        if not scores:
            continue
        gm = gmean(scores)
        gms.append(gm)
        ams.append(amean(scores))
        for skill, score in zip(meta.get("skills", []), scores, strict=False):
            per_skill.setdefault(str(skill), []).append(score)
        if "atom_count" in meta:
            per_atom.setdefault(int(meta["atom_count"]), []).append(gm)
    return Summary(
        100 * amean(gms) if gms else None,
        100 * amean(ams) if ams else None,
        {k: 100 * math.fsum(v) / len(v) for k, v in per_skill.items()},
        {k: 100 * amean(v) for k, v in per_atom.items()},
    )


# the three tables: title and columns, then ``cells`` gives one run's values in that order
TABLES = (
    ("GenEval 2 (Soft-TIFA x100; GM ranks)", ("GM", "AM")),
    ("GenEval 2 per skill (Soft-TIFA AM x100)", SKILL_TITLES),
    ("GenEval 2 per atomicity (Soft-TIFA GM x100)", tuple(f"{a} atoms" for a in ATOMS)),
)


def cells(s: Summary) -> list[list[float | None]]:
    """One run's values for each of ``TABLES``."""
    return [[s.gm, s.am], [s.skills.get(k) for k in SKILLS], [s.atoms.get(a) for a in ATOMS]]
