"""T2I-CompBench scorer (registry name ``compbench``): the benchmark's scoring formulas, pure, plus model wrappers.

Reference: Karine-Huang/T2I-CompBench @ 1b70949 (docs/reference/benchmarks-and-scorers.md section 2). Per item,
``meta["category"]`` picks the metric:

| category | formula (pure function here) | model (transformers) |
|---|---|---|
| color, shape, texture | ``blip_vqa_score``: product over noun-phrase questions of P(yes)/(P(yes)+P(no)) | BLIP VQA |
| spatial | ``spatial_score`` with ``determine_position`` (150 px, IoU 0.1), scores < 0.5 -> 0 | detector |
| numeracy | ``numeracy_score``: per target +0.5/N if present, +0.5/N more if the count is exact | detector |
| non_spatial | ``clip_similarity``: plain cosine, no x100, no clamp | CLIP ViT-B/32 |
| complex | ``complex_score``: 3-in-1 routing by the complex_val_{spatial,action} lists | all three |

``3d_spatial`` (needs a DPT depth model) is not implemented and raises.

Differences from the reference, stated so nobody mistakes our numbers for published ones:

* The detector is **non-reference**: T2I-CompBench uses UniDet (detectron2, 722 unified classes); the default
  here is the transformers Mask2Former COCO instance model from ``scorers.geneval`` (80 COCO classes, score
  > 0.5, the UniDet threshold). Nouns outside COCO are never found. Boxes are measured in UniDet's input frame
  (short side 479, long side <= 480) so the 150 px distance keeps its meaning.
* BLIP: transformers ``BlipForQuestionAnswering`` (``Salesforce/blip-vqa-capfilt-large``, the HF port of
  ``model_base_vqa_capfilt_large.pth``) at 480 px via ``interpolate_pos_encoding``; the reference interpolates
  the position embedding once at load time. The question's first token is replaced by [ENC] as BLIP does.
* Text parsing uses spaCy ``en_core_web_sm`` exactly where the reference does (noun chunks, POS tags), when
  installed. Without it, per-item ``meta`` may carry the parse (``questions``/``noun_phrases``, ``objects``,
  ``text_without_adjectives``); numeracy then tokenises with a regex (same tokens for its simple prompts).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from PIL import Image

from flowbase.errors import InputError, MissingExtraError
from scorers.base import Requirements, Scores
from scorers.geneval import (
    CLIP_MEAN,
    CLIP_STD,
    DEFAULT_DETECTOR,
    GENEVAL_OBJECTS,
    Detector,
    Mask2FormerDetector,
    clip_pixels,
    load_pretrained,
    pooled_features,
)
from scorers.images import to_rgb_batch

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets" / "compbench"
DEFAULT_BLIP = "Salesforce/blip-vqa-capfilt-large@692ac4e36ded405b449479c01977b927a47b87b2"
DEFAULT_CLIP_B32 = "openai/clip-vit-base-patch32@eaee4c876b93e66f7fac584b529025a96d71ad66"

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
# COCO names in label order, with the plain COCO spellings CompBench prompts use ("mouse", "remote", "keyboard")
COCO_NAMES = tuple(
    {"computer mouse": "mouse", "tv remote": "remote", "computer keyboard": "keyboard"}.get(n, n)
    for n in GENEVAL_OBJECTS
)

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


# ------------------------------------------------------------------------------------------------ parsing


class TextParser(Protocol):
    """The spaCy features T2I-CompBench reads."""

    name: str

    def noun_chunks(self, text: str) -> list[str]: ...

    def tokens(self, text: str) -> list[tuple[str, str]]: ...


class SpacyParser:
    """spaCy ``en_core_web_sm``, as the reference uses."""

    def __init__(self, model: str = "en_core_web_sm") -> None:
        try:
            import spacy

            self.nlp = spacy.load(model)
        except (ImportError, OSError):
            raise MissingExtraError(
                f"compbench parses prompts with spaCy {model}: pip install 'flow-opd[compbench]' && "
                f"python -m spacy download {model}; or pass the parse in meta (questions, objects, "
                "text_without_adjectives)"
            ) from None
        self.name = f"spacy:{model}"

    def noun_chunks(self, text: str) -> list[str]:
        """Noun chunk texts, in order."""
        return [c.text for c in self.nlp(text).noun_chunks]

    def tokens(self, text: str) -> list[tuple[str, str]]:
        """(text, coarse POS) per token."""
        return [(t.text, t.pos_) for t in self.nlp(text)]


# ------------------------------------------------------------------------------------------------ models


class BlipVqa:
    """BLIP VQA yes-probability: P(yes) / (P(yes) + P(no)) at the answer decoder's first step."""

    def __init__(
        self,
        weights: str = DEFAULT_BLIP,
        *,
        device: str | torch.device = "cpu",
        image_size: int = 480,
    ) -> None:
        from transformers import AutoTokenizer, BlipForQuestionAnswering

        self.name = f"blip-vqa-hf:{weights}"
        self.device = torch.device(device)
        self.model = load_pretrained(BlipForQuestionAnswering, weights, "compbench", "BLIP VQA")
        self.model.eval().to(self.device)
        self.tokenizer = load_pretrained(AutoTokenizer, weights, "compbench", "BLIP tokenizer")
        vocab = self.tokenizer.get_vocab()
        self.bos_id = int(self.model.config.text_config.bos_token_id)  # [DEC]
        self.enc_id = int(vocab.get("[ENC]", self.bos_id + 1))  # BLIP adds [ENC] right after [DEC]
        self.yes_id, self.no_id = int(vocab["yes"]), int(vocab["no"])
        self.image_size = image_size

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """Squash-resize to image_size^2 (bicubic) and normalise with CLIP's mean/std."""
        im = image.convert("RGB").resize(
            (self.image_size, self.image_size), Image.Resampling.BICUBIC
        )
        a = (np.asarray(im, np.float32) / 255.0 - np.array(CLIP_MEAN, np.float32)) / np.array(
            CLIP_STD, np.float32
        )
        return torch.from_numpy(a).permute(2, 0, 1)

    @torch.no_grad()
    def __call__(self, image: Image.Image, questions: Sequence[str]) -> list[float]:
        """One yes-probability per question about ``image``."""
        if not questions:
            return []
        dtype = next(self.model.parameters()).dtype
        pix = self.pixels(image)[None].to(self.device, dtype)
        interp = self.image_size != int(self.model.config.vision_config.image_size)
        img = self.model.vision_model(
            pixel_values=pix, interpolate_pos_encoding=interp
        ).last_hidden_state
        n = len(questions)
        img = img.expand(n, -1, -1)
        q = self.tokenizer(
            list(questions), padding="longest", truncation=True, max_length=35, return_tensors="pt"
        ).to(self.device)
        ids = q.input_ids.clone()
        ids[:, 0] = self.enc_id
        img_mask = torch.ones(img.shape[:-1], dtype=torch.long, device=self.device)
        states = self.model.text_encoder(
            input_ids=ids,
            attention_mask=q.attention_mask,
            encoder_hidden_states=img,
            encoder_attention_mask=img_mask,
        ).last_hidden_state
        start = torch.full((n, 1), self.bos_id, dtype=torch.long, device=self.device)
        logits = self.model.text_decoder(
            input_ids=start, encoder_hidden_states=states, encoder_attention_mask=q.attention_mask
        ).logits[:, 0, :]
        p = logits.float().softmax(-1)
        return (p[:, self.yes_id] / (p[:, self.yes_id] + p[:, self.no_id])).tolist()


