"""DeQA-Score: the pure level weighting, padding and prompt tokenisation, and the out-of-process client."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from scorers.base import Requirements, Scores
from scorers.deqa import (
    DeQA,
    WorkerNotConfiguredError,
    background_colour,
    expand2square,
    level_weighted_score,
    tokenize_with_image,
)
from scorers.remote import RemoteScorerError, ScoreServer


def test_level_weighting_golden_values() -> None:
    # equal logits: uniform over 5..1 -> 3; q = (1, 2, 1, 1, 1)/6 -> (5 + 8 + 3 + 2 + 1)/6 = 19/6
    logits = np.array(
        [[0.0] * 5, [0.0, math.log(2), 0.0, 0.0, 0.0], [50.0, 0, 0, 0, 0], [0, 0, 0, 0, 50.0]]
    )
    assert level_weighted_score(logits) == pytest.approx([3.0, 19 / 6, 5.0, 1.0])


finite = st.floats(-30, 30, allow_nan=False)


@given(arrays(np.float64, (3, 5), elements=finite), finite)
def test_level_weighting_range_and_shift_invariance(logits: np.ndarray, shift: float) -> None:
    s = level_weighted_score(logits)
    assert ((s >= 1.0 - 1e-9) & (s <= 5.0 + 1e-9)).all()
    assert level_weighted_score(logits + shift) == pytest.approx(s, abs=1e-9)


@given(arrays(np.float64, (1, 5), elements=finite), st.floats(0.1, 5))
def test_raising_the_excellent_logit_raises_the_score(logits: np.ndarray, bump: float) -> None:
    more = logits.copy()
    more[0, 0] += bump
    assert level_weighted_score(more)[0] >= level_weighted_score(logits)[0] - 1e-12


def test_level_weighting_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match=r"shape \[B, 5\]"):
        level_weighted_score(np.zeros((2, 4)))


def test_background_is_clip_mean_truncated() -> None:
    assert background_colour() == (122, 116, 104)


def test_expand2square_pads_centred_with_the_background() -> None:
    bg = background_colour()
    wide = expand2square(Image.new("RGB", (4, 2), (255, 0, 0)), bg)
    a = np.asarray(wide)
    assert wide.size == (4, 4)
    assert (a[1:3] == (255, 0, 0)).all() and (a[0] == bg).all() and (a[3] == bg).all()
    tall = np.asarray(expand2square(Image.new("RGB", (2, 5), (0, 255, 0)), bg))
    assert tall.shape == (5, 5, 3)  # offset (5 - 2) // 2 = 1: column 0 and columns 3, 4 are padding
    assert (tall[:, 1:3] == (0, 255, 0)).all() and (tall[:, [0, 3, 4]] == bg).all()
    square = Image.new("RGB", (3, 3))
    assert expand2square(square, bg) is square


def test_prompt_tokenisation_inserts_the_image_placeholder_once() -> None:
    def with_bos(text: str) -> list[int]:
        return [1] + [ord(c) for c in text]

    assert tokenize_with_image("AB<|image|>C", with_bos, bos_id=1) == [1, 65, 66, -200, 67]
    assert tokenize_with_image("AB<|image|>C", lambda t: [ord(c) for c in t], bos_id=None) == [
        65,
        66,
        -200,
        67,
    ]
    assert tokenize_with_image("<|image|>", with_bos, bos_id=1) == [1, -200]


# ------------------------------------------------------------------------------------------ the client


def test_deqa_without_a_worker_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOW_OPD_DEQA_URL", raising=False)
    with pytest.raises(
        WorkerNotConfiguredError, match=r"python -m scorers.deqa_worker.*FLOW_OPD_DEQA_URL"
    ):
        DeQA()


class LevelWorker:
    """Stands in for the mPLUG-Owl2 model on the worker side: logits from mean brightness, then the real
    level weighting, so the transport and the reward scaling are exercised end to end."""

    name, version, requires = "deqa", "1-test", Requirements()

    def __call__(self, images: list[Image.Image], prompts: list[str], meta: Any = None) -> Scores:
        b = np.array([np.asarray(im, dtype=np.float64).mean() / 255 for im in images])
        logits = np.stack([10 * b, 5 * b, np.zeros_like(b), 5 * (1 - b), 10 * (1 - b)], axis=1)
        values = level_weighted_score(logits).tolist()
        return Scores(values, [0.0] * len(values), [{"brightness": x} for x in b.tolist()])


@pytest.fixture
def worker() -> Iterator[ScoreServer]:
    server = ScoreServer({"deqa": LevelWorker()})
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_deqa_client_scores_through_the_worker(
    worker: ScoreServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_OPD_DEQA_URL", worker.url)
    images = [Image.new("RGB", (8, 6), (255, 255, 255)), Image.new("L", (5, 5), 0)]
    scores = DeQA()(images, ["", ""])
    assert scores.values == pytest.approx(LevelWorker()(images, ["", ""]).values)
    assert scores.values[0] > 4.9 and scores.values[1] < 1.1
    assert scores.rewards == pytest.approx(
        [v / 5 for v in scores.values]
    )  # reward is recomputed here
    assert scores.details is not None and scores.details[0]["brightness"] == 1.0


def test_deqa_client_refuses_out_of_range_scores(worker: ScoreServer) -> None:
    class Broken(LevelWorker):
        def __call__(
            self, images: list[Image.Image], prompts: list[str], meta: Any = None
        ) -> Scores:
            return Scores([7.0] * len(images), [0.0] * len(images))

    worker.scorers["deqa"] = Broken()
    with pytest.raises(RemoteScorerError, match=r"outside \[1, 5\]: \[7.0\]"):
        DeQA(worker.url)([Image.new("RGB", (4, 4))], [""])


def test_worker_refuses_unknown_methods_and_missing_weights(tmp_path: Path) -> None:
    from scorers.deqa_worker import DeQAModel

    with pytest.raises(ValueError, match="unknown DeQA method 'magic'; choose one of hf, repo"):
        DeQAModel(method="magic")
    with pytest.raises(FileNotFoundError) as info:
        DeQAModel(str(tmp_path / "no-deqa-here"), device="cpu")
    assert "\n" not in str(info.value) and "run `harness fetch deqa`" in str(info.value)
