"""Loop glue: EMA, checkpoint cadence, run-folder resolution, reward mixing by task."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from scorers.base import Requirements, Scores
from trainer.config import ConfigError
from trainer.data import PromptItem
from trainer.loop import EMA, Rewards, check_adapter_base, resolve_lora, same_base, score, to_pil


def test_ema_step_cadence_by_hand():
    p = torch.nn.Parameter(torch.zeros(3))
    ema = EMA([p], decay=0.9, every=2, cadence="step")
    with torch.no_grad():
        p.fill_(1.0)
    ema.after_step(1)  # not a multiple of `every`: no update
    ema.after_batch(1)  # the batch cadence is off
    assert torch.equal(ema.shadow[0], torch.zeros(3))
    ema.after_step(2)  # d = min((1 + 2) / (10 + 2), 0.9) = 0.25
    assert torch.allclose(ema.shadow[0], torch.full((3,), 0.75))
    ema.after_step(100)  # d = min(101 / 110, 0.9) = 0.9
    assert torch.allclose(ema.shadow[0], torch.full((3,), 0.9 * 0.75 + 0.1))
    with ema.swapped():
        assert torch.allclose(p.detach(), ema.shadow[0])
    assert torch.equal(p.detach(), torch.ones(3))  # restored


def test_ema_batch_cadence_is_flow_grpos():
    """Flow-GRPO's train_sd3.py calls ``ema.step(params, global_step)`` after every training chunk (global_step is
    raised after the chunk whose last micro-step syncs), and its ema.py applies it when (step + 1) % 8 == 0 with
    decay min((1 + s) / (10 + s), 0.9). Replayed here by hand over 40 chunks at 2 chunks per optimizer step, the
    parameter set to the step count after each optimizer step; the EMA driven the way the recipes drive it agrees."""
    chunks_per_step, every = 2, 8
    # the reference, written from Flow-GRPO's loop and ema.py
    ref, global_step, value = 0.0, 0, 0.0
    for chunk in range(40):
        if (chunk + 1) % chunks_per_step == 0:  # the sync micro-step: optimizer step
            global_step += 1
            value = float(global_step)
        if (global_step + 1) % every == 0:
            d = min((1 + global_step) / (10 + global_step), 0.9)
            ref = d * ref + (1 - d) * value
    # ours: optimizer_step -> after_step, the end of each batch -> after_batch
    p = torch.nn.Parameter(torch.zeros(()))
    ema = EMA([p], decay=0.9, every=every, cadence="batch")
    step = 0
    for chunk in range(40):
        if (chunk + 1) % chunks_per_step == 0:
            step += 1
            with torch.no_grad():
                p.fill_(float(step))
            ema.after_step(step)
        ema.after_batch(step)
    assert step == global_step == 20
    assert ema.shadow[0].item() == pytest.approx(ref, rel=1e-6)
    # steps 7 and 15 applied twice each (d = 8 / 17, then 16 / 25): not the once-per-step rule
    once = 0.0
    for s in (8, 16):
        d = min((1 + s) / (10 + s), 0.9)
        once = d * once + (1 - d) * s
    assert abs(ref - once) > 0.5


def _lora_folder(path, base=None):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    if base:
        (path / "manifest.json").write_text(json.dumps({"base_model": base}))
    return path


def test_resolve_lora_accepts_run_folders_and_peft_folders(tmp_path):
    lora = _lora_folder(tmp_path / "run" / "lora")
    (tmp_path / "run" / "manifest.json").write_text(
        json.dumps({"base_model": "tiny", "output": "lora"})
    )
    assert resolve_lora(tmp_path / "run") == lora
    assert resolve_lora(lora) == lora
    (tmp_path / "merged_run").mkdir()
    (tmp_path / "merged_run" / "manifest.json").write_text(json.dumps({"output": "merged"}))
    with pytest.raises(FileNotFoundError, match="output='merged'"):
        resolve_lora(tmp_path / "merged_run")


def test_adapter_base_check(tmp_path):
    ok = _lora_folder(tmp_path / "ok", base="org/model")
    assert check_adapter_base("teachers.x", str(ok), "org/model") == ok
    with pytest.raises(ConfigError, match="is a LoRA for base model 'org/model'"):
        check_adapter_base("teachers.x", str(ok), "org/other")
    unknown = _lora_folder(
        tmp_path / "foreign"
    )  # no manifest: nothing recorded, the load checks shapes
    assert check_adapter_base("teachers.y", str(unknown), "org/other") == unknown
    assert same_base(str(tmp_path), str(tmp_path / ".")) and not same_base("a/b", "a/c")


class _Const:
    """A scorer that returns a constant and records what it was asked to score."""

    def __init__(self, name, value):
        self.name, self.value, self.version, self.requires = name, value, "1", Requirements()
        self.seen: list[str] = []

    def __call__(self, images, prompts, meta=None):
        self.seen += prompts
        return Scores([self.value] * len(images), [self.value] * len(images))


def test_rewards_are_each_tasks_weighted_sum():
    a, b = _Const("a", 1.0), _Const("b", 10.0)
    items = [PromptItem("g", "geneval", 0), PromptItem("o", "ocr", 0)]
    weights = {"geneval": {"a": 1.0}, "ocr": {"a": 0.5, "b": 2.0}}
    img = Image.new("RGB", (4, 4))
    got = score({"a": a, "b": b}, weights.__getitem__, [img, img], items)
    assert isinstance(got, Rewards)
    assert got.total.tolist() == [1.0, 0.5 + 20.0]
    assert b.seen == ["o"]  # a scorer only sees the samples whose task uses it
    assert torch.isnan(got.parts["b"][0]) and got.parts["b"][1] == 10.0


class _TwoScales:
    """A scorer whose official value and training reward differ (GenEval: 0/1 verdict vs partial credit)."""

    name, version, requires = "two", "1", Requirements()

    def __call__(self, images, prompts, meta=None):
        return Scores([1.0, 0.0][: len(images)], [0.5, -1.0][: len(images)])


def test_a_scorer_named_in_use_values_is_read_on_its_value():
    items = [PromptItem("x", "geneval", 0), PromptItem("y", "geneval", 1)]
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
    import sys
    import types

    from trainer.loop import load_scorers

    made = []

    class FakeRemote:
        def __init__(self, url, name):
            made.append((url, name))

    monkeypatch.setitem(
        sys.modules, "scorers.remote", types.SimpleNamespace(RemoteScorer=FakeRemote)
    )
    got = load_scorers({"geneval", "brightness"}, {"geneval": "http://gpu-box:8000"})
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
    items = [PromptItem("g", "geneval", 0)] * 2 + [PromptItem("o", "ocr", 0)] * 2
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


def _epoch(advantages: list[float], batch_size: int):
    """Batches of a fake epoch: sample i's latents hold the value i, so the regrouped rows can be traced."""
    from types import SimpleNamespace

    from flowmodels.backend import Conditioning
    from flowmodels.sampling import Rollout
    from trainer.loop import Batch

    batches = []
    for lo in range(0, len(advantages), batch_size):
        ids = list(range(lo, min(lo + batch_size, len(advantages))))
        n = len(ids)
        ro = Rollout(
            latents=torch.tensor(ids, dtype=torch.float32)
            .view(n, 1, 1, 1, 1)
            .expand(n, 3, 1, 1, 1),
            log_probs=torch.zeros(n, 2),
            sigmas=torch.tensor([1.0, 0.5, 0.0]),
            images=None,
            cond=Conditioning(torch.zeros(n, 2, 3), torch.zeros(n, 3)),
            uncond=None,
            seeds=ids,
            noise_level=0.7,
            cfg=4.5,
        )
        items = [PromptItem(f"p{i}", "t", i) for i in ids]
        batches.append(Batch(ro, items, torch.zeros(n), torch.tensor([advantages[i] for i in ids])))
    run = SimpleNamespace(rcfg=SimpleNamespace(seed=3), epoch=5, rank=0)
    return run, batches


