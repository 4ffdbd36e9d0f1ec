"""VLM judges: score parsing tables, golden OpenAI request payloads against a real loopback server, and the local
Qwen2.5-VL path on a tiny checkpoint saved to disk."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from scorers.judge import (
    JUDGE_TASK,
    UNIFIEDREWARD_TEMPLATE,
    Judge,
    UnifiedReward,
    parse_final_score,
    parse_score_tag,
    smart_resize,
    unifiedreward_question,
)
from scorers.remote import RemoteScorerError


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("The image is sharp. Final Score: 4.5", 4.5),
        ("Final Score: 3", 3.0),
        ("Final Score:2", 2.0),
        ("Final Score:\n 5", 5.0),  # \s* crosses newlines
        ("Final Score: 10", 1.0),  # Flow-GRPO quirk: the first digit 1 matches
        ("Final Score: 4.", 4.0),
        ("Final Score: 4.25 and later Final Score: 1", 4.25),  # first match wins
        ("Final Score: 0", None),
        ("Final Score: 6", None),
        ("final score: 4", None),  # case sensitive
        ("Score: 4", None),
        ("", None),
    ],
)
def test_unifiedreward_parsing(text: str, score: float | None) -> None:
    assert parse_final_score(text) == score


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("<Thought>fine</Thought><Score>4</Score>", 4.0),
        ("<Score>1</Score> then <Score>5</Score>", 1.0),
        ("<Score>7</Score>", 7.0),  # no range check in Flow-GRPO: reward 1.4
        ("<Score>4.5</Score>", None),  # integers only
        ("<Score> 4 </Score>", None),
        ("<score>4</score>", None),
        ("Score: 4", None),
    ],
)
def test_judge_parsing(text: str, score: float | None) -> None:
    assert parse_score_tag(text) == score


def test_templates_are_flow_grpo_verbatim_in_shape() -> None:
    q = unifiedreward_question("a red car")
    assert q.startswith("<image>\nYou are given a text caption and a generated image")
    assert q.endswith("\nYour task is provided as follows:\nText Caption: [a red car]")
    assert "assign a score from 1 to 5 after 'Final Score:'.\n" in q
    assert UNIFIEDREWARD_TEMPLATE.count("\n") == 6 and UNIFIEDREWARD_TEMPLATE.count("{prompt}") == 1
    assert JUDGE_TASK.startswith(
        "\nYour role is to evaluate the aesthetic quality score of given images.\n1. Bad:"
    )
    assert JUDGE_TASK.endswith(
        "<Thought>\n[Analyze the evaluation process in detail here]\n</Thought>\n<Score>X</Score>\n"
    )
    assert JUDGE_TASK.count("\n") == 18
    assert re.findall(r"^(\d)\. (\w+):", JUDGE_TASK, re.M) == [
        ("1", "Bad"), ("2", "Poor"), ("3", "Fair"), ("4", "Good"), ("5", "Excellent")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        ((512, 512), (504, 504)),
        ((1024, 768), (1036, 756)),
        ((10, 10), (56, 56)),
        ((60, 100), (56, 112)),
    ],
)
def test_smart_resize_table(hw: tuple[int, int], expected: tuple[int, int]) -> None:
    # 512/28 = 18.3 -> 18*28; 1024/28 = 36.6 -> 37*28, 768/28 = 27.4 -> 27*28;
    # 10x10 rounds to 28x28 = 784 < 3136 pixels, so it is scaled up by sqrt(3136/100) = 5.6 -> ceil(2)*28
    assert smart_resize(*hw) == expected


@given(st.integers(8, 6000), st.integers(8, 6000))
def test_smart_resize_properties(h: int, w: int) -> None:
    if max(h, w) / min(h, w) > 200:
        with pytest.raises(ValueError, match="aspect ratio"):
            smart_resize(h, w)
        return
    rh, rw = smart_resize(h, w, max_pixels=28 * 28 * 256)
    assert rh % 28 == 0 and rw % 28 == 0
    assert rh * rw <= 28 * 28 * 256


# ------------------------------------------------------------------------------------------ endpoint payloads


class FakeOpenAI:
    """A real HTTP server on loopback speaking the chat-completions shape; replies come from ``reply(body)``."""

    def __init__(self, reply: Any, status: int = 200) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                if status == 200:
                    answer = {
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": reply(body)}}
                        ]
                    }
                else:
                    answer = {"error": {"message": reply(body), "type": "NotFoundError"}}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def openai_server() -> Iterator[Any]:
    made: list[FakeOpenAI] = []

    def make(reply: Any, status: int = 200) -> FakeOpenAI:
        made.append(FakeOpenAI(reply, status))
        return made[-1]

    yield make
    for server in made:
        server.close()


def decode_data_url(url: str) -> Image.Image:
    prefix = "data:image;base64,"
    assert url.startswith(prefix)
    raw = base64.b64decode(url[len(prefix) :])
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(raw))


def caption_of(body: dict[str, Any]) -> str:
    return body["messages"][0]["content"][1]["text"].rsplit("Text Caption: [", 1)[1][:-1]


def test_unifiedreward_golden_payload_and_scores(
    openai_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    replies = {
        "a red car": "Details... Final Score: 4.5",
        "two cats": "I cannot decide.",
        "a dog": "Final Score: 2",
    }
    server = openai_server(lambda body: replies[caption_of(body)])
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)) for _ in range(3)]
    scores = UnifiedReward(url=server.url)(images, ["a red car", "two cats", "a dog"])
    assert scores.values == [4.5, 0.0, 2.0]  # order kept although requests run concurrently
    assert scores.rewards == pytest.approx([0.9, 0.0, 0.4])
    assert scores.details is not None and [d["parsed"] for d in scores.details] == [
        True,
        False,
        True,
    ]
    assert scores.details[1]["text"] == "I cannot decide."
    assert "1 of 3 unifiedreward outputs had no parsable score" in caplog.text
    assert len(server.requests) == 3
    for request in server.requests:
        assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer flowgrpo"
        body = request["body"]
        assert set(body) == {"model", "messages", "temperature"}
        assert body["model"] == "UnifiedReward-7b-v1.5" and body["temperature"] == 0
        (message,) = body["messages"]
        assert message["role"] == "user" and [c["type"] for c in message["content"]] == [
            "image_url",
            "text",
        ]
        caption = caption_of(body)
        assert message["content"][1]["text"] == UNIFIEDREWARD_TEMPLATE.format(prompt=caption)
        sent = decode_data_url(message["content"][0]["image_url"]["url"])
        original = images[["a red car", "two cats", "a dog"].index(caption)]
        assert sent.size == (512, 512)
        assert np.array_equal(np.asarray(sent), np.asarray(original.resize((512, 512))))


def test_judge_endpoint_payload_ignores_the_caption(openai_server: Any) -> None:
    server = openai_server(lambda body: "<Thought>ok</Thought><Score>4</Score>")
    images = [Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("L", (20, 20), 9)]
    scores = Judge(url=server.url + "/", model="qwen-judge")(
        images, ["a red car", "something else"]
    )
    assert scores.values == [4.0, 4.0] and scores.rewards == pytest.approx([0.8, 0.8])
    bodies = [r["body"] for r in server.requests]
    for body in bodies:
        assert set(body) == {"model", "messages", "max_tokens"}
        assert body["model"] == "qwen-judge" and body["max_tokens"] == 2048
        assert body["messages"][0]["content"][1] == {"type": "text", "text": JUDGE_TASK}
    sizes = sorted(
        decode_data_url(b["messages"][0]["content"][0]["image_url"]["url"]).size for b in bodies
    )
    assert sizes == [(20, 20), (40, 30)]  # the judge sends images at their own size


def test_endpoint_errors_are_surfaced(openai_server: Any) -> None:
    server = openai_server(lambda body: "The model `nope` does not exist.", status=404)
    with pytest.raises(RemoteScorerError, match="HTTP 404: The model `nope` does not exist."):
        UnifiedReward(url=server.url, model="nope")([Image.new("RGB", (8, 8))], ["x"])
    unreachable = UnifiedReward(url="http://127.0.0.1:9/v1")
    unreachable.backend.backoff = 0.01
    with pytest.raises(
        RemoteScorerError, match="cannot reach .*sglang.launch_server --model-path CodeGoat24"
    ):
        unreachable([Image.new("RGB", (8, 8))], ["x"])
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        UnifiedReward(url=server.url)([Image.new("RGB", (8, 8))] * 2, ["x"])


# ------------------------------------------------------------------------------------------ local transformers


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scorers.tiny_qwen_vl import save_tiny_qwen_vl

    return save_tiny_qwen_vl(tmp_path_factory.mktemp("tiny-qwen-vl"))


def test_local_judge_on_a_tiny_checkpoint(tiny_qwen: Path) -> None:
    import torch

    judge = Judge(model=str(tiny_qwen), max_new_tokens=5, device="cpu")
    backend = judge.backend
    images = [Image.new("RGB", (112, 112), (200, 0, 0)), Image.new("RGB", (100, 60), (0, 0, 200))]
    inputs = backend._inputs([(im, JUDGE_TASK) for im in images])
    # 112x112 -> 8x8 patches of 14 -> 16 merged tokens; 100x60 -> resized 112x56 -> 8x4 patches -> 8 tokens
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8], [1, 4, 8]]
    pad = backend.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (inputs["input_ids"] == pad).sum(1).tolist() == [16, 8]
    assert (
        inputs["attention_mask"][1, 0] == 0 and inputs["attention_mask"][1, -1] == 1
    )  # left padding
    red, blue = Image.new("RGB", (112, 112), (200, 0, 0)), Image.new("RGB", (112, 112), (0, 0, 200))
    with torch.no_grad():  # same tokens, different pixels: only the row whose image changed moves
        a = backend.model(**backend._inputs([(red, JUDGE_TASK), (red, JUDGE_TASK)])).logits[:, -1]
        b = backend.model(**backend._inputs([(red, JUDGE_TASK), (blue, JUDGE_TASK)])).logits[:, -1]
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[0], a[1], atol=1e-5)
    assert not torch.allclose(a[1], b[1], atol=1e-3)
    scores = judge(images, ["ignored", "ignored"])
    assert len(scores.values) == 2 and scores.details is not None
    for value, detail in zip(
        scores.values, scores.details, strict=True
    ):  # random weights: noise, honestly parsed
        assert isinstance(detail["text"], str)
        assert value == (parse_score_tag(detail["text"]) or 0.0)


def test_local_judge_missing_weights_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        Judge(model=str(tmp_path / "no-such-model"), device="cpu")
    message = str(info.value)
    assert "\n" not in message and "harness fetch judge" in message
