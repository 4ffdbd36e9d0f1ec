"""GenEval's per-image rules, Flow-GRPO's GenEval reward and the GenEval summary, as pure functions.

Reference behaviour (docs/reference/benchmarks-and-scorers.md section 1): djghosh13/geneval
``evaluation/evaluate_images.py`` and ``summary_scores.py`` @ af4902f, and yifan123/reward-server
``reward_server/gen_eval.py`` for the training reward. No model, device or file is touched here, so the rules can
be fed by any detector: the in-process Mask2Former of ``scorers.geneval``, the reference mmdetection backend run
out of process, or an exact synthetic detector in a CPU-sized world.

Input, per image (a plain data structure):

* ``detections``: ``{class name: [Detection, ...]}``, the detector's raw output for that image (any order, any
  scores). ``keep_detections`` applies GenEval's score threshold (strict ``>``; 0.9 for the counting tag, else
  0.3), sorts by descending score, caps at 16 per class and runs the (disabled by default) per-class NMS.
* ``metadata``: one line of GenEval's ``evaluation_metadata.jsonl``: ``tag``, ``include`` clauses
  ``{"class", "count", ["color"], ["position": [relation, index of an earlier include clause]]}`` and, for
  counting, ``exclude`` clauses ``{"class", "count"}``.
* colours: each ``Detection`` may carry its colour label; otherwise a ``ColorFn(class name, detections) ->
  colour labels`` callback is asked (the CLIP zero-shot classifier in ``scorers.geneval``). Asking for a colour
  with neither raises, never guesses.

Outputs: ``judge`` (the official verdict), ``flowgrpo_reward`` (Flow-GRPO's strict verdict and partial-credit
score, a separate, clearly named mode) and ``summarize`` (per-task accuracy, overall = mean of the task means).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowbase.errors import InputError
from scorers.base import MetaField

COLORS: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
)
TASKS: tuple[str, ...] = (
    "single_object",
    "two_object",
    "counting",
    "colors",
    "position",
    "color_attr",
)
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels, y pointing down


@dataclass(frozen=True)
class Detection:
    """One detected instance: box, confidence, optional boolean mask (H x W) and optional colour label."""

    box: Box
    score: float
    mask: Any | None = (
        None  # numpy bool array of the image's H x W, used by the colour classifier's crop
    )
    color: str | None = (
        None  # one of COLORS when the detector (or a synthetic world) already knows it
    )


Detections = Mapping[str, Sequence[Detection]]
ColorFn = Callable[[str, Sequence[Detection]], Sequence[str]]


@dataclass(frozen=True)
class Options:
    """The evaluator's ``--options``; the defaults are the official ones."""

    threshold: float = 0.3  # keep score > threshold (all tags but counting)
    counting_threshold: float = 0.9  # keep score > this when tag == "counting"
    max_objects: int = 16  # per class, after sorting by score
    max_overlap: float = 1.0  # per-class NMS IoU; 1.0 disables it
    position_threshold: float = 0.1  # margin factor in the position rule


# the fields a GenEval metadata line must carry (``scorers.base.check_meta`` checks them before any work)
META_FIELDS = (
    MetaField("tag", "string", "single_object"),
    MetaField("include", "list", [{"class": "circle", "count": 1}]),
    MetaField("exclude", "list", [], required=False),
)


class MetadataError(InputError):
    """A GenEval metadata line that the rules cannot evaluate."""


@dataclass(frozen=True)
class ClauseResult:
    """What happened to one include clause."""

    cls: str
    count: int
    found: int  # number of kept detections of the class (after threshold and cap)
    passed: bool
    colors: list[str] | None = (
        None  # classified colours of the clause's objects, when a colour was asked
    )
    relations: list[list[str]] | None = (
        None  # relations found for the first failing or every checked pair
    )
    reason: str = ""


@dataclass(frozen=True)
class Judgement:
    """The official per-image verdict."""

    correct: bool
    reasons: list[str]
    clauses: list[ClauseResult]