class ClipCosine:
    """Cosine between CLIP image and text embeddings (T2I-CompBench's non-spatial CLIPScore)."""

    def __init__(
        self, weights: str = DEFAULT_CLIP_B32, *, device: str | torch.device = "cpu"
    ) -> None:
        from transformers import CLIPModel, CLIPTokenizer

        self.name = f"clip-hf:{weights}"
        self.device = torch.device(device)
        self.model = load_pretrained(CLIPModel, weights, "compbench", "CLIP").eval().to(self.device)
        self.tokenizer = load_pretrained(CLIPTokenizer, weights, "compbench", "CLIP tokenizer")
        self.size = int(self.model.config.vision_config.image_size)

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        """One cosine per (image, text) pair."""
        pix = clip_pixels(images, self.size).to(self.device)
        img = pooled_features(self.model.get_image_features(pixel_values=pix)).float().cpu().numpy()
        tok = self.tokenizer(
            list(texts), padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).to(self.device)
        txt = pooled_features(self.model.get_text_features(**tok)).float().cpu().numpy()
        return [clip_similarity(a, b) for a, b in zip(img, txt, strict=True)]


# ------------------------------------------------------------------------------------------------ scorer


@dataclass
class _Parts:
    """Per-image pieces computed by the models, before the category formula."""

    attribute: float | None = None
    spatial: float | None = None
    action: float | None = None
    numeracy: float | None = None


