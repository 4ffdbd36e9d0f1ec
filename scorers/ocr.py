"""OCR accuracy: Flow-GRPO's text-rendering reward on the first double-quoted span of the prompt.

The reward is engine independent and pure (``ocr_reward``): with T the text between the first pair of double
quotes and R the concatenation of every recognised line (in the engine's order), both with spaces deleted and
lower-cased, d = 0 if T is a substring of R, else min(Levenshtein(R, T), |T|), and r = 1 - d/|T| in [0, 1]
(Flow-GRPO ``flow_grpo/ocr.py``; the paper's max(1 - N_e/N_ref, 0)).

Engines (``engine=``):

- ``rapidocr`` (default, extra ``ocr``): ``rapidocr_onnxruntime`` runs PP-OCRv4 det/rec as ONNX models that ship
  inside its wheel, so it works offline. Set up like Flow-GRPO's PaddleOCR call: no angle classifier, lines under
  0.5 recognition confidence dropped, and PaddleOCR 2.x's detector defaults (longer side limited to 960, no
  dilation, DB box threshold 0.6, unclip 1.5). Its
  recogniser is the Chinese+English PP-OCRv4 model, not PaddleOCR's English one, so numbers are close to, not
  identical with, Flow-GRPO's; the engine is part of the scorer version.
- ``paddleocr`` (extra ``paddleocr``): PaddleOCR 2.x exactly as Flow-GRPO builds it
  (``PaddleOCR(use_angle_cls=False, lang="en", use_gpu=False, show_log=False)``, ``ocr(img, cls=False)``).
  PaddleOCR 3.x changed its API and cannot run offline, so it is refused.

Both engines get ``np.array(rgb_image)`` although they treat arrays as BGR: Flow-GRPO does the same, and we copy it.
A prompt without a quoted span, or with an empty one, is an error (Flow-GRPO crashes or divides by zero there). An
engine failure on one image gives reward 0, as in Flow-GRPO, but it is logged and recorded in that image's details.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np
from PIL import Image

from flowbase.errors import InputError, MissingExtraError
from scorers.base import Requirements, Scores
from scorers.images import check_lengths, to_rgb_batch

log = logging.getLogger(__name__)

VERSION = "1"
ENGINES = ("rapidocr", "paddleocr")


class NoQuotedTextError(InputError):
    """A prompt with no double-quoted target text."""


def target_text(prompt: str) -> str:
    """The text between the first pair of double quotes (Flow-GRPO: ``prompt.split('"')[1]``)."""
    parts = prompt.split('"')
    if len(parts) < 3:
        what = "an unclosed double quote" if len(parts) == 2 else "no double-quoted text"
        raise NoQuotedTextError(
            f'OCR needs the text to render in double quotes, e.g. a sign that says "OPEN"; '
            f"prompt has {what}: {prompt!r}"
        )
    if not normalise(parts[1]):
        raise NoQuotedTextError(f"the quoted text is empty in prompt {prompt!r}")
    return parts[1]


def normalise(text: str) -> str:
    """Delete ASCII spaces and lower-case (only ' ' is removed, as in Flow-GRPO)."""
    return text.replace(" ", "").lower()


def levenshtein(a: str, b: str) -> int:
    """Edit distance with unit insert, delete and substitute costs."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def ocr_reward(recognised: str, target: str) -> float:
    """Flow-GRPO's OCR reward 1 - min(d, |T|)/|T|, with d = 0 when T is a substring of R."""
    r, t = normalise(recognised), normalise(target)
    if not t:
        raise NoQuotedTextError("the target text is empty")
    d = 0 if t in r else min(levenshtein(r, t), len(t))
    return 1.0 - d / len(t)


class OcrEngine(Protocol):
    name: str

    def read(self, image: np.ndarray) -> list[tuple[str, float]]:
        """Recognised (text, confidence) lines of one HxWx3 uint8 array, in reading order."""
        ...


