"""Soft-TIFA (GenEval 2): a VQA model's probability of the right one-word answer, one question per atom.

The rules are those of GenEval 2's ``evaluation.py`` (facebookresearch/GenEval2 at commit a6e82d2, Kamath et al.,
arXiv 2512.16853), reimplemented here:

- each question of the prompt's ``vqa_list`` is asked as ``"<question> Answer in one word."`` with the image
  (one user turn, image first), greedy, one new token; the softmax over the vocabulary at that first generated
  position gives the question's **soft score**: the sum, over the answer's variants, of the probability of the
  first token of each variant's encoding (a token appearing in two variants counts twice, as there);
- variants: for a question starting "How many" with answer ``w`` (a number word), ``w``, ``w.capitalize()``,
  `` w``, `` W``, the digit and `` digit`` (``'other'`` for a word outside one..ten); for every other question
  ``Yes``, ``yes``, `` yes``, `` Yes``;
- **Soft-TIFA AM** of an image = the arithmetic mean of its soft scores, **GM** = the geometric mean
  (``scipy.stats.gmean``: 0 when a score is 0); **TIFA** = the share of questions whose argmax token, decoded and
  lower-cased, is one of the variants; **VQAScore** = the Yes-variants' probability for
  ``Does this image show "<prompt>"? Answer the question with Yes or No.``.

Values are per image on 0-1 (the paper reports 100x the mean over prompts); ``mode`` picks which one is the
value (default ``gm``, the paper's headline number); details always carry every question's soft score, AM, GM and
the TIFA verdicts. Cost: one judge forward pass per question (3-10 atoms give 3-12 questions per image).

Two backends behind ``FirstTokenBackend``: Qwen3-VL in this process (``scorers.judge.LocalQwenVL``, batched over
questions and images), or an OpenAI-compatible server returning log-probabilities (vLLM:
``vllm serve Qwen/Qwen3-VL-8B-Instruct --max-logprobs 20``; chat completions with ``max_tokens=1``,
``logprobs``, ``top_logprobs`` and ``return_tokens_as_token_ids``). The server reports only the ``top_logprobs``
most likely tokens; a variant token outside them counts 0, so the server's soft score is a lower bound of the
in-process one, short by less than the number of variants times the last listed probability.

``harness eval`` and the trainer load scorers without options, so there the judge is ``$FLOW_OPD_SOFT_TIFA_MODEL``
(hub id or folder; default Qwen/Qwen3-VL-8B-Instruct) and ``$FLOW_OPD_SOFT_TIFA_URL`` selects the server backend;
``requires`` follows them, so the pre-flight check looks for the weights actually used (only the tokenizer files
behind a server).
"""

from __future__ import annotations

import math
import os
from typing import Any, Protocol

from PIL import Image

from flowbase.errors import InputError, MissingError
from scorers.base import MetaField, MetaNeed, Requirements, Scores, check_meta
from scorers.fetch import missing_weights_message
from scorers.images import check_lengths, to_rgb_batch
from scorers.judge import EndpointChat, LocalQwenVL, image_data_url
from scorers.remote import RemoteScorerError

