"""VLM judges: UnifiedReward (Flow-GRPO ``unifiedreward``) and the Qwen2.5-VL aesthetic judge (Flow-GRPO ``qwenvl``).

Both are "prompt template + regex -> score" over a chat model. The templates and regexes are Flow-GRPO's,
verbatim (``flow_grpo/rewards.py`` ``unifiedreward_score_sglang``, ``flow_grpo/qwenvl.py``), because a single
changed character changes the numbers. Two backends share them:

- ``EndpointChat``: an OpenAI-compatible ``POST {url}/chat/completions`` server (vLLM, sglang). One request per
  image, sent concurrently; each has a timeout and at most 3 retries on connection errors and 5xx
  (``scorers.remote.post_json``). Stdlib HTTP, no ``openai`` package needed.
- ``LocalQwenVL``: Qwen2.5-VL through transformers in this process (``Qwen2_5_VLForConditionalGeneration``). We
  assemble the inputs ourselves (chat template, ``<|image_pad|>`` expansion, image processor) instead of using
  ``AutoProcessor``, because transformers 5's Qwen2.5-VL processor insists on a video processor that needs
  torchvision; images are resized as qwen-vl-utils' ``fetch_image`` does.

``unifiedreward``: image resized to 512x512 (PIL default resampling), PNG as a ``data:image;base64,`` URL, then the
text; temperature 0; served model "UnifiedReward-7b-v1.5" on sglang
(``python -m sglang.launch_server --model-path CodeGoat24/UnifiedReward-7b-v1.5 --chat-template chatml-llava
--port 17140``). Score = first match of ``Final Score:\\s*([1-5](?:\\.\\d+)?)`` ("Final Score: 10" reads as 1).

``judge``: Qwen/Qwen2.5-VL-7B-Instruct, image at its own size, the aesthetic rubric; the caption is NOT used;
up to 2048 new tokens with the model's default generation settings. Score = ``<Score>(\\d+)</Score>``
("<Score>4.5</Score>" does not match).

Raw values are on the judges' 1-5 scale and rewards are value / 5. An output with no parsable score counts 0, as in
Flow-GRPO, but it is never silent: ``details`` holds the full text and ``parsed: false``, and a warning is logged.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from flowbase.errors import InputError, MissingError
from scorers.base import Requirements, Scores
from scorers.fetch import missing_weights_message
from scorers.images import check_lengths, to_rgb_batch
from scorers.remote import RemoteScorerError, post_json

log = logging.getLogger(__name__)

REWARD_DIVISOR = 5.0

UNIFIEDREWARD_MODEL = "UnifiedReward-7b-v1.5"  # the name sglang serves it under in Flow-GRPO
UNIFIEDREWARD_WEIGHTS = "CodeGoat24/UnifiedReward-7b-v1.5"
UNIFIEDREWARD_URL = "http://127.0.0.1:17140/v1"
UNIFIEDREWARD_TEMPLATE = (
    "<image>\nYou are given a text caption and a generated image based on that caption. Your task is to evaluate "
    "this image based on two key criteria:\n1. Alignment with the Caption: Assess how well this image aligns with "
    "the provided caption. Consider the accuracy of depicted objects, their relationships, and attributes as "
    "described in the caption.\n2. Overall Image Quality: Examine the visual quality of this image, including "
    "clarity, detail preservation, color accuracy, and overall aesthetic appeal.\nBased on the above criteria, "
    "assign a score from 1 to 5 after 'Final Score:'.\nYour task is provided as follows:\nText Caption: [{prompt}]"
)
UNIFIEDREWARD_PATTERN = re.compile(r"Final Score:\s*([1-5](?:\.\d+)?)")
UNIFIEDREWARD_SIZE = (512, 512)

JUDGE_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
JUDGE_TASK = """
Your role is to evaluate the aesthetic quality score of given images.
1. Bad: Extremely blurry, underexposed with significant noise, indiscernible
subjects, and chaotic composition.
2. Poor: Noticeable blur, poor lighting, washed-out colors, and awkward
composition with cut-off subjects.
3. Fair: In focus with adequate lighting, dull colors, decent composition but
lacks creativity.
4. Good: Sharp, good exposure, vibrant colors, thoughtful composition with
a clear focal point.
5. Excellent: Exceptional clarity, perfect exposure, rich colors, masterful
composition with emotional impact.

