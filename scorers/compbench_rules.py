"""T2I-CompBench's scoring formulas and prompt rules, as pure functions (no model, device or torch).

Reference: Karine-Huang/T2I-CompBench @ 1b70949 (docs/reference/benchmarks-and-scorers.md section 2). The model
wrappers and the ``compbench`` scorer that feeds these live in ``scorers.compbench``, which re-exports every name
here; this split mirrors ``scorers.geneval`` / ``scorers.geneval_rules``.

| category | formula |
|---|---|
| color, shape, texture | ``blip_vqa_score``: product over noun-phrase questions of P(yes)/(P(yes)+P(no)) |
| spatial | ``spatial_score`` with ``determine_position`` (150 px, IoU 0.1), scores < 0.5 -> 0 |
| numeracy | ``numeracy_score``: per target +0.5/N if present, +0.5/N more if the count is exact |
| non_spatial | ``clip_similarity``: plain cosine, no x100, no clamp |
| complex | ``complex_score``: 3-in-1 routing by the complex_val_{spatial,action} lists |
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

ASSETS = Path(__file__).parent / "assets" / "compbench"

ATTRIBUTE = ("color", "shape", "texture")
CATEGORIES = (*ATTRIBUTE, "spatial", "numeracy", "non_spatial", "complex")
SKIPPED_CHUNKS = ("top", "the side", "the left", "the right")
LOCALITIES = (
    "on side of",
    "next to",
    "near",
    "on the left of",
    "on the right of",
    "on the bottom of",
    "on the top of",
    "on top of",
)  # vocabulary order: the first one found in the prompt wins
COMPLEX_PREPOSITIONS = (
    "on top of",
    "on bottom of",
    "on the left",
    "on the right",
    "next to",
    "on side of",
    "near",
)
PERSON_WORDS = ("girl", "boy", "man", "woman")
NUMERACY_ALIASES = {"ship": "boat", "telivision": "tv", "goldfish": "fish", "painting": "picture"}
NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
}

Box = tuple[float, float, float, float]


# ----------------------------------------------------------------------------------------------- BLIP-VQA


def blip_questions(noun_chunks: Sequence[str], np_num: int = 8) -> list[str]:
    """Question i is "<noun chunk i>?" over the chunks that are not "top", "the side", "the left", "the right"."""
    kept = [c for c in noun_chunks if c not in SKIPPED_CHUNKS]
    return [f"{c}?" for c in kept[:np_num]]


def blip_vqa_score(answers: Sequence[float]) -> float:
    """Product of the per-question answers, each written with 4 decimals first, in float32; then 4 decimals.

    Questions beyond the prompt's noun chunks contribute 1, so a prompt with no question scores 1.
    """
    prod = np.float32(1.0)
    for a in answers:
        prod = np.float32(prod * np.float32(float(f"{a:.4f}")))
    return float(f"{float(prod):.4f}")


# ------------------------------------------------------------------------------------------------ spatial


def find_locality(prompt: str) -> str | None:
    """The first spatial phrase (in vocabulary order) contained in the prompt."""
    return next((w for w in LOCALITIES if w in prompt), None)


def determine_position(
    locality: str | None,
    box1: Box,
    box2: Box,
    iou_threshold: float = 0.1,
    distance_threshold: float = 150,
) -> float:
    """T2I-CompBench's soft position score of object 1 relative to object 2 (boxes x1, y1, x2, y2).

    "on top of" (without "the") and unknown localities score 0, as in the reference.
    """
    dx = (box2[0] + box2[2]) / 2 - (box1[0] + box1[2]) / 2
    dy = (box2[1] + box2[3]) / 2 - (box1[1] + box1[3]) / 2
    inter = max(0.0, min(box1[2], box2[2]) - max(box1[0], box2[0])) * max(
        0.0, min(box1[3], box2[3]) - max(box1[1], box2[1])
    )
    union = (
        (box1[2] - box1[0]) * (box1[3] - box1[1])
        + (box2[2] - box2[0]) * (box2[3] - box2[1])
        - inter
    )
    iou = inter / union if union > 0 else 0.0  # the reference divides by zero for two empty boxes

    def overlap_score() -> float:
        return 1.0 if iou < iou_threshold else iou_threshold / iou

    if locality in ("next to", "on side of", "near"):
        if abs(dx) < distance_threshold or abs(dy) < distance_threshold:
            return 1.0
        return distance_threshold / max(abs(dx), abs(dy))
    if locality == "on the right of":
        return overlap_score() if dx < 0 and abs(dx) > abs(dy) else 0.0
    if locality == "on the left of":
        return overlap_score() if dx > 0 and abs(dx) > abs(dy) else 0.0
    if locality == "on the bottom of":
        return overlap_score() if dy < 0 and abs(dy) > abs(dx) else 0.0
    if locality == "on the top of":
        return overlap_score() if dy > 0 and abs(dy) > abs(dx) else 0.0
    return 0.0


class Found(NamedTuple):
    """A detection in T2I-CompBench's terms: label, box in UniDet's frame, confidence."""

    label: str
    box: Box
    score: float


def spatial_objects_simple(tokens: Sequence[tuple[str, str]]) -> tuple[str | None, str | None]:
    """(first NOUN, last NOUN) of a (text, POS) token list: the 2D-spatial category's objects."""
    nouns = [t for t, pos in tokens if pos == "NOUN"]
    return (nouns[0], nouns[-1]) if nouns else (None, None)