class CompBench:
    """T2I-CompBench: ``meta[i]["category"]`` picks the formula; values = rewards = the category score."""

    name = "compbench"
    version = (
        "1.0+hf-nonref"  # formulas v1; Mask2Former (COCO) instead of UniDet, HF BLIP/CLIP ports
    )
    requires = Requirements(
        weights=(DEFAULT_BLIP, DEFAULT_CLIP_B32, DEFAULT_DETECTOR), extra="compbench", gpu_gb=4.0
    )

    def __init__(
        self,
        blip: str | BlipVqa | None = DEFAULT_BLIP,
        clip: str | ClipCosine | None = DEFAULT_CLIP_B32,
        detector: str | Detector | None = DEFAULT_DETECTOR,
        *,
        parser: TextParser | str | None = "auto",
        categories: Sequence[str] | None = None,
        device: str = "auto",
        detection_threshold: float = 0.5,
        np_num: int = 8,
    ) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        cats = tuple(categories or CATEGORIES)
        for c in cats:
            self._check_category(c)
        needs_blip = any(c in (*ATTRIBUTE, "complex") for c in cats)
        needs_det = any(c in ("spatial", "numeracy", "complex") for c in cats)
        needs_clip = any(c in ("non_spatial", "complex") for c in cats)
        self.categories = cats
        self.blip = BlipVqa(blip, device=device) if isinstance(blip, str) and needs_blip else blip
        self.clip = (
            ClipCosine(clip, device=device) if isinstance(clip, str) and needs_clip else clip
        )
        if isinstance(detector, str) and needs_det:
            try:
                import scipy  # noqa: F401
            except ImportError:
                raise MissingExtraError(
                    "compbench's Mask2Former needs scipy: pip install 'flow-opd[compbench]'"
                ) from None
            det = Mask2FormerDetector(detector, device=device, scorer="compbench")
            if len(det.class_names) == 80:
                det.class_names = list(COCO_NAMES)
            self.detector: Detector | None = det
        else:
            self.detector = detector if not isinstance(detector, str) else None
        if parser == "auto":
            try:
                parser = SpacyParser()
            except ImportError as e:
                log.info("compbench: %s", e)
                parser = None
        elif isinstance(parser, str):
            parser = SpacyParser(parser)
        self.parser: TextParser | None = parser
        self.detection_threshold = detection_threshold
        self.np_num = np_num

    @staticmethod
    def _check_category(c: str) -> None:
        if c == "3d_spatial":
            raise InputError(
                "compbench category '3d_spatial' needs a DPT depth model and is not implemented"
            )
        if c not in CATEGORIES:
            raise InputError(f"unknown compbench category {c!r}; known: {', '.join(CATEGORIES)}")

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        """Score each image with its category's T2I-CompBench formula."""
        if meta is None:
            raise InputError(
                "compbench needs meta: one dict per image with 'category' (one of "
                + ", ".join(CATEGORIES)
                + ")"
            )
        rgb = to_rgb_batch(images, prompts, meta)
        values: list[float] = []
        details: list[dict[str, Any]] = []
        for i, (im, prompt, m) in enumerate(zip(rgb, prompts, meta, strict=True)):
            cat = m.get("category") if isinstance(m, dict) else None
            if not isinstance(cat, str):
                raise InputError(f"meta {i}: needs 'category' (one of {', '.join(CATEGORIES)})")
            self._check_category(cat)
            if cat not in self.categories:
                raise InputError(
                    f"meta {i}: category {cat!r} was not loaded (categories={self.categories})"
                )
            value, info = self._score_one(im, prompt, cat, m, i)
            values.append(value)
            details.append({"category": cat, **info})
        return Scores(values, list(values), details)

    # -- per category -------------------------------------------------------------------------------------

    def _score_one(
        self, im: Image.Image, prompt: str, cat: str, m: dict[str, Any], i: int
    ) -> tuple[float, dict[str, Any]]:
        if cat in ATTRIBUTE:
            return self._attribute(im, prompt, m, i)
        if cat == "spatial":
            obj1, obj2 = self._objects(prompt, m, i, complex_prompt=False)
            return self._spatial(im, prompt, obj1, obj2)
        if cat == "numeracy":
            return self._numeracy(im, prompt, m)
        if cat == "non_spatial":
            score = self._clip(im, prompt)
            return score, {"text": prompt, "clip": self._model_name(self.clip)}
        # complex: attribute + spatial (complex object rule) + CLIP on the adjective-free prompt
        kind = m.get("complex_kind") or complex_kind(prompt)
        attr, attr_info = self._attribute(im, prompt, m, i)
        spatial = action = None
        info: dict[str, Any] = {"kind": kind, "attribute": attr, **attr_info}
        if kind in ("spatial", "all"):
            obj1, obj2 = self._objects(prompt, m, i, complex_prompt=True)
            spatial, sp_info = self._spatial(im, prompt, obj1, obj2)
            info.update(spatial=spatial, **sp_info)
        if kind in ("action", "all"):
            text = m.get("text_without_adjectives")
            if text is None:
                text = strip_adjectives(
                    self._require_parser(i, "text_without_adjectives").tokens(prompt)
                )
            action = self._clip(im, text)
            info.update(action=action, clip_text=text, clip=self._model_name(self.clip))
        return complex_score(kind, attr, spatial, action), info

    def _require_parser(self, i: int, field: str) -> TextParser:
        if self.parser is None:
            raise InputError(
                f"meta {i}: no '{field}' given and spaCy en_core_web_sm is not installed "
                "(pip install 'flow-opd[compbench]' && python -m spacy download en_core_web_sm)"
            )
        return self.parser

    def _attribute(
        self, im: Image.Image, prompt: str, m: dict[str, Any], i: int
    ) -> tuple[float, dict[str, Any]]:
        if "questions" in m:
            questions = list(m["questions"])[: self.np_num]
        elif "noun_phrases" in m:
            questions = blip_questions(m["noun_phrases"], self.np_num)
        else:
            questions = blip_questions(
                self._require_parser(i, "questions").noun_chunks(prompt), self.np_num
            )
        if self.blip is None:
            raise ValueError("compbench: BLIP VQA was not loaded")
        answers = self.blip(im, questions)
        return blip_vqa_score(answers), {
            "questions": questions,
            "answers": answers,
            "blip": self._model_name(self.blip),
        }

    def _objects(
        self, prompt: str, m: dict[str, Any], i: int, complex_prompt: bool
    ) -> tuple[str | None, str | None]:
        if "objects" in m:
            a, b = m["objects"]
            return a, b
        tokens = self._require_parser(i, "objects").tokens(prompt)
        return spatial_objects_complex(tokens) if complex_prompt else spatial_objects_simple(tokens)

    def _found(self, im: Image.Image) -> list[Found]:
        if self.detector is None:
            raise ValueError("compbench: no detector was loaded")
        (raw,) = self.detector([im])
        scale = unidet_frame_scale(im.width, im.height)
        found = [
            Found(
                label,
                (d.box[0] * scale, d.box[1] * scale, d.box[2] * scale, d.box[3] * scale),
                d.score,
            )
            for label, dets in raw.items()
            for d in dets
            if d.score > self.detection_threshold
        ]
        return sorted(found, key=lambda f: -f.score)

    def _spatial(
        self, im: Image.Image, prompt: str, obj1: str | None, obj2: str | None
    ) -> tuple[float, dict[str, Any]]:
        locality = find_locality(prompt)
        found = self._found(im)
        return spatial_score(found, obj1, obj2, locality), {
            "objects": [obj1, obj2],
            "locality": locality,
            "found": [[f.label, *f.box, f.score] for f in found],
            "detector": self._model_name(self.detector),
            "reference_detector": False,
        }

    def _numeracy(
        self, im: Image.Image, prompt: str, m: dict[str, Any]
    ) -> tuple[float, dict[str, Any]]:
        if "targets" in m:
            targets = [(str(a), int(b)) for a, b in m["targets"]]
            tokenizer = "meta"
        else:
            parser = self.parser
            toks = (
                [t for t, _ in parser.tokens(prompt)]
                if parser is not None
                else simple_tokens(prompt)
            )
            targets = numeracy_targets(toks)
            tokenizer = parser.name if parser is not None else "regex"
        labels = dedupe_labels(self._found(im))
        return numeracy_score(labels, targets), {
            "targets": targets,
            "labels": labels,
            "tokenizer": tokenizer,
            "detector": self._model_name(self.detector),
            "reference_detector": False,
        }

    def _clip(self, im: Image.Image, text: str) -> float:
        if self.clip is None:
            raise ValueError("compbench: CLIP was not loaded")
        return self.clip([im], [text])[0]

    @staticmethod
    def _model_name(obj: Any) -> str:
        return str(getattr(obj, "name", type(obj).__name__))
