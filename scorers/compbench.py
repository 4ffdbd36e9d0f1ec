"""T2I-CompBench scorer (registry name ``compbench``): model wrappers and the scorer around the pure formulas.

Reference: Karine-Huang/T2I-CompBench @ 1b70949 (docs/reference/benchmarks-and-scorers.md section 2). Per item,
``meta["category"]`` picks the metric:

| category | formula (pure, in ``scorers.compbench_rules``) | model (transformers) |
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from flowbase.errors import InputError, MissingExtraError
from scorers.base import MetaField, MetaNeed, Requirements, Scores, check_meta
from scorers.compbench_rules import (
    ASSETS,
    ATTRIBUTE,
    CATEGORIES,
    COMPLEX_PREPOSITIONS,
    LOCALITIES,
    NUMBER_WORDS,
    NUMERACY_ALIASES,
    PERSON_WORDS,
    SKIPPED_CHUNKS,
    Box,
    Found,
    blip_questions,
    blip_vqa_score,
    clip_similarity,
    complex_key,
    complex_kind,
    complex_score,
    complex_splits,
    dedupe_labels,
    determine_position,
    find_locality,
    numeracy_score,
    numeracy_targets,
    object_vocabulary,
    simple_tokens,
    spatial_objects_complex,
    spatial_objects_simple,
    spatial_score,
    strip_adjectives,
    unidet_frame_scale,
)
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

# the formulas are re-exported: ``from scorers.compbench import spatial_score`` keeps working
__all__ = [
    "ASSETS",
    "ATTRIBUTE",
    "BlipVqa",
    "Box",
    "CATEGORIES",
    "COCO_NAMES",
    "COMPLEX_PREPOSITIONS",
    "ClipCosine",
    "CompBench",
    "DEFAULT_BLIP",
    "DEFAULT_CLIP_B32",
    "Found",
    "LOCALITIES",
    "NUMBER_WORDS",
    "NUMERACY_ALIASES",
    "PERSON_WORDS",
    "SKIPPED_CHUNKS",
    "SpacyParser",
    "TextParser",
    "blip_questions",
    "blip_vqa_score",
    "clip_similarity",
    "complex_key",
    "complex_kind",
    "complex_score",
    "complex_splits",
    "dedupe_labels",
    "determine_position",
    "find_locality",
    "numeracy_score",
    "numeracy_targets",
    "object_vocabulary",
    "simple_tokens",
    "spatial_objects_complex",
    "spatial_objects_simple",
    "spatial_score",
    "strip_adjectives",
    "unidet_frame_scale",
]

log = logging.getLogger(__name__)

DEFAULT_BLIP = "Salesforce/blip-vqa-capfilt-large@692ac4e36ded405b449479c01977b927a47b87b2"
DEFAULT_CLIP_B32 = "openai/clip-vit-base-patch32@eaee4c876b93e66f7fac584b529025a96d71ad66"

# COCO names in label order, with the plain COCO spellings CompBench prompts use ("mouse", "remote", "keyboard")
COCO_NAMES = tuple(
    {"computer mouse": "mouse", "tv remote": "remote", "computer keyboard": "keyboard"}.get(n, n)
    for n in GENEVAL_OBJECTS
)


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
        weights=(DEFAULT_BLIP, DEFAULT_CLIP_B32, DEFAULT_DETECTOR),
        extra="compbench",
        gpu_gb=4.0,
        meta=MetaNeed(
            (
                MetaField("category", "string", "color"),
                # optional parses that stand in for spaCy (see the module docstring)
                MetaField("questions", "list", ["a red car?"], required=False),
                MetaField("noun_phrases", "list", ["a red car"], required=False),
                MetaField("objects", "list", ["dog", "desk"], required=False),
                MetaField("targets", "list", [["dog", 2]], required=False),
                MetaField("complex_kind", "string", "spatial", required=False),
                MetaField("text_without_adjectives", "string", "a car", required=False),
            ),
            f"the category is one of {', '.join(CATEGORIES)}; `harness eval -b compbench` sets it "
            "from the file name under harness/prompts/t2i_compbench_val/ (a --manifest from "
            "`harness generate --benchmark compbench` carries it)",
        ),
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
        check_meta(self.name, self.requires, meta)
        assert meta is not None  # check_meta refuses None
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
