"""DeQA-Score: no-reference image quality on a 1-5 scale (zhiyuanyou/DeQA-Score-Mix3), served out of process.

The model is mPLUG-Owl2 (LLaMA-2-7B + ViT-L/14 at 448) whose Hugging Face remote code needs
``transformers==4.36.1`` (DeQA-Score issues #14, #20, #22, #31), which cannot live beside SD3.5's transformers 5.
So, as in Flow-GRPO (yifan123/reward-server), it runs in its **own environment** as a worker, and ``DeQA`` here is
a thin ``RemoteScorer`` client:

1. In a separate venv: ``pip install torch "transformers==4.36.1" accelerate sentencepiece pillow numpy``, put this
   repository on ``PYTHONPATH`` (the worker imports only ``scorers.{base,images,remote,deqa}`` and
   ``flowbase.errors``: stdlib, numpy, PIL),
   get the weights with ``harness fetch deqa`` (same ``HF_HOME``), then run
   ``python -m scorers.deqa_worker --port 18086 --device cuda``.
2. Here: ``load("deqa", url="http://127.0.0.1:18086")`` or ``FLOW_OPD_DEQA_URL=http://127.0.0.1:18086``.

Scoring (DeQA-Score ``src/evaluate/scorer.py``): pad the image to a square with the CLIP mean colour
(122, 116, 104), centred; CLIP-preprocess at 448; prompt ``PROMPT``; take the last-position logits of the five
level words; score = softmax(logits) . (5, 4, 3, 2, 1) in [1, 5]. The pure parts (``expand2square``,
``level_weighted_score``, ``tokenize_with_image``) live here and are tested; the worker uses them in its ``repo``
method, while its default ``hf`` method calls the remote code's ``model.score`` as Flow-GRPO does. Raw value = the
1-5 score; reward = score / 5 (Flow-GRPO). Flow-GRPO sent JPEG q75 to its server: pass ``jpeg_quality=75`` to match.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from flowbase.errors import InputError
from scorers.base import Requirements, Scores
from scorers.remote import RemoteScorer, RemoteScorerError

log = logging.getLogger(__name__)

MODEL_ID = "zhiyuanyou/DeQA-Score-Mix3"
URL_ENV = "FLOW_OPD_DEQA_URL"
PROMPT = "USER: How would you rate the quality of this image?\n<|image|>\nASSISTANT: The quality of the image is"
IMAGE_TOKEN = "<|image|>"
IMAGE_TOKEN_INDEX = (
    -200
)  # mPLUG-Owl2 / LLaVA placeholder id, replaced by visual tokens inside the model
LEVELS = ("excellent", "good", "fair", "poor", "bad")
LEVEL_WEIGHTS = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
REWARD_DIVISOR = 5.0


class WorkerNotConfiguredError(InputError):
    """DeQA was asked for without a worker URL."""


def background_colour(mean: Sequence[float] = CLIP_MEAN) -> tuple[int, ...]:
    """The pad colour: int(255 * mean) per channel, (122, 116, 104) for the CLIP mean."""
    return tuple(int(x * 255) for x in mean)


def expand2square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """Pad to a square canvas of the longer side, image centred (offset rounded down), as DeQA-Score does."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def level_weighted_score(logits: np.ndarray) -> np.ndarray:
    """Level logits [B, 5] (excellent..bad) -> expected level softmax . (5, 4, 3, 2, 1), shape [B]."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != len(LEVELS):
        raise ValueError(f"expected level logits of shape [B, {len(LEVELS)}], got {z.shape}")
    z = z - z.max(axis=1, keepdims=True)  # softmax is shift invariant; this keeps exp finite
    q = np.exp(z)
    q /= q.sum(axis=1, keepdims=True)
    return q @ LEVEL_WEIGHTS


def tokenize_with_image(
    prompt: str,
    tokenize: Callable[[str], list[int]],
    bos_id: int | None,
    image_token_index: int = IMAGE_TOKEN_INDEX,
) -> list[int]:
    """Token ids of ``prompt`` with ``IMAGE_TOKEN`` replaced by ``image_token_index`` (LLaVA's
    tokenizer_image_token: each chunk tokenised alone, a leading BOS kept once)."""
    chunks = [tokenize(chunk) for chunk in prompt.split(IMAGE_TOKEN)]
    ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and bos_id is not None and chunks[0][0] == bos_id:
        offset = 1
        ids.append(bos_id)
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(image_token_index)
        ids.extend(chunk[offset:])
    return ids


class DeQA:
    """DeQA-Score quality 1-5 (mPLUG-Owl2); out of process: a worker in its own env, reward = score / 5."""

    name = "deqa"
    version = "1-hf"
    requires = Requirements(weights=(MODEL_ID,), extra=None, gpu_gb=16.0)
    runs = "worker"  # `python -m scorers.deqa_worker` in an env with transformers==4.36.1
    url_env = URL_ENV  # where the worker listens; checked before an evaluation starts

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 300.0,
        batch_size: int = 64,
        jpeg_quality: int | None = None,
    ) -> None:
        url = url or os.environ.get(URL_ENV)
        if not url:
            raise WorkerNotConfiguredError(
                f"deqa runs out of process: start `python -m scorers.deqa_worker --port 18086` in an env with "
                f"transformers==4.36.1 (see scorers/deqa.py), then pass url=... or set {URL_ENV}"
            )
        self._remote = RemoteScorer(
            url, self.name, timeout=timeout, batch_size=batch_size, jpeg_quality=jpeg_quality
        )

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        scores = self._remote(images, prompts, meta)
        self.version = self._remote.version
        bad = [v for v in scores.values if not 1.0 - 1e-3 <= v <= 5.0 + 1e-3]
        if bad:
            raise RemoteScorerError(f"deqa worker returned scores outside [1, 5]: {bad[:5]}")
        return Scores(scores.values, [v / REWARD_DIVISOR for v in scores.values], scores.details)