def spatial_objects_complex(tokens: Sequence[tuple[str, str]]) -> tuple[str | None, str | None]:
    """The nouns on either side of a spatial preposition (``--complex True``); (None, None) unless exactly two."""
    texts = [t for t, _ in tokens]
    pos = [p for _, p in tokens]
    n = len(tokens)
    objects: list[str] = []
    for i in range(n):
        spans = {k: " ".join(texts[i : i + k]) for k in (3, 2, 1)}
        k = next((k for k in (3, 2, 1) if spans[k] in COMPLEX_PREPOSITIONS), 0)
        if not k:
            continue
        for j in range(i - 1, -1, -1):
            if pos[j] in ("NOUN", "PROPN"):
                objects.append(texts[j])
                break
        no_noun_after = False
        for j in range(i + k, n):
            if pos[j] == "NOUN":
                objects.append(texts[j])
                break
            if j == n - 1:
                no_noun_after = True
        if no_noun_after:
            for j in range(i + k, n):
                if j + 1 < n and pos[j] == "PROPN" and pos[j + 1] != "PROPN":
                    objects.append(texts[j])
                    break
    return (objects[0], objects[1]) if len(objects) == 2 else (None, None)


def spatial_score(
    found: Sequence[Found], obj1: str | None, obj2: str | None, locality: str | None
) -> float:
    """0.25 s1 + 0.25 s2 + 0.5 position when both are found, 0.25 s for one, 0 for none; < 0.5 -> 0.

    ``found`` is in detector order (descending score); each object takes its first detection.
    """
    obj1 = "person" if obj1 in PERSON_WORDS else obj1
    obj2 = "person" if obj2 in PERSON_WORDS else obj2
    labels = [f.label for f in found]
    if obj1 in labels and obj2 in labels:
        a, b = found[labels.index(obj1)], found[labels.index(obj2)]  # type: ignore[arg-type]
        score = 0.25 * a.score + 0.25 * b.score + determine_position(locality, a.box, b.box) / 2
    elif obj1 in labels:
        score = 0.25 * found[labels.index(obj1)].score  # type: ignore[arg-type]
    elif obj2 in labels:
        score = 0.25 * found[labels.index(obj2)].score  # type: ignore[arg-type]
    else:
        score = 0.0
    return 0.0 if score < 0.5 else score


def unidet_frame_scale(width: int, height: int, short: int = 479, long: int = 480) -> float:
    """detectron2 ResizeShortestEdge(479, max 480): the factor from image pixels to UniDet's input pixels."""
    scale = short / min(width, height)
    if max(width, height) * scale > long:
        scale = long / max(width, height)
    return scale


# ---------------------------------------------------------------------------------------------- numeracy


@lru_cache(maxsize=1)
def object_vocabulary() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(singulars, plurals) from T2I-CompBench's new_objects.txt ("cup - cups" per line), lower-cased."""
    lines = [x for x in (ASSETS / "new_objects.txt").read_text().splitlines() if " - " in x]
    return (
        tuple(x.split(" - ")[0].strip().lower() for x in lines),
        tuple(x.split(" - ")[1].strip().lower() for x in lines),
    )


def simple_tokens(text: str) -> list[str]:
    """Words and punctuation marks; the same tokens spaCy gives for CompBench's numeracy prompts."""
    return re.findall(r"\w+|[^\w\s]", text)