@dataclass(frozen=True)
class Reward:
    """Flow-GRPO's GenEval reward for one image: strict verdict and partial-credit score (the training reward)."""

    strict_correct: bool
    score: float
    terms: list[float]
    reasons: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- metadata


def check_metadata(metadata: Mapping[str, Any]) -> None:
    """Raise MetadataError unless ``metadata`` is a well-formed GenEval line."""
    if not isinstance(metadata, Mapping):
        raise MetadataError(
            f"metadata must be a dict (one GenEval jsonl line), got {type(metadata).__name__}"
        )
    if not isinstance(metadata.get("tag"), str):
        raise MetadataError(f"metadata needs a string 'tag' (a GenEval task): {dict(metadata)!r}")
    for key in ("include", "exclude"):
        if not isinstance(metadata.get(key, []), list | tuple):
            raise MetadataError(f"metadata {key!r} must be a list of clauses: {dict(metadata)!r}")
    includes = metadata.get("include", [])
    for i, req in enumerate(includes):
        if not isinstance(req, Mapping) or "class" not in req or "count" not in req:
            raise MetadataError(f"include[{i}] needs 'class' and 'count': {req!r}")
        if not isinstance(req["count"], int) or isinstance(req["count"], bool) or req["count"] < 1:
            raise MetadataError(f"include[{i}] count must be a positive int: {req!r}")
        if "color" in req and req["color"] not in COLORS:
            raise MetadataError(
                f"include[{i}] colour {req['color']!r} is not one of {', '.join(COLORS)}"
            )
        if "position" in req:
            pos = req["position"]
            if (
                not isinstance(pos, Sequence)
                or len(pos) != 2
                or pos[0] not in RELATIONS
                or not isinstance(pos[1], int)
                or not 0 <= pos[1] < i
            ):
                raise MetadataError(
                    f"include[{i}] position must be [relation, index of an earlier include clause] "
                    f"with relation in {RELATIONS}: {pos!r}"
                )
    for i, req in enumerate(metadata.get("exclude", [])):
        if not isinstance(req, Mapping) or "class" not in req or "count" not in req:
            raise MetadataError(f"exclude[{i}] needs 'class' and 'count': {req!r}")


# ------------------------------------------------------------------------------------------------- detections


def box_iou_inclusive(a: Box, b: Box) -> float:
    """GenEval's IoU for its optional NMS: pixel areas counted inclusively (+1 on each side)."""

    def area(box: Sequence[float]) -> float:
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    inter = area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = area(a) + area(b) - inter
    return inter / union if union else 0.0


def keep_detections(
    detections: Detections, tag: str, options: Options = Options()
) -> dict[str, list[Detection]]:
    """Threshold (strict >), sort by descending score, cap per class, optional NMS; empty classes dropped."""
    threshold = options.counting_threshold if tag == "counting" else options.threshold
    kept: dict[str, list[Detection]] = {}
    for cls, dets in detections.items():
        # Sorting by score, stable for ties; the reference's argsort()[::-1] orders exact ties arbitrarily.
        order = sorted((d for d in dets if d.score > threshold), key=lambda d: -d.score)
        order = order[: options.max_objects]
        out: list[Detection] = []
        while order:
            best = order.pop(0)
            out.append(best)
            if options.max_overlap != 1:
                order = [
                    d for d in order if box_iou_inclusive(best.box, d.box) < options.max_overlap
                ]
        if out:
            kept[cls] = out
    return kept


# --------------------------------------------------------------------------------------------------- position


def relative_position(a: Box, b: Box, position_threshold: float = 0.1) -> set[str]:
    """Relations of box ``a`` relative to box ``b`` (GenEval's rule, section 1.6 of the reference)."""
    ca = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2)
    cb = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    da = (abs(a[2] - a[0]), abs(a[3] - a[1]))
    db = (abs(b[2] - b[0]), abs(b[3] - b[1]))
    offset = (ca[0] - cb[0], ca[1] - cb[1])
    revised = [
        math.copysign(max(abs(o) - position_threshold * (dA + dB), 0.0), o) if o else 0.0
        for o, dA, dB in zip(offset, da, db, strict=True)
    ]
    if all(abs(r) < 1e-3 for r in revised):
        return set()
    norm = math.hypot(*offset)  # the ORIGINAL offset's norm, as the reference does
    dx, dy = revised[0] / norm, revised[1] / norm
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels


# ------------------------------------------------------------------------------------------------------ colour


def classify_colors(cls: str, dets: Sequence[Detection], color_fn: ColorFn | None) -> list[str]:
    """Colour labels of ``dets``: the labels they carry, else the classifier callback's answer."""
    if not dets:
        return []
    if all(d.color is not None for d in dets):
        return [str(d.color) for d in dets]
    if color_fn is None:
        raise ValueError(
            f"a colour clause for {cls!r} needs colours: give each Detection a color, or pass color_fn"
        )
    colors = list(color_fn(cls, dets))
    if len(colors) != len(dets):
        raise ValueError(
            f"color_fn returned {len(colors)} colours for {len(dets)} detections of {cls!r}"
        )
    return colors


# ------------------------------------------------------------------------------------------------------ judge


def _check_position(
    found: Sequence[Detection], targets: Sequence[Detection], relation: str, threshold: float
) -> tuple[bool, list[str]]:
    """Every (object, target) pair must have ``relation``; stops at the first violation."""
    for obj in found:
        for target in targets:
            rels = relative_position(obj.box, target.box, threshold)
            if relation not in rels:
                return False, sorted(rels)
    return True, [relation]


def judge(
    kept: Mapping[str, Sequence[Detection]],
    metadata: Mapping[str, Any],
    color_fn: ColorFn | None = None,
    options: Options = Options(),
) -> Judgement:
    """The official GenEval verdict for one image from its kept detections (``keep_detections`` output)."""
    check_metadata(metadata)
    correct = True
    reasons: list[str] = []
    clauses: list[ClauseResult] = []
    groups: list[Sequence[Detection] | None] = []
    for req in metadata.get("include", []):
        cls, n = req["class"], req["count"]
        all_found = kept.get(cls, [])
        found = list(all_found[:n])  # colour and position look only at the n most confident
        matched = True
        colors: list[str] | None = None
        rels: list[list[str]] | None = None
        reason = ""
        if len(found) < n:
            matched = False
            reason = f"expected {cls}>={n}, found {len(found)}"
        else:
            if "color" in req:
                colors = classify_colors(cls, found, color_fn)
                k = colors.count(req["color"])
                if k < n:
                    matched = False
                    reason = f"expected {req['color']} {cls}>={n}, found {k} {req['color']}"
            if "position" in req and matched:
                relation, ref = req["position"]
                target = groups[ref]
                if target is None:
                    matched = False
                    reason = f"no target for {cls} to be {relation}"
                else:
                    ok, found_rels = _check_position(
                        found, target, relation, options.position_threshold
                    )
                    rels = [found_rels]
                    if not ok:
                        matched = False
                        reason = f"expected {cls} {relation} target, found {' and '.join(found_rels)} target"
        if not matched:
            correct = False
            reasons.append(reason)
        groups.append(found if matched else None)
        clauses.append(ClauseResult(cls, n, len(all_found), matched, colors, rels, reason))
    for req in metadata.get("exclude", []):
        cls, n = req["class"], req["count"]
        m = len(kept.get(cls, []))  # the whole kept list (after the 16-cap), not a top-n slice
        if m >= n:
            correct = False
            reasons.append(f"expected {cls}<{n}, found {m}")
    return Judgement(correct, reasons, clauses)