Please first provide a detailed analysis of the evaluation process, including the criteria for judging aesthetic quality, within the <Thought> tag. Then, give a final score from 1 to 5 within the <Score> tag.
<Thought>
[Analyze the evaluation process in detail here]
</Thought>
<Score>X</Score>
"""  # noqa: E501  (verbatim from flow_grpo/qwenvl.py)
JUDGE_PATTERN = re.compile(r"<Score>(\d+)</Score>")
JUDGE_MAX_NEW_TOKENS = 2048

# model family -> transformers class
QWEN_VL_CLASSES = {
    "qwen2.5": "Qwen2_5_VLForConditionalGeneration",
    "qwen3": "Qwen3VLForConditionalGeneration",
}

# qwen-vl-utils fetch_image constants (v0.0.10): 28 = patch 14 x spatial merge 2
IMAGE_FACTOR = 28
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28
MAX_RATIO = 200


# ---------------------------------------------------------------------------------------------------- pure parts


def unifiedreward_question(prompt: str) -> str:
    """Flow-GRPO's UnifiedReward pointwise question for one caption."""
    return UNIFIEDREWARD_TEMPLATE.format(prompt=prompt)


def parse_final_score(text: str) -> float | None:
    """UnifiedReward: the first ``Final Score: x`` with x a digit 1-5 and optional decimals, else None."""
    match = UNIFIEDREWARD_PATTERN.search(text)
    return float(match.group(1)) if match else None


def parse_score_tag(text: str) -> float | None:
    """Qwen judge: the integer in the first ``<Score>n</Score>``, else None."""
    match = JUDGE_PATTERN.search(text)
    return float(match.group(1)) if match else None


def image_data_url(image: Image.Image) -> str:
    """PNG bytes as Flow-GRPO's ``data:image;base64,...`` URL."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image;base64," + base64.b64encode(buffer.getvalue()).decode("utf-8")


def chat_body(model: str, image: Image.Image, text: str, params: dict[str, Any]) -> dict[str, Any]:
    """OpenAI chat-completions body: one user turn, the image part first, then the text part."""
    content = [
        {"type": "image_url", "image_url": {"url": image_data_url(image)}},
        {"type": "text", "text": text},
    ]
    return {"model": model, "messages": [{"role": "user", "content": content}], **params}


def smart_resize(
    height: int,
    width: int,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """qwen-vl-utils' target size: sides multiples of ``factor``, area within [min_pixels, max_pixels]."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise InputError(
            f"aspect ratio of {width}x{height} is over {MAX_RATIO}; Qwen2.5-VL cannot take it"
        )
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def fetch_image(image: Image.Image) -> Image.Image:
    """Resize as qwen-vl-utils' ``fetch_image`` does (PIL default resampling to the smart_resize size)."""
    h, w = smart_resize(image.height, image.width)
    return image.resize((w, h))


# ---------------------------------------------------------------------------------------------------- backends


class ChatBackend(Protocol):
    def complete(self, items: list[tuple[Image.Image, str]], params: dict[str, Any]) -> list[str]:
        """One assistant reply per (image, text) user turn."""
        ...


