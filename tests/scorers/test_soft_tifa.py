"""soft_tifa (GenEval 2's Soft-TIFA) on a tiny random Qwen3-VL built through the real loader: the soft scores,
AM, GM, TIFA and VQAScore against an independent computation (the official script's way: one question at a
time, ``generate`` of one token with its scores), and the server backend against a fake OpenAI-compatible server on
loopback that answers with the same model's log-probabilities."""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import gmean as scipy_gmean

from flowbase.errors import InputError
from scorers.soft_tifa import SoftTIFA, answer_variants, gmean
from tests.support.live_server import LiveServer

FIXTURE = (
    Path(__file__).resolve().parents[1] / "support" / "data" / "geneval2" / "geneval2_data.jsonl"
)


def rows(n: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()[:n]]


def images(n: int) -> list[Image.Image]:
    return [
        Image.fromarray(
            np.random.RandomState(i).randint(0, 255, (48 + 16 * i, 80, 3), dtype=np.uint8)
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen3-VL with its output head reduced to two opposite rows, "Yes" and "two": every turn's argmax
    is one of them (so TIFA's verdicts are not all 0) and their probabilities are far from uniform."""
    from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration

    from scorers.tiny_qwen_vl import save_tiny_qwen3_vl

    folder = save_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl"))
    tok = AutoTokenizer.from_pretrained(folder)
    model = Qwen3VLForConditionalGeneration.from_pretrained(folder)
    head = model.lm_head.weight
    direction = torch.randn(head.shape[1], generator=torch.Generator().manual_seed(1)) * 20
    with torch.no_grad():
        head.zero_()
        head[tok.encode("Yes")[0]] = direction
        head[tok.encode("two")[0]] = -direction
    model.save_pretrained(folder)
    return folder


class Official:
    """The official script's computation, written out here without the project's code: one turn at a time, the
    chat text built by hand, ``generate(max_new_tokens=1, output_scores=True)``, softmax, list sums."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen3VLForConditionalGeneration

        self.tok = AutoTokenizer.from_pretrained(folder)
        self.proc = AutoImageProcessor.from_pretrained(folder)
        self.model = Qwen3VLForConditionalGeneration.from_pretrained(folder).eval()

    def ask(self, image: Image.Image, text: str, answers: list[str]) -> tuple[str, float]:
        vision = self.proc(images=[image], return_tensors="pt")
        n = int(vision["image_grid_thw"][0].prod()) // 4
        chat = (
            "<|im_start|>user\n<|vision_start|>"
            + "<|image_pad|>" * n
            + "<|vision_end|>"
            + text
            + "<|im_end|>\n<|im_start|>assistant\n"
        )
        ids = self.tok(chat, return_tensors="pt")
        pad = self.tok.convert_tokens_to_ids("<|image_pad|>")
        with torch.no_grad():
            out = self.model.generate(
                **ids,
                mm_token_type_ids=(ids["input_ids"] == pad).long(),
                pixel_values=vision["pixel_values"],
                image_grid_thw=vision["image_grid_thw"],
                max_new_tokens=1,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
            )
        probs = torch.softmax(out.scores[0], dim=-1)
        prob = 0.0
        for answer in answers:
            prob += probs[0, self.tok.encode(answer)[0]].item()
        return self.tok.batch_decode([torch.argmax(probs)])[0], prob


NUMBER = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7"}


def official_answers(question: str, answer: str) -> list[str]:
    if question.startswith("How many"):
        d = NUMBER.get(answer, "other")
        return [answer, answer.capitalize(), " " + answer, " " + answer.capitalize(), d, " " + d]
    return ["Yes", "yes", " yes", " Yes"]


def test_answer_variants_are_the_official_lists() -> None:
    assert answer_variants("How many pigs are in the image?", "two") == [
        "two",
        "Two",
        " two",
        " Two",
        "2",
        " 2",
    ]
    assert answer_variants("How many cats are in the image?", "ten")[-2:] == ["10", " 10"]
    assert answer_variants("How many cats are in the image?", "dozens")[-2:] == ["other", " other"]
    assert answer_variants("Is the backpack green?", "Yes") == ["Yes", "yes", " yes", " Yes"]


def test_gmean_is_scipys() -> None:
    for values in ([0.5], [0.2, 0.9, 0.4], [1e-9, 0.99], [0.3, 0.0, 0.8]):
        assert gmean(values) == pytest.approx(float(scipy_gmean(values)), rel=1e-12, abs=0)


def test_soft_tifa_matches_the_official_computation(tiny_qwen3: Path) -> None:
    data, ims = rows(3), images(3)
    prompts = [r["prompt"] for r in data]
    meta = [{k: v for k, v in r.items() if k != "prompt"} for r in data]
    scorer = SoftTIFA(model=str(tiny_qwen3), device="cpu", batch_size=4)
    got = scorer(ims, prompts, meta)
    official = Official(tiny_qwen3)
    verdicts_seen = set()
    for image, row, value, detail in zip(ims, data, got.values, got.details or [], strict=True):
        asked = [
            official.ask(image, f"{q} Answer in one word.", official_answers(q, a))
            for q, a in row["vqa_list"]
        ]
        soft = [p for _, p in asked]
        tifa = [
            int(pred.lower() in official_answers(q, a))
            for (pred, _), (q, a) in zip(asked, row["vqa_list"], strict=True)
        ]
        verdicts_seen.update(tifa)
        assert detail["scores"] == pytest.approx(soft, rel=1e-4, abs=1e-6)
        assert detail["am"] == pytest.approx(sum(soft) / len(soft), rel=1e-4)
        assert value == detail["gm"] == pytest.approx(float(scipy_gmean(soft)), rel=1e-4)
        assert detail["tifa_verdicts"] == tifa
        assert detail["tifa"] == pytest.approx(sum(tifa) / len(tifa))
        assert detail["skills"] == row["skills"]
    assert verdicts_seen == {0, 1}  # the head makes some answers right and some wrong
    vqa = SoftTIFA(model=str(tiny_qwen3), device="cpu", mode="vqascore")(ims, prompts)
    for image, prompt, value in zip(ims, prompts, vqa.values, strict=True):
        text = f'Does this image show "{prompt}"? Answer the question with Yes or No.'
        _, want = official.ask(image, text, ["Yes", "yes", " yes", " Yes"])
        assert value == pytest.approx(want, rel=1e-4, abs=1e-6)
    am = SoftTIFA(model=str(tiny_qwen3), device="cpu", mode="am")(ims, prompts, meta)
    assert am.values == pytest.approx([d["am"] for d in got.details or []], rel=1e-5)


def test_a_prompt_without_questions_is_refused_in_one_line(tiny_qwen3: Path) -> None:
    scorer = SoftTIFA(model=str(tiny_qwen3), device="cpu")
    with pytest.raises(InputError, match="vqa_list"):
        scorer(images(1), ["a cat"], [{"atom_count": 3}])
    with pytest.raises(InputError, match="vqa_list"):
        scorer(images(1), ["a cat"], [{"vqa_list": [["only a question"]]}])
    with pytest.raises(InputError, match="mode"):
        SoftTIFA(model=str(tiny_qwen3), device="cpu", mode="median")


def fake_vllm(folder: Path) -> Any:
    """An OpenAI-compatible chat-completions server answering as vLLM does with ``logprobs``,
    ``top_logprobs`` and ``return_tokens_as_token_ids``, from the tiny model run here."""
    from fastapi import FastAPI

    from scorers.judge import LocalQwenVL

    vlm = LocalQwenVL(str(folder), device="cpu", family="qwen3", scorer="soft_tifa")
    app = FastAPI()
    app.state.requests = []

    @app.post("/v1/chat/completions")
    def complete(body: dict[str, Any]) -> dict[str, Any]:
        app.state.requests.append({k: v for k, v in body.items() if k != "messages"})
        image_part, text_part = body["messages"][0]["content"]
        head, data = image_part["image_url"]["url"].split(",", 1)
        assert head == "data:image/png;base64"
        image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
        row = vlm.first_token_logprobs([(image, text_part["text"])])[0].tolist()
        order = sorted(range(len(row)), key=lambda i: -row[i])[: body["top_logprobs"]]
        top = [{"token": f"token_id:{i}", "logprob": row[i]} for i in order]
        first = {"token": top[0]["token"], "logprob": top[0]["logprob"], "top_logprobs": top}
        return {
            "choices": [
                {"message": {"role": "assistant", "content": ""}, "logprobs": {"content": [first]}}
            ]
        }

    return app


def test_server_backend_agrees_with_the_in_process_one(tiny_qwen3: Path) -> None:
    data, ims = rows(4), images(4)
    prompts = [r["prompt"] for r in data]
    meta = [{k: v for k, v in r.items() if k != "prompt"} for r in data]
    local = SoftTIFA(model=str(tiny_qwen3), device="cpu")(ims, prompts, meta)
    app = fake_vllm(tiny_qwen3)
    with LiveServer(app) as url:
        remote = SoftTIFA(url=url + "/v1", model=str(tiny_qwen3), top_logprobs=400)
        got = remote(ims, prompts, meta)
    asked = sum(len(m["vqa_list"]) for m in meta)
    assert len(app.state.requests) == asked
    assert all(
        r["max_tokens"] == 1 and r["logprobs"] is True and r["return_tokens_as_token_ids"] is True
        for r in app.state.requests
    )
    assert got.values == pytest.approx(local.values, abs=1e-6, rel=0)
    for a, b in zip(got.details or [], local.details or [], strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-6, rel=0)
        assert a["tifa_verdicts"] == b["tifa_verdicts"]
        assert math.isclose(a["am"], b["am"], abs_tol=1e-6)


def test_server_backend_counts_unlisted_tokens_as_zero(tiny_qwen3: Path) -> None:
    data, ims = rows(1), images(1)
    meta = [{k: v for k, v in data[0].items() if k != "prompt"}]
    local = SoftTIFA(model=str(tiny_qwen3), device="cpu")(ims, [data[0]["prompt"]], meta)
    with LiveServer(fake_vllm(tiny_qwen3)) as url:
        top1 = SoftTIFA(url=url + "/v1", model=str(tiny_qwen3), top_logprobs=1)
        got = top1(ims, [data[0]["prompt"]], meta)
    for a, b in zip(
        (got.details or [])[0]["scores"], (local.details or [])[0]["scores"], strict=True
    ):
        assert a <= b + 1e-9