class RapidOcrEngine:
    """PP-OCRv4 through onnxruntime; the models ship in the ``rapidocr_onnxruntime`` wheel."""

    name = "rapidocr"

    def __init__(self) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as e:
            raise MissingExtraError(
                f"the rapidocr OCR engine needs rapidocr_onnxruntime ({e}): pip install 'flow-opd[ocr]'"
            ) from None
        # PaddleOCR 2.x settings Flow-GRPO ran with: no angle classifier; detector input only shrunk when its
        # longer side exceeds 960 (RapidOCR's default enlarges the shorter side to 736); no dilation; box
        # threshold 0.6; unclip 1.5; lines under 0.5 confidence dropped (PaddleOCR's drop_score).
        self._ocr = RapidOCR(
            use_cls=False,
            det_limit_type="max",
            det_use_dilation=False,
            det_box_thresh=0.6,
            det_unclip_ratio=1.5,
            text_score=0.5,
            print_verbose=False,
        )

    def read(self, image: np.ndarray) -> list[tuple[str, float]]:
        """Recognised (text, confidence) lines, top to bottom."""
        result, _ = self._ocr(image)
        return [(str(r[1]), float(r[2])) for r in result or []]


class PaddleOcrEngine:
    """PaddleOCR 2.x, constructed exactly as Flow-GRPO does."""

    name = "paddleocr"

    def __init__(self) -> None:
        try:
            import paddleocr
            from paddleocr import PaddleOCR
        except ImportError as e:
            raise MissingExtraError(
                f"the paddleocr OCR engine needs PaddleOCR 2.x ({e}): pip install 'flow-opd[paddleocr]'"
            ) from None
        version = str(getattr(paddleocr, "__version__", "?"))
        if not version.startswith("2."):
            raise MissingExtraError(
                f"paddleocr {version} is installed; only 2.x (Flow-GRPO uses 2.9.1) is supported: "
                "pip install 'paddleocr>=2.7,<3'"
            )
        self._ocr = PaddleOCR(use_angle_cls=False, lang="en", use_gpu=False, show_log=False)

    def read(self, image: np.ndarray) -> list[tuple[str, float]]:
        """Recognised (text, confidence) lines in PaddleOCR's order."""
        result = self._ocr.ocr(image, cls=False)
        lines = result[0] if result and result[0] else []
        return [(str(line[1][0]), float(line[1][1])) for line in lines]


def make_engine(engine: str) -> OcrEngine:
    """Build the named OCR engine."""
    if engine == "rapidocr":
        return RapidOcrEngine()
    if engine == "paddleocr":
        return PaddleOcrEngine()
    raise InputError(f"unknown OCR engine {engine!r}; choose one of {', '.join(ENGINES)}")


class OCR:
    """Flow-GRPO OCR reward on the first quoted span (RapidOCR by default, PaddleOCR 2.x optional)."""

    name = "ocr"
    version = f"{VERSION}-rapidocr"
    requires = Requirements(extra="ocr")

    def __init__(self, engine: str = "rapidocr") -> None:
        self.engine = make_engine(engine)
        self.version = f"{VERSION}-{engine}"

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        check_lengths(images, prompts, meta)
        targets = [target_text(p) for p in prompts]  # fail on a bad prompt before any OCR work
        rgb = to_rgb_batch(images)
        rewards: list[float] = []
        details: list[dict[str, Any]] = []
        for i, (img, target) in enumerate(zip(rgb, targets, strict=True)):
            detail: dict[str, Any] = {"target": target, "engine": self.engine.name}
            try:
                lines = self.engine.read(np.array(img))
            except Exception as e:  # Flow-GRPO scores an engine failure 0; we also say so
                log.warning("OCR engine %s failed on image %d: %s", self.engine.name, i, e)
                rewards.append(0.0)
                details.append({**detail, "text": "", "error": f"{type(e).__name__}: {e}"})
                continue
            text = "".join(t for t, conf in lines if conf > 0)
            rewards.append(ocr_reward(text, target))
            details.append({**detail, "text": text, "lines": [[t, round(c, 4)] for t, c in lines]})
        return Scores(values=list(rewards), rewards=rewards, details=details)