class EndpointChat:
    """An OpenAI-compatible chat server (vLLM, sglang), one concurrent request per image."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str = "EMPTY",
        timeout: float = 300.0,
        concurrency: int = 16,
        backoff: float = 0.5,
        hint: str = "",
    ) -> None:
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.concurrency, self.backoff, self.hint = max(1, concurrency), backoff, hint

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chat-completions request; the server's JSON answer."""
        headers = {"Authorization": f"Bearer {self.api_key}"}
        try:
            answer = post_json(
                self.url, body, timeout=self.timeout, backoff=self.backoff, headers=headers
            )
        except RemoteScorerError as e:
            if self.hint and "cannot reach" in str(e):
                raise RemoteScorerError(f"{e}; {self.hint}") from None
            raise
        if not isinstance(answer, dict):
            raise RemoteScorerError(f"{self.url} answer is not a JSON object: {answer!r:.300}")
        return answer

    def post_all(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every request, ``concurrency`` at a time; the answers in order."""
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(bodies)))) as pool:
            return list(pool.map(self.post, bodies))

    def _one(self, body: dict[str, Any]) -> str:
        answer = self.post(body)
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise RemoteScorerError(
                f"{self.url} answer has no choices[0].message.content: {answer!r:.300}"
            ) from None
        return content or ""

    def complete(self, items: list[tuple[Image.Image, str]], params: dict[str, Any]) -> list[str]:
        """Send every (image, text) turn, concurrently, and return the replies in order."""
        bodies = [chat_body(self.model, image, text, params) for image, text in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(bodies)))) as pool:
            return list(pool.map(self._one, bodies))


def _chat_template(model_dir: str, tokenizer: Any) -> str:
    """The checkpoint's chat template: the tokenizer's, else chat_template.json / .jinja beside it."""
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.chat_template)
    folder = Path(model_dir)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if (folder / "chat_template.json").is_file():
        return str(json.loads((folder / "chat_template.json").read_text())["chat_template"])
    raise MissingError(f"no chat template found for {model_dir}")


class LocalQwenVL:
    """A Qwen-VL model in this process through transformers (hub id or local folder): Qwen2.5-VL (images resized
    as qwen-vl-utils does) or, with ``family="qwen3"``, Qwen3-VL (images resized by its own image processor, as
    its ``AutoProcessor`` does)."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        family: str = "qwen2.5",
        scorer: str = "judge",
    ) -> None:
        import torch
        import transformers
        from transformers import AutoImageProcessor, AutoTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bf16" if device.startswith("cuda") else "fp32"
        torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
            self.image_processor = AutoImageProcessor.from_pretrained(model)
            self.model = getattr(transformers, QWEN_VL_CLASSES[family]).from_pretrained(
                model, dtype=torch_dtype
            )
        except OSError as e:
            raise MissingError(missing_weights_message(scorer, model, e)) from None
        self.model.to(device).eval().requires_grad_(False)
        self.template = _chat_template(model, self.tokenizer)
        self.torch, self.device, self.batch_size = torch, device, batch_size
        self.image_token = "<|image_pad|>"
        self.family = family

    def _inputs(self, items: list[tuple[Image.Image, str]]) -> dict[str, Any]:
        """Tokenised chat turns with each image placeholder expanded to its number of merged patches."""
        images = [fetch_image(image) if self.family == "qwen2.5" else image for image, _ in items]
        vision = self.image_processor(images=images, return_tensors="pt")
        merge = int(self.image_processor.merge_size) ** 2
        texts = []
        for (_, text), grid in zip(items, vision["image_grid_thw"], strict=True):
            turn = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}
            ]
            chat = self.tokenizer.apply_chat_template(
                turn, chat_template=self.template, tokenize=False, add_generation_prompt=True
            )
            if chat.count(self.image_token) != 1:
                raise ValueError(
                    f"chat template produced {chat.count(self.image_token)} image slots, expected 1"
                )
            texts.append(
                chat.replace(self.image_token, self.image_token * (int(grid.prod()) // merge))
            )
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True)
        if self.family == "qwen3":  # M-RoPE needs to know which tokens are image tokens
            image_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
            encoded["mm_token_type_ids"] = (encoded["input_ids"] == image_id).long()
        return {
            **encoded,
            "pixel_values": vision["pixel_values"],
            "image_grid_thw": vision["image_grid_thw"],
        }

    def complete(self, items: list[tuple[Image.Image, str]], params: dict[str, Any]) -> list[str]:
        """Generate a reply per (image, text) turn, in batches, with the model's generation config."""
        replies: list[str] = []
        for start in range(0, len(items), self.batch_size):
            inputs = self._inputs(items[start : start + self.batch_size])
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            with self.torch.inference_mode():
                out = self.model.generate(**inputs, max_new_tokens=params["max_new_tokens"])
            new = out[:, inputs["input_ids"].shape[1] :]
            replies += self.tokenizer.batch_decode(
                new, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        return replies

    def first_token_logprobs(self, items: list[tuple[Image.Image, str]]) -> Any:
        """Log-softmax over the vocabulary at the first generated position of each (image, text) turn: what
        greedy generation of one new token scores (a float32 tensor, turns x vocabulary), in batches."""
        out = []
        for start in range(0, len(items), self.batch_size):
            inputs = self._inputs(items[start : start + self.batch_size])
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            with self.torch.inference_mode():
                logits = self.model(**inputs).logits[:, -1].float()
            out.append(self.torch.log_softmax(logits, dim=-1).cpu())
        return self.torch.cat(out)


# ---------------------------------------------------------------------------------------------------- scorers


def _scores(texts: list[str], parse: Any, label: str, extra: dict[str, Any]) -> Scores:
    parsed = [parse(t) for t in texts]
    missing = sum(p is None for p in parsed)
    if missing:
        log.warning(
            "%d of %d %s outputs had no parsable score; they count as 0 (Flow-GRPO)",
            missing,
            len(texts),
            label,
        )
    values = [0.0 if p is None else p for p in parsed]
    details = [
        {"text": t, "parsed": p is not None, **extra} for t, p in zip(texts, parsed, strict=True)
    ]
    return Scores(values, [v / REWARD_DIVISOR for v in values], details)


class UnifiedReward:
    """UnifiedReward-7b-v1.5 pointwise 1-5 (alignment + quality) via an OpenAI-compatible server; reward = /5."""

    name = "unifiedreward"
    version = "1"
    requires = Requirements(weights=(UNIFIEDREWARD_WEIGHTS,), gpu_gb=16.0)
    runs = "endpoint"  # sglang/vLLM serving the weights; FLOW_OPD_UNIFIEDREWARD_URL or url=

    def __init__(
        self,
        url: str | None = None,
        model: str = UNIFIEDREWARD_MODEL,
        api_key: str = "flowgrpo",
        timeout: float = 300.0,
        concurrency: int = 16,
    ) -> None:
        url = url or os.environ.get("FLOW_OPD_UNIFIEDREWARD_URL") or UNIFIEDREWARD_URL
        hint = (
            "start one with `python -m sglang.launch_server --model-path "
            f"{UNIFIEDREWARD_WEIGHTS} --chat-template chatml-llava --port 17140` or pass url="
        )
        self.backend = EndpointChat(
            url, model, api_key=api_key, timeout=timeout, concurrency=concurrency, hint=hint
        )
        self.model = model

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        check_lengths(images, prompts, meta)
        rgb = [im.resize(UNIFIEDREWARD_SIZE) for im in to_rgb_batch(images)]
        texts = self.backend.complete(
            [(im, unifiedreward_question(p)) for im, p in zip(rgb, prompts, strict=True)],
            {"temperature": 0},
        )
        return _scores(texts, parse_final_score, self.name, {"model": self.model})


class Judge:
    """Qwen2.5-VL-7B aesthetic judge 1-5 (Flow-GRPO qwenvl; caption ignored), endpoint or local; reward = /5."""

    name = "judge"
    version = "1"
    requires = Requirements(weights=(JUDGE_MODEL,), gpu_gb=18.0)

    def __init__(
        self,
        url: str | None = None,
        model: str = JUDGE_MODEL,
        *,
        api_key: str = "EMPTY",
        max_new_tokens: int = JUDGE_MAX_NEW_TOKENS,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        timeout: float = 600.0,
        concurrency: int = 16,
    ) -> None:
        self.model, self.max_new_tokens = model, int(max_new_tokens)
        self.backend: ChatBackend
        if url:
            hint = f"start one with `vllm serve {model}` and pass its /v1 URL"
            self.backend = EndpointChat(
                url, model, api_key=api_key, timeout=timeout, concurrency=concurrency, hint=hint
            )
            self.params: dict[str, Any] = {"max_tokens": self.max_new_tokens}
        else:
            self.backend = LocalQwenVL(
                model, device=device, dtype=dtype, batch_size=int(batch_size)
            )
            self.params = {"max_new_tokens": self.max_new_tokens}

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        check_lengths(images, prompts, meta)
        texts = self.backend.complete(
            [(im, JUDGE_TASK) for im in to_rgb_batch(images)], self.params
        )
        return _scores(texts, parse_score_tag, self.name, {"model": self.model})