def flowgrpo_reward(
    kept: Mapping[str, Sequence[Detection]],
    metadata: Mapping[str, Any],
    color_fn: ColorFn | None = None,
    options: Options = Options(),
) -> Reward:
    """Flow-GRPO's GenEval reward (reward-server ``evaluate_reward``), quirks included.

    Per include clause with count n and m kept detections of its class: append 1 - |n - m| / n (negative when
    m > 2n); if m != n, append 0 for a colour or position clause and fail. Otherwise a colour appends
    1 - |n - k| / n (k = objects of the target colour) and fails unless k == n; a position (checked only while
    matched) appends 0 when its target clause failed, else 0 at the first failing pair and then always 1.
    Strict correctness needs exact counts everywhere and ignores exclude clauses. Score = mean of the terms.
    """
    check_metadata(metadata)
    strict = True
    terms: list[float] = []
    reasons: list[str] = []
    groups: list[Sequence[Detection] | None] = []
    for req in metadata.get("include", []):
        cls, n = req["class"], req["count"]
        found = list(kept.get(cls, []))  # all kept detections, not a top-n slice
        matched = True
        terms.append(1 - abs(n - len(found)) / n)
        if len(found) != n:
            matched = False
            reasons.append(f"expected {cls}=={n}, found {len(found)}")
            if "color" in req or "position" in req:
                terms.append(0.0)
        else:
            if "color" in req:
                colors = classify_colors(cls, found, color_fn)
                k = colors.count(req["color"])
                terms.append(1 - abs(n - k) / n)
                if k != n:
                    matched = False
                    reasons.append(f"expected {req['color']} {cls}=={n}, found {k} {req['color']}")
            if "position" in req and matched:
                relation, ref = req["position"]
                target = groups[ref]
                if target is None:
                    matched = False
                    reasons.append(f"no target for {cls} to be {relation}")
                    terms.append(0.0)
                else:
                    ok, found_rels = _check_position(
                        found, target, relation, options.position_threshold
                    )
                    if not ok:
                        matched = False
                        reasons.append(
                            f"expected {cls} {relation} target, found {' and '.join(found_rels)} target"
                        )
                        terms.append(0.0)
                    terms.append(1.0)  # the reference appends 1 after the pair loop, pass or fail
        if not matched:
            strict = False
        groups.append(found if matched else None)
    score = sum(terms) / len(terms) if terms else 0.0
    return Reward(strict, score, terms, reasons)


# ---------------------------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class Summary:
    """GenEval's summary_scores.py numbers."""

    n_images: int
    n_prompts: int
    image_accuracy: float  # "% correct images": mean over all images
    prompt_accuracy: float  # "% correct prompts": a prompt counts if ANY of its images is correct
    task_accuracy: dict[str, float]  # tag -> mean correct, tags in first-appearance order
    task_counts: dict[str, tuple[int, int]]  # tag -> (correct, images)
    overall: float  # unweighted mean of the task accuracies (the headline GenEval score)
    missing_tasks: tuple[
        str, ...
    ]  # official tasks with no image; overall then averages fewer tasks


def summarize(rows: Iterable[Mapping[str, Any]]) -> Summary:
    """Aggregate per-image rows ``{"tag", "correct", "metadata" (or "prompt")}`` the way GenEval does."""
    rows = list(rows)
    if not rows:
        raise ValueError("summarize needs at least one scored image")
    per_tag: dict[str, list[bool]] = {}
    per_prompt: dict[str, bool] = {}
    for i, row in enumerate(rows):
        if "tag" not in row or "correct" not in row:
            raise ValueError(f"row {i} needs 'tag' and 'correct': {dict(row)!r}")
        ok = bool(row["correct"])
        per_tag.setdefault(str(row["tag"]), []).append(ok)
        key = row.get("metadata", row.get("prompt"))
        if key is None:
            raise ValueError(f"row {i} needs 'metadata' or 'prompt' to group images by prompt")
        key = key if isinstance(key, str) else json.dumps(key, sort_keys=True)
        per_prompt[key] = per_prompt.get(key, False) or ok
    task_acc = {t: sum(v) / len(v) for t, v in per_tag.items()}
    n_correct = sum(sum(v) for v in per_tag.values())
    return Summary(
        n_images=len(rows),
        n_prompts=len(per_prompt),
        image_accuracy=n_correct / len(rows),
        prompt_accuracy=sum(per_prompt.values()) / len(per_prompt),
        task_accuracy=task_acc,
        task_counts={t: (sum(v), len(v)) for t, v in per_tag.items()},
        overall=sum(task_acc.values()) / len(task_acc),
        missing_tasks=tuple(t for t in TASKS if t not in per_tag),
    )
