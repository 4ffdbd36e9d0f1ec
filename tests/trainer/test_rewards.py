"""Rewards: each task's weighted sum, values vs rewards, remote scorers, the GRPO reward matrix, 8-bit images."""

from __future__ import annotations

import torch
from PIL import Image

from flowmodels.images import to_pil
from harness.benchmarks import PromptItem
from scorers.base import Requirements, Scores
from trainer.rewards import Rewards, score


class _Const:
    """A scorer that returns a constant and records what it was asked to score."""

    def __init__(self, name, value):
        self.name, self.value, self.version, self.requires = name, value, "1", Requirements()
        self.seen: list[str] = []

    def __call__(self, images, prompts, meta=None):
        self.seen += prompts
        return Scores([self.value] * len(images), [self.value] * len(images))


class _TwoScales:
    """A scorer whose official value and training reward differ (GenEval: 0/1 verdict vs partial credit)."""

    name, version, requires = "two", "1", Requirements()

    def __call__(self, images, prompts, meta=None):
        return Scores([1.0, 0.0][: len(images)], [0.5, -1.0][: len(images)])


def test_rewards_are_each_tasks_weighted_sum():
    a, b = _Const("a", 1.0), _Const("b", 10.0)
    items = [PromptItem("g", 0, "g", task="geneval"), PromptItem("o", 0, "o", task="ocr")]
    weights = {"geneval": {"a": 1.0}, "ocr": {"a": 0.5, "b": 2.0}}
    img = Image.new("RGB", (4, 4))
    got = score({"a": a, "b": b}, weights.__getitem__, [img, img], items)
    assert isinstance(got, Rewards)
    assert got.total.tolist() == [1.0, 0.5 + 20.0]
    assert b.seen == ["o"]  # a scorer only sees the samples whose task uses it
    assert torch.isnan(got.parts["b"][0]) and got.parts["b"][1] == 10.0


def test_a_scorer_named_in_use_values_is_read_on_its_value():
    items = [PromptItem("x", 0, "x", task="geneval"), PromptItem("y", 1, "y", task="geneval")]
    img = Image.new("RGB", (4, 4))
    weights = {"geneval": {"two": 2.0, "a": 1.0}}
    scorers = {"two": _TwoScales(), "a": _Const("a", 0.25)}
    on_reward = score(scorers, weights.__getitem__, [img, img], items)
    on_value = score(scorers, weights.__getitem__, [img, img], items, use_values={"two"})
    assert on_reward.total.tolist() == [2 * 0.5 + 0.25, 2 * -1.0 + 0.25]
    assert on_value.total.tolist() == [2 * 1.0 + 0.25, 2 * 0.0 + 0.25]  # only "two" switches
    assert on_value.parts["two"].tolist() == [1.0, 0.0]


def test_to_pil_rounds_to_8_bits():
    img = to_pil(torch.tensor([[[[0.0, 1.0]], [[0.5, 1.0]], [[1.0, 1.0]]]]))[0]
    assert img.size == (2, 1) and img.getpixel((0, 0)) == (0, 128, 255)


def test_rewards_go_through_remote_scorer_when_a_server_is_named(monkeypatch):
    from trainer import rewards

    made = []

    class FakeRemote:
        def __init__(self, url, name):
            made.append((url, name))

    monkeypatch.setattr(rewards, "RemoteScorer", FakeRemote)
    got = rewards.load_scorers({"geneval", "brightness"}, {"geneval": "http://gpu-box:8000"})
    assert made == [("http://gpu-box:8000", "geneval")]
    assert isinstance(got["geneval"], FakeRemote) and got["brightness"].name == "brightness"


def test_grpo_reward_matrix_lines_up_each_scorer_and_its_task_weight():
    from trainer import grpo
    from trainer.config import load
    from trainer.objectives import decoupled_advantages

    cfg = load(
        grpo.Config,
        None,
        [
            "datasets={geneval: g.jsonl, ocr: o.txt}",
            "rewards={}",
            "task_rewards={geneval: {a: 0.6, q: 0.4}, ocr: {b: 0.6, q: 0.4}}",
            "reward_norm=decoupled",
        ],
    )
    a, b, q = _Const("a", 1.0), _Const("b", 0.5), _Const("q", 0.8)
    items = [PromptItem("g", 0, "g", task="geneval")] * 2 + [
        PromptItem("o", 0, "o", task="ocr")
    ] * 2
    img = Image.new("RGB", (4, 4))
    got = score({"a": a, "b": b, "q": q}, cfg.weights_for, [img] * 4, items)
    names = sorted(cfg.scorer_names())
    assert names == ["a", "b", "q"]
    parts, weights = grpo.reward_matrix(cfg, got, items, names)
    assert weights.tolist() == [[0.6, 0.0, 0.4]] * 2 + [[0.0, 0.6, 0.4]] * 2
    assert parts[:, 2].tolist() == [0.8] * 4 and parts[0, 0] == 1.0 and parts[2, 1] == 0.5
    assert torch.isnan(parts[0, 1]) and torch.isnan(parts[2, 0])
    # constant scorers: every group tied on every reward, so no signal at all
    assert decoupled_advantages(parts, weights, 2).tolist() == [0.0] * 4


def test_grpo_and_opd_load_only_the_scorers_a_task_uses():
    """One home for the reward spec (trainer.rewards.TaskRewards): a `rewards` entry no task falls back on loads
    nothing, in GRPO and OPD alike (OPD used to load it anyway)."""
    from trainer import grpo, opd

    spec = {
        "datasets": {"geneval": "g.jsonl", "ocr": "o.txt"},
        "rewards": {"pickscore": 1.0},
        "task_rewards": {"geneval": {"geneval": 1.0}, "ocr": {"ocr": 1.0, "deqa": 0.5}},
    }
    g = grpo.Config(**spec, partitions={"geneval": 1, "ocr": 1})
    o = opd.Config(**spec, teachers={"geneval": "a", "ocr": "b"})
    assert g.scorer_names() == o.scorer_names() == {"geneval", "ocr", "deqa"}
    assert o.weights_for("ocr") == {"ocr": 1.0, "deqa": 0.5}
    fallback = opd.Config(
        **{**spec, "task_rewards": {"geneval": {"geneval": 1.0}}},
        teachers={"geneval": "a", "ocr": "b"},
    )
    assert fallback.scorer_names() == {"geneval", "pickscore"} and fallback.weights_for("ocr") == {
        "pickscore": 1.0
    }