def test_regroup_drops_tied_samples_and_rebatches_as_flow_grpo():
    from trainer.loop import regroup

    adv = [0.0] * 8 + [
        1.0,
        -1.0,
        2.0,
        -2.0,
        0.5,
    ]  # 13 samples, 5 with a nonzero advantage, 4 batches
    run, batches = _epoch(adv, 4)
    out = regroup(run, batches, drop_tied=True)
    # 5 kept -> 3 tied ones come back to make 8 (a multiple of 4 batches): 4 batches of 2
    assert (out.kept, out.total) == (8, 13) and [len(b.items) for b in out.batches] == [2] * 4
    rows = [int(i) for b in out.batches for i in b.ro.latents[:, 0].flatten().tolist()]
    assert set(range(8, 13)) <= set(rows) and len(set(rows)) == 8  # every nonzero one, no repeats
    for b in out.batches:  # rows travel with their items, seeds and advantages
        ids = [int(x) for x in b.ro.latents[:, 0].flatten().tolist()]
        assert [it.index for it in b.items] == ids == b.ro.seeds
        assert b.advantages.tolist() == [adv[i] for i in ids]
    again = regroup(*_epoch(adv, 4), drop_tied=True)  # the draws come from seed, epoch and rank
    assert [it.index for b in again.batches for it in b.items] == [
        it.index for b in out.batches for it in b.items
    ]


def test_regroup_keeps_one_sample_per_batch_when_every_group_is_tied():
    from trainer.loop import regroup

    run, batches = _epoch([0.0] * 12, 3)  # Flow-GRPO would reshape 0 samples and fail
    out = regroup(run, batches, drop_tied=True)
    assert out.kept == 4 and [len(b.items) for b in out.batches] == [1] * 4


def test_regroup_without_the_filter_shuffles_samples_or_whole_batches():
    from trainer.loop import regroup

    run, batches = _epoch([1.0] * 12, 3)
    by_sample = regroup(run, batches, shuffle="samples")
    ids = [it.index for b in by_sample.batches for it in b.items]
    assert sorted(ids) == list(range(12)) and ids != list(range(12))
    whole = regroup(run, batches, shuffle="batches")
    assert sorted(tuple(it.index for it in b.items) for b in whole.batches) == [
        tuple(range(i, i + 3)) for i in range(0, 12, 3)
    ]