def numeracy_targets(
    tokens: Sequence[str],
    singular: Sequence[str] | None = None,
    plural: Sequence[str] | None = None,
) -> list[tuple[str, int]]:
    """(noun, count) pairs: a number word (a, an, one ... eight) followed by a one- or two-word known noun."""
    if singular is None or plural is None:
        singular, plural = object_vocabulary()
    out: list[tuple[str, int]] = []
    n = len(tokens)
    for i, word in enumerate(tokens):
        if word not in NUMBER_WORDS or i + 1 >= n:
            continue
        two = f"{tokens[i + 1]} {tokens[i + 2]}" if i < n - 2 else None
        if two is not None and (two in singular or two in plural):
            if two in plural and word not in ("a", "an", "one"):
                out.append((singular[plural.index(two)], NUMBER_WORDS[word]))
            else:
                out.append((two, 1))
        elif tokens[i + 1] in singular or tokens[i + 1] in plural:
            noun = tokens[i + 1]
            if noun in singular and word in ("a", "an", "one"):
                out.append((noun, 1))
            else:
                # the reference crashes on a singular-only noun after "two"...; we keep the noun as written
                out.append(
                    (singular[plural.index(noun)] if noun in plural else noun, NUMBER_WORDS[word])
                )
    return out


def dedupe_labels(found: Sequence[Found]) -> list[str]:
    """Labels after dropping same-label boxes with IoU > 0.9 or one box > 90% inside another (+1 pixel areas)."""

    def same(a: Box, b: Box) -> bool:
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
        inter = iw * ih
        area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
        area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
        return (
            inter / (area_a + area_b - inter) > 0.9 or inter / area_a > 0.9 or inter / area_b > 0.9
        )

    kept: list[Found] = []
    for f in found:
        if not any(f.label == k.label and same(f.box, k.box) for k in kept):
            kept.append(f)
    return [k.label for k in kept]


def numeracy_score(labels: Sequence[str], targets: Sequence[tuple[str, int]]) -> float:
    """Per target: +0.5/N if its label is detected, +0.5/N more if detected exactly ``count`` times.

    A target missing from the labels renames every detected label that contains it (reference quirk).
    """
    if not targets:
        return 0.0  # the reference divides by zero here
    labels = list(labels)
    weight = 1.0 / len(targets)
    score = 0.0
    for noun, count in targets:
        noun = "person" if noun in PERSON_WORDS else NUMERACY_ALIASES.get(noun, noun)
        if noun not in labels:
            labels = [noun if noun in lab else lab for lab in labels]
        if noun in labels:
            score += 0.5 * weight
            if labels.count(noun) == count:
                score += 0.5 * weight
    return score


# ------------------------------------------------------------------------------------------- CLIP, complex


def clip_similarity(image_embedding: np.ndarray, text_embedding: np.ndarray) -> float:
    """Plain cosine between the two embeddings (no x100, no clamp)."""
    a = np.asarray(image_embedding, dtype=np.float64)
    b = np.asarray(text_embedding, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def strip_adjectives(tokens: Sequence[tuple[str, str]]) -> str:
    """The complex category's CLIP text: the prompt's tokens without spaCy ADJ tokens, joined by spaces."""
    return " ".join(t for t, pos in tokens if pos != "ADJ")


def complex_key(prompt: str) -> str:
    """3-in-1's prompt matching key: the text before the first '.', lower-cased."""
    return prompt.strip("\n").split(".")[0].lower()


@lru_cache(maxsize=1)
def complex_splits() -> tuple[frozenset[str], frozenset[str]]:
    """Keys of complex_val_spatial.txt and complex_val_action.txt."""
    read = lambda name: frozenset(  # noqa: E731
        complex_key(x) for x in (ASSETS / name).read_text().splitlines() if x.strip()
    )
    return read("complex_val_spatial.txt"), read("complex_val_action.txt")


def complex_kind(prompt: str) -> str:
    """ "spatial" (attribute + spatial), "action" (attribute + CLIP) or "all" (mean of the three)."""
    spatial, action = complex_splits()
    key = complex_key(prompt)
    return "spatial" if key in spatial else "action" if key in action else "all"


def complex_score(
    kind: str, attribute: float, spatial: float | None, action: float | None
) -> float:
    """The 3-in-1 score for one image."""
    if kind == "spatial":
        return (float(spatial) + attribute) * 0.5  # type: ignore[arg-type]
    if kind == "action":
        return (float(action) + attribute) * 0.5  # type: ignore[arg-type]
    return (attribute + float(spatial) + float(action)) / 3  # type: ignore[arg-type]
