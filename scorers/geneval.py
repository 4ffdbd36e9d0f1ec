"""GenEval scorer (registry name ``geneval``): detector -> pure rules -> official verdict and Flow-GRPO reward.

Per image: a COCO instance detector finds objects, ``scorers.geneval_rules`` applies GenEval's official rules
(``values``: 1.0 correct / 0.0 wrong, averaged per task by ``summarize``) and Flow-GRPO's partial-credit reward
(``rewards``: the number Flow-GRPO trains on; its strict verdict is in ``details``). ``meta`` is required: one
GenEval metadata dict per image (a line of ``evaluation_metadata.jsonl``).

Detector backends:

* default, in process: transformers ``Mask2FormerForUniversalSegmentation``, COCO instance, Swin-S
  (``facebook/mask2former-swin-small-coco-instance``), run with mmdetection's test pipeline (keep-ratio resize to
  1333 x 800, ImageNet normalisation, pad to 32) and mmdetection's instance post-processing (top-100 query-class
  pairs, score = class probability x mean mask probability, box = tight box around the mask). These are
  **different weights** from the official mmdetection 2.x checkpoint, so every result is labelled
  "non-reference detector" in ``details`` and in ``version``;
* reference: the official mmdetection 2.x checkpoint, run out of process (``scorers.remote.RemoteScorer`` against a
  ``harness serve`` box with the mmdet pins). Any object with ``__call__(images) -> list[Detections]`` can also be
  passed as ``detector=`` (a synthetic detector, for instance); the rules never see which one ran.

Colour: CLIP zero-shot as GenEval does with open_clip ViT-L-14/openai, here through transformers ``CLIPModel``
(``openai/clip-vit-large-patch14``, the same OpenAI weights): the instance is composited on #999 grey with its
mask, cropped to its box, resized (short side, bicubic) and centre-cropped; 10 colours x 3 templates, each
colour's text embedding = normalise(mean of normalised template embeddings), logits = 100 x cosine.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from flowbase.errors import InputError, MissingError, MissingExtraError
from scorers.base import MetaNeed, Requirements, Scores, check_meta
from scorers.geneval_rules import (
    COLORS,
    META_FIELDS,
    Detection,
    Detections,
    Options,
    check_metadata,
    flowgrpo_reward,
    judge,
    keep_detections,
    summarize,
)
from scorers.images import to_rgb_batch

log = logging.getLogger(__name__)

__all__ = [
    "GenEval",
    "Mask2FormerDetector",
    "ClipColorClassifier",
    "WeightsNotFoundError",
    "instance_postprocess",
    "color_crop",
    "summarize",
]

DEFAULT_DETECTOR = (
    "facebook/mask2former-swin-small-coco-instance@f77f179fc62b98f6734481ebbef5bceeb1e7f10b"
)
DEFAULT_CLIP = "openai/clip-vit-large-patch14@32bd64288804d66eefd0ccbe215aa642df71cc41"

# GenEval's evaluation/object_names.txt: the 80 COCO thing classes in detector label order, with GenEval's own
# spellings ("computer mouse", "tv remote", "computer keyboard"). A detector with 80 labels is read by index.
GENEVAL_OBJECTS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # = mmdet's [123.675, 116.28, 103.53] / 255
IMAGENET_STD = (0.229, 0.224, 0.225)  # = mmdet's [58.395, 57.12, 57.375] / 255
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CROP_BACKGROUND = (153, 153, 153)  # "#999"
COLOR_TEMPLATES = (
    "a photo of a {c} {obj}",
    "a photo of a {c}-colored {obj}",
    "a photo of a {c} object",
)


class WeightsNotFoundError(MissingError):
    """Model weights are neither a local folder nor in the Hugging Face cache."""


class Detector(Protocol):
    """Anything that turns images into raw per-class detections (before GenEval's threshold)."""

    name: str

    def __call__(self, images: Sequence[Image.Image]) -> list[Detections]: ...


# ------------------------------------------------------------------------------------------------ weights


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"org/repo@revision"`` -> (``"org/repo"``, ``"revision"``); a local path -> (path, None)."""
    if Path(spec).exists():
        return spec, None
    repo, _, rev = spec.partition("@")
    return repo, rev or None


def load_pretrained(cls: Any, spec: str, scorer: str, what: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` on a local folder or a pinned hub id; missing or wrong weights -> one clear line.

    transformers only warns when a checkpoint lacks a model's weights and initialises them at random; a scorer
    must not run on random weights, so a model missing more than half of its tensors is an error.
    """
    repo, revision = split_spec(spec)
    is_model = hasattr(cls, "config_class") and not cls.__name__.endswith("Tokenizer")
    try:
        if is_model:
            model, info = cls.from_pretrained(
                repo, revision=revision, output_loading_info=True, **kwargs
            )
        else:
            return cls.from_pretrained(repo, revision=revision, **kwargs)
    except (OSError, ValueError) as e:
        if Path(repo).exists():
            first = str(e).splitlines()[0] if str(e) else ""
            raise WeightsNotFoundError(
                f"{scorer}: {what} folder {repo} cannot be loaded as {cls.__name__} ({type(e).__name__}: {first})"
            ) from None
        raise WeightsNotFoundError(
            f"{scorer}: {what} weights {spec!r} are not available here; run `harness fetch {scorer}` "
            f"(or `hf download {repo}{' --revision ' + revision if revision else ''}`) on a "
            f"machine with hub access and copy the Hugging Face cache, or pass a local folder"
        ) from None
    missing = list(info.get("missing_keys", []))
    n_tensors = len(model.state_dict())
    if missing and len(missing) > n_tensors / 2:
        raise WeightsNotFoundError(
            f"{scorer}: {what} folder {repo} is not a {cls.__name__} checkpoint "
            f"({len(missing)} of {n_tensors} tensors missing)"
        )
    if missing:
        log.warning("%s: %s %s lacks %d tensors: %s", scorer, what, repo, len(missing), missing[:5])
    return model


# ----------------------------------------------------------------------------------------------- detector


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes around boolean masks [N, H, W] -> [N, 4] (max side +1; empty mask -> zeros)."""
    n, h, w = masks.shape
    x_any, y_any = masks.any(dim=1), masks.any(dim=2)  # [N, W], [N, H]
    x0 = x_any.float().argmax(dim=1)
    x1 = w - x_any.flip(1).float().argmax(dim=1)
    y0 = y_any.float().argmax(dim=1)
    y1 = h - y_any.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    boxes[~x_any.any(dim=1)] = 0.0
    return boxes


def instance_postprocess(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, max_per_image: int = 100
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """mmdet's MaskFormerFusionHead.instance_postprocess.

    class_logits [Q, C+1] (last = no object), mask_logits [Q, H, W] at image resolution ->
    labels [K], scores [K], masks bool [K, H, W], boxes [K, 4] with K = min(max_per_image, Q*C).
    """
    q, c1 = class_logits.shape
    c = c1 - 1
    probs = class_logits.float().softmax(-1)[:, :-1]  # [Q, C]
    k = min(max_per_image, q * c)
    top_scores, top_idx = probs.flatten().topk(k, sorted=True)
    labels = top_idx % c
    query = top_idx // c
    mask = mask_logits[query].float()  # [K, H, W]
    binary = mask > 0
    mask_score = (mask.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    return labels, top_scores * mask_score, binary, mask_boxes(binary)


def mmdet_resize_shape(w: int, h: int, scale: tuple[int, int] = (1333, 800)) -> tuple[int, int]:
    """mmcv's keep-ratio rescale: the largest size with long side <= 1333 and short side <= 800."""
    factor = min(max(scale) / max(w, h), min(scale) / min(w, h))
    return int(w * factor + 0.5), int(h * factor + 0.5)


class Mask2FormerDetector:
    """transformers Mask2Former (COCO instance) with mmdetection's test pipeline and post-processing."""

    def __init__(
        self,
        weights: str = DEFAULT_DETECTOR,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 4,
        scale: tuple[int, int] = (1333, 800),
        max_per_image: int = 100,
        class_names: Sequence[str] | None = None,
        swap_rb: bool = False,
        scorer: str = "geneval",
    ) -> None:
        from transformers import Mask2FormerForUniversalSegmentation

        self.name = f"mask2former-hf:{weights}"
        self.device = torch.device(device)
        self.model = load_pretrained(
            Mask2FormerForUniversalSegmentation, weights, scorer, "detector (Mask2Former)"
        )
        self.model.eval().to(self.device)
        n = int(self.model.config.num_labels)
        if class_names is None:
            id2label = self.model.config.id2label
            class_names = GENEVAL_OBJECTS if n == 80 else [str(id2label[i]) for i in range(n)]
        if len(class_names) != n:
            raise ValueError(f"{len(class_names)} class names for a detector with {n} labels")
        self.class_names = list(class_names)
        self.batch_size, self.scale, self.max_per_image = batch_size, scale, max_per_image
        self.swap_rb = (
            swap_rb  # Flow-GRPO's reward server feeds RGB arrays to mmdet, which treats them as BGR
        )

    def _pixels(self, image: Image.Image) -> torch.Tensor:
        """Resized, normalised [3, h, w] float tensor (unpadded)."""
        a = np.asarray(image, dtype=np.float32) / 255.0
        if self.swap_rb:
            a = a[..., ::-1]
        x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]
        w, h = mmdet_resize_shape(image.width, image.height, self.scale)
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)[0]
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> list[Detections]:
        """Raw detections per image: {class name: [Detection(box, score, mask), ...]} at original resolution."""
        out: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            pix = [self._pixels(im) for im in chunk]
            ph = max(-(-p.shape[1] // 32) * 32 for p in pix)
            pw = max(-(-p.shape[2] // 32) * 32 for p in pix)
            batch = torch.zeros(len(pix), 3, ph, pw)
            for i, p in enumerate(pix):
                batch[i, :, : p.shape[1], : p.shape[2]] = p
            dtype = next(self.model.parameters()).dtype
            res = self.model(pixel_values=batch.to(self.device, dtype))
            masks = torch.nn.functional.interpolate(
                res.masks_queries_logits.float(),
                size=(ph, pw),
                mode="bilinear",
                align_corners=False,
            )
            for i, (im, p) in enumerate(zip(chunk, pix, strict=True)):
                m = masks[i, :, : p.shape[1], : p.shape[2]]
                m = torch.nn.functional.interpolate(
                    m[None], size=(im.height, im.width), mode="bilinear", align_corners=False
                )[0]
                labels, scores, binary, boxes = instance_postprocess(
                    res.class_queries_logits[i], m, self.max_per_image
                )
                dets: dict[str, list[Detection]] = {}
                for lab, s, mk, bx in zip(
                    labels.tolist(), scores.tolist(), binary, boxes, strict=True
                ):
                    box = tuple(float(v) for v in bx.tolist())
                    dets.setdefault(self.class_names[lab], []).append(
                        Detection(box, float(s), mk.cpu().numpy())  # type: ignore[arg-type]
                    )
                out.append(dets)
        return out


# ------------------------------------------------------------------------------------------------- colour


def color_crop(image: Image.Image, det: Detection) -> Image.Image:
    """GenEval's crop: the instance over flat #999 grey (when it has a mask), cropped to its box by PIL."""
    image = image.convert("RGB")
    if det.mask is not None:
        mask = np.asarray(det.mask, dtype=bool)
        if mask.shape != (image.height, image.width):
            raise ValueError(
                f"mask shape {mask.shape} does not match image {image.height}x{image.width}"
            )
        blank = Image.new("RGB", image.size, CROP_BACKGROUND)
        image = Image.composite(image, blank, Image.fromarray(mask))
    x1, y1, x2, y2 = det.box
    if round(x2) <= round(x1) or round(y2) <= round(y1):  # a degenerate box would crop to 0 pixels
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    return image.crop((x1, y1, x2, y2))  # PIL rounds float coordinates


def clip_pixels(crops: Sequence[Image.Image], size: int) -> torch.Tensor:
    """open_clip's val transform without torchvision: short side -> size (bicubic), centre crop, normalise."""
    out = []
    for im in crops:
        w, h = im.size
        if w <= h:
            nw, nh = size, int(size * h / w)
        else:
            nw, nh = int(size * w / h), size
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        im = im.crop((left, top, left + size, top + size))
        a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        a = (a - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
        out.append(torch.from_numpy(a).permute(2, 0, 1))
    return torch.stack(out)


def pooled_features(out: Any) -> torch.Tensor:
    """Projected CLIP features: transformers 4 returns a tensor from get_*pooled_features, transformers 5 an output with pooler_output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipColorClassifier:
    """CLIP zero-shot colour classifier over GenEval's 10 colours and 3 templates."""

    def __init__(
        self,
        weights: str = DEFAULT_CLIP,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 16,
        scorer: str = "geneval",
    ) -> None:
        from transformers import CLIPModel, CLIPTokenizer

        self.name = f"clip-hf:{weights}"
        self.device = torch.device(device)
        self.model = load_pretrained(CLIPModel, weights, scorer, "colour classifier (CLIP)")
        self.model.eval().to(self.device, dtype)
        self.tokenizer = load_pretrained(CLIPTokenizer, weights, scorer, "CLIP tokenizer")
        self.size = int(self.model.config.vision_config.image_size)
        self.batch_size = batch_size
        self._weights: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def class_weights(self, obj: str) -> torch.Tensor:
        """[10, D] unit vectors: normalise(mean over templates of normalised text embeddings), cached per class."""
        if obj not in self._weights:
            rows = []
            for c in COLORS:
                texts = [t.format(c=c, obj=obj) for t in COLOR_TEMPLATES]
                tok = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
                emb = pooled_features(self.model.get_text_features(**tok.to(self.device))).float()
                emb = emb / emb.norm(dim=-1, keepdim=True)
                mean = emb.mean(0)
                rows.append(mean / mean.norm())
            self._weights[obj] = torch.stack(rows)
        return self._weights[obj]

    @torch.no_grad()
    def logits(self, crops: Sequence[Image.Image], obj: str) -> torch.Tensor:
        """[N, 10] = 100 x cosine(image embedding, colour weights)."""
        w = self.class_weights(obj)
        out = []
        for s in range(0, len(crops), self.batch_size):
            pix = clip_pixels(crops[s : s + self.batch_size], self.size)
            dtype = next(self.model.parameters()).dtype
            emb = pooled_features(
                self.model.get_image_features(pixel_values=pix.to(self.device, dtype))
            ).float()
            out.append(100.0 * (emb / emb.norm(dim=-1, keepdim=True)) @ w.T)
        return torch.cat(out)

    def __call__(self, image: Image.Image, obj: str, dets: Sequence[Detection]) -> list[str]:
        """Colour label of each detection of class ``obj`` in ``image``."""
        crops = [color_crop(image, d) for d in dets]
        return [COLORS[i] for i in self.logits(crops, obj).argmax(1).tolist()]


ColorClassifier = Callable[[Image.Image, str, Sequence[Detection]], Sequence[str]]


# ------------------------------------------------------------------------------------------------- scorer


def jpeg_roundtrip(image: Image.Image, quality: int = 75) -> Image.Image:
    """Flow-GRPO's transport: the trainer sends JPEG at PIL's default quality."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


class GenEval:
    """GenEval: values = official correctness (0/1), rewards = Flow-GRPO partial-credit score."""

    name = "geneval"
    version = "1.0+hf-mask2former"  # rules v1; default detector is the non-reference transformers Mask2Former
    requires = Requirements(
        weights=(DEFAULT_DETECTOR, DEFAULT_CLIP),
        extra="geneval",
        gpu_gb=4.0,
        meta=MetaNeed(
            META_FIELDS,
            "the rows of harness/prompts/geneval_official/evaluation_metadata.jsonl carry it: pass such "
            "a .jsonl file as --prompts, or the manifest.jsonl of `harness generate --benchmark geneval` as --manifest",
        ),
    )

    def __init__(
        self,
        detector: str | Detector = DEFAULT_DETECTOR,
        clip: str | ColorClassifier | None = DEFAULT_CLIP,
        *,
        device: str = "auto",
        batch_size: int = 4,
        options: Options = Options(),
        flowgrpo_transport: bool = False,
    ) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        self.options = options
        self.flowgrpo_transport = (
            flowgrpo_transport  # JPEG q75 + R/B swap for the detector, as reward-server
        )
        if isinstance(detector, str):
            try:
                import scipy  # noqa: F401  (transformers' Mask2Former needs it)
            except ImportError:
                raise MissingExtraError(
                    "geneval needs scipy for Mask2Former: pip install 'flow-opd[geneval]'"
                ) from None
            self.detector: Detector = Mask2FormerDetector(
                detector, device=dev, batch_size=batch_size, swap_rb=flowgrpo_transport
            )
            self.reference = False
        else:
            self.detector = detector
            self.reference = bool(getattr(detector, "reference", False))
        if isinstance(clip, str):
            dtype = (
                torch.float16 if dev.type == "cuda" else torch.float32
            )  # reference runs CLIP under fp16 amp
            self.colors: ColorClassifier | None = ClipColorClassifier(clip, device=dev, dtype=dtype)
        else:
            self.colors = clip
        self.detector_id = getattr(self.detector, "name", type(self.detector).__name__)
        if not self.reference:
            log.info(
                "geneval: %s is a non-reference detector; numbers differ from GenEval's",
                self.detector_id,
            )

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        """Score each image against its GenEval metadata."""
        check_meta(self.name, self.requires, meta)
        assert meta is not None  # check_meta refuses None
        rgb = to_rgb_batch(images, prompts, meta)
        for i, m in enumerate(meta):
            try:
                check_metadata(m)
            except ValueError as e:
                raise InputError(f"meta {i}: {e}") from None
        if self.flowgrpo_transport:
            rgb = [jpeg_roundtrip(im) for im in rgb]
        raw = self.detector(rgb)
        if len(raw) != len(rgb):
            raise RuntimeError(
                f"detector {self.detector_id} returned {len(raw)} results for {len(rgb)} images"
            )
        values: list[float] = []
        rewards: list[float] = []
        details: list[dict[str, Any]] = []
        for im, m, dets in zip(rgb, meta, raw, strict=True):
            kept = keep_detections(dets, m["tag"], self.options)
            color_fn = self._color_fn(im)
            verdict = judge(kept, m, color_fn, self.options)
            reward = flowgrpo_reward(kept, m, color_fn, self.options)
            values.append(1.0 if verdict.correct else 0.0)
            rewards.append(float(reward.score))
            details.append(
                {
                    "tag": m["tag"],
                    "correct": verdict.correct,
                    "reason": "\n".join(verdict.reasons),
                    "clauses": [asdict(c) for c in verdict.clauses],
                    "flowgrpo_strict": reward.strict_correct,
                    "flowgrpo_score": reward.score,
                    "flowgrpo_terms": reward.terms,
                    "boxes": {
                        c: [[*d.box, d.score] for d in ds] for c, ds in kept.items()
                    },  # as GenEval's results.jsonl "details"
                    "detector": self.detector_id,
                    "reference_detector": self.reference,
                    "transport": "jpeg75+rb-swap" if self.flowgrpo_transport else "png",
                }
            )
        return Scores(values, rewards, details)

    def _color_fn(
        self, image: Image.Image
    ) -> Callable[[str, Sequence[Detection]], Sequence[str]] | None:
        colors = self.colors
        if colors is None:
            return None
        return lambda obj, dets: colors(image, obj, dets)

    @staticmethod
    def summarize(rows: Sequence[dict[str, Any]]) -> Any:
        """GenEval's summary over per-image rows {tag, correct, metadata|prompt} (see ``geneval_rules``)."""
        return summarize(rows)