SOFT_TIFA_MODEL = "Qwen/Qwen3-VL-8B-Instruct"
MODEL_ENV = (
    "FLOW_OPD_SOFT_TIFA_MODEL"  # the judge `harness eval` and training load (hub id or folder)
)
URL_ENV = (
    "FLOW_OPD_SOFT_TIFA_URL"  # an OpenAI-compatible server to ask instead of loading the judge
)
TOKENIZER_FILES = "tokenizer.json,tokenizer_config.json,vocab.json,merges.txt"
YES_VARIANTS = ("Yes", "yes", " yes", " Yes")
NUMBERS = {
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
QUESTION_SUFFIX = " Answer in one word."
VQASCORE_TEMPLATE = 'Does this image show "{}"? Answer the question with Yes or No.'
MODES = ("gm", "am", "tifa", "vqascore")


# ---------------------------------------------------------------------------------------------------- pure parts


def answer_variants(question: str, answer: str) -> list[str]:
    """The strings whose first tokens count as the right answer (GenEval 2's lists, in its order)."""
    if question.startswith("How many"):
        digit = NUMBERS.get(answer, "other")
        return [
            answer,
            answer.capitalize(),
            " " + answer,
            " " + answer.capitalize(),
            digit,
            " " + digit,
        ]
    return list(YES_VARIANTS)


def gmean(values: list[float]) -> float:
    """Geometric mean as ``scipy.stats.gmean`` computes it (0 when a value is 0)."""
    if not values:
        raise ValueError("gmean of no values")
    if any(v <= 0.0 for v in values):
        return 0.0
    return math.exp(math.fsum(math.log(v) for v in values) / len(values))


def amean(values: list[float]) -> float:
    """Arithmetic mean."""
    return math.fsum(values) / len(values)


# ---------------------------------------------------------------------------------------------------- backends


class FirstTokenBackend(Protocol):
    def first_token(
        self, items: list[tuple[Image.Image, str]], variants: list[list[str]]
    ) -> list[tuple[float, str]]:
        """Per (image, text) turn: the summed probability of its variants' first tokens at the first generated
        position, and the most likely token there, decoded."""
        ...


def _first_ids(tokenizer: Any, variants: list[str]) -> list[int]:
    """The first token id of each variant's encoding (``tokenizer.encode(v)[0]``, as GenEval 2)."""
    return [int(tokenizer.encode(v)[0]) for v in variants]


class LocalFirstToken:
    """Qwen3-VL in this process (``LocalQwenVL``), batched over every question of every image."""

    def __init__(self, model: str, *, device: str, dtype: str, batch_size: int) -> None:
        self.vlm = LocalQwenVL(
            model,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            family="qwen3",
            scorer="soft_tifa",
        )
        self.tokenizer = self.vlm.tokenizer

    def first_token(
        self, items: list[tuple[Image.Image, str]], variants: list[list[str]]
    ) -> list[tuple[float, str]]:
        logprobs = self.vlm.first_token_logprobs(items)
        out = []
        for row, wanted in zip(logprobs.tolist(), variants, strict=True):
            prob = math.fsum(math.exp(row[i]) for i in _first_ids(self.tokenizer, wanted))
            top = max(range(len(row)), key=row.__getitem__)
            out.append((prob, self.tokenizer.decode([top])))
        return out


def _token_id(token: Any, where: str) -> int:
    """``token_id:N`` (vLLM's ``return_tokens_as_token_ids``) -> N."""
    if isinstance(token, str) and token.startswith("token_id:"):
        try:
            return int(token.removeprefix("token_id:"))
        except ValueError:
            pass
    raise RemoteScorerError(
        f"{where}: token {token!r:.60} is not 'token_id:N'; the server must honour "
        "return_tokens_as_token_ids (vLLM does)"
    )


class ServerFirstToken:
    """An OpenAI-compatible server (vLLM) asked for one token with its ``top_logprobs``; the tokenizer (a local
    copy of the model's tokenizer files) maps the answer variants to token ids."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        tokenizer: str,
        top_logprobs: int,
        api_key: str,
        timeout: float,
        concurrency: int,
    ) -> None:
        from transformers import AutoTokenizer

        hint = f"start one with `vllm serve {model} --max-logprobs {top_logprobs}` and pass its /v1 URL"
        self.chat = EndpointChat(
            url, model, api_key=api_key, timeout=timeout, concurrency=concurrency, hint=hint
        )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        except OSError as e:
            raise MissingError(missing_weights_message("soft_tifa", tokenizer, e)) from None
        self.model, self.top_logprobs = model, int(top_logprobs)

    def body(self, image: Image.Image, text: str) -> dict[str, Any]:
        """The chat-completions request for one turn."""
        url = image_data_url(image).replace("data:image;", "data:image/png;", 1)
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
            "return_tokens_as_token_ids": True,
        }

    def first_token(
        self, items: list[tuple[Image.Image, str]], variants: list[list[str]]
    ) -> list[tuple[float, str]]:
        answers = self.chat.post_all([self.body(image, text) for image, text in items])
        out = []
        for answer, wanted in zip(answers, variants, strict=True):
            try:
                first = answer["choices"][0]["logprobs"]["content"][0]
                listed = {
                    _token_id(t["token"], self.chat.url): float(t["logprob"])
                    for t in first["top_logprobs"]
                }
                top = _token_id(first["token"], self.chat.url)
            except (KeyError, IndexError, TypeError):
                raise RemoteScorerError(
                    f"{self.chat.url} answer has no choices[0].logprobs.content[0].top_logprobs: "
                    f"{answer!r:.300}"
                ) from None
            ids = _first_ids(self.tokenizer, wanted)
            prob = math.fsum(math.exp(listed[i]) for i in ids if i in listed)
            out.append((prob, self.tokenizer.decode([top])))
        return out


# ---------------------------------------------------------------------------------------------------- scorer

VQA_META = MetaNeed(
    (MetaField("vqa_list", "list", [["Are there any cats in the image?", "Yes"]]),),
    "GenEval 2's prompts carry it (`harness fetch geneval2`; benchmark geneval2)",
)


def default_model() -> str:
    """The judge: ``$FLOW_OPD_SOFT_TIFA_MODEL``, else Qwen/Qwen3-VL-8B-Instruct."""
    return os.environ.get(MODEL_ENV) or SOFT_TIFA_MODEL


class _Requirements:
    """``SoftTIFA.requires``, read when asked: the judge's weights, or only its tokenizer files when a server
    (``$FLOW_OPD_SOFT_TIFA_URL``) runs the judge."""

    def __get__(self, obj: object, owner: type) -> Requirements:
        model = default_model()
        local = model.startswith(("/", ".", "~"))
        spec = model if local or not os.environ.get(URL_ENV) else f"{model}:{TOKENIZER_FILES}"
        return Requirements(weights=(spec,), gpu_gb=20.0, meta=VQA_META)


class SoftTIFA:
    """GenEval 2's Soft-TIFA (GM; AM, TIFA, VQAScore as modes), Qwen3-VL in process or a vLLM server (url=)."""

    name = "soft_tifa"
    version = "1"
    requires = _Requirements()
    runs = (
        "either"  # in process, or an OpenAI-compatible server when $FLOW_OPD_SOFT_TIFA_URL is set
    )

    def __init__(
        self,
        url: str | None = None,
        model: str | None = None,
        *,
        mode: str = "gm",
        tokenizer: str | None = None,
        top_logprobs: int = 20,
        api_key: str = "EMPTY",
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 16,
        timeout: float = 300.0,
        concurrency: int = 16,
    ) -> None:
        if mode not in MODES:
            raise InputError(f"soft_tifa mode {mode!r} is not one of {', '.join(MODES)}")
        model = model or default_model()
        url = url or os.environ.get(URL_ENV)
        self.mode, self.model = mode, model
        self.backend: FirstTokenBackend
        if url:
            self.backend = ServerFirstToken(
                url,
                model,
                tokenizer=tokenizer or model,
                top_logprobs=top_logprobs,
                api_key=api_key,
                timeout=timeout,
                concurrency=concurrency,
            )
        else:
            self.backend = LocalFirstToken(
                model, device=device, dtype=dtype, batch_size=int(batch_size)
            )

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        check_lengths(images, prompts, meta)
        rgb = to_rgb_batch(images)
        if self.mode == "vqascore":
            got = self.backend.first_token(
                [(im, VQASCORE_TEMPLATE.format(p)) for im, p in zip(rgb, prompts, strict=True)],
                [list(YES_VARIANTS)] * len(rgb),
            )
            values = [prob for prob, _ in got]
            details = [{"vqascore": prob, "answer": top, "model": self.model} for prob, top in got]
            return Scores(values, list(values), details)
        check_meta(self.name, self.requires, meta)
        assert meta is not None
        items: list[tuple[Image.Image, str]] = []
        variants: list[list[str]] = []
        for i, (im, m) in enumerate(zip(rgb, meta, strict=True)):
            pairs = m["vqa_list"]
            if not pairs or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) for x in p)
                for p in pairs
            ):
                raise InputError(
                    f"meta {i}: soft_tifa needs 'vqa_list' as [[question, answer], ...], got {pairs!r:.80}"
                )
            for question, answer in pairs:
                items.append((im, question + QUESTION_SUFFIX))
                variants.append(answer_variants(question, answer))
        got = self.backend.first_token(items, variants)
        values: list[float] = []
        details: list[dict[str, Any]] = []
        start = 0
        for m in meta:
            n = len(m["vqa_list"])
            mine, wanted = got[start : start + n], variants[start : start + n]
            start += n
            soft = [prob for prob, _ in mine]
            verdicts = [int(top.lower() in w) for (_, top), w in zip(mine, wanted, strict=True)]
            one = {
                "scores": soft,
                "am": amean(soft),
                "gm": gmean(soft),
                "tifa": amean([float(v) for v in verdicts]),
                "tifa_verdicts": verdicts,
                "answers": [top for _, top in mine],
                "skills": list(m.get("skills") or []),
                "model": self.model,
            }
            details.append(one)
            values.append(float(one[self.mode]))
        return Scores(values, list(values), details)
