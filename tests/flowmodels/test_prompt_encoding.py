"""Prompt encoding in rollouts: each distinct prompt once per batch, the negative prompt once per model, and
the same bits as encoding every image's prompt on its own (tiny SD3 and mini model)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from flowmodels.backend import Conditioning, encode_prompts
from flowmodels.mini import MiniConfig, MiniFlow
from flowmodels.sampling import rollout

# two groups of four images (GRPO's K = 4) and one image of a third prompt
PROMPTS = ["a red cube"] * 4 + ["two blue spheres"] * 4 + ["the text 7"]
SEEDS = list(range(len(PROMPTS)))


def _mini() -> MiniFlow:
    model = MiniFlow.create(MiniConfig(dim=32, layers=2, heads=4, text_layers=1), seed=0)
    # adaLN-zero and the output layer start at 0: give the untrained net some output
    with torch.no_grad():
        for p in model.denoiser.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    model.text_encoder.eval()
    model.denoiser.eval()
    return model


@pytest.fixture(params=["sd3", "mini"])
def model_and_size(request: pytest.FixtureRequest) -> tuple[Any, int]:
    if request.param == "sd3":
        return request.getfixturevalue("tiny_model"), 64
    return _mini(), 32


def _count_encodes(model: Any, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record every call of the model's text encoding (the prompts it was given)."""
    calls: list[list[str]] = []
    real = model.encode

    def counted(prompts: list[str]) -> Conditioning:
        calls.append(list(prompts))
        return real(prompts)

    monkeypatch.setattr(model, "encode", counted)
    return calls


def _roll(model: Any, size: int, **kw: Any) -> Any:
    return rollout(
        model, PROMPTS, SEEDS, steps=3, height=size, width=size, negative_prompt="blurry", **kw
    )


def test_each_distinct_prompt_is_encoded_once_and_the_negative_once_per_model(
    model_and_size: tuple[Any, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, size = model_and_size
    calls = _count_encodes(model, monkeypatch)
    _roll(model, size)
    assert sorted(p for call in calls for p in call) == sorted(
        ["a red cube", "two blue spheres", "the text 7", "blurry"]
    )
    calls.clear()
    _roll(model, size)  # the next batch: its prompts again, the negative prompt from the cache
    assert sorted(p for call in calls for p in call) == sorted(
        ["a red cube", "two blue spheres", "the text 7"]
    )


def test_deduplicated_rollout_is_bitwise_the_rollout_with_every_image_encoded_alone(
    model_and_size: tuple[Any, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, size = model_and_size
    got = _roll(model, size)
    # the reference: every image's prompt and negative prompt encoded on their own, nothing shared or cached
    per_image = Conditioning.cat([model.encode([p]) for p in PROMPTS])
    monkeypatch.setattr(model, "encode_negative", lambda p: model.encode([p]))
    ref = _roll(model, size, cond=per_image)
    assert torch.equal(got.cond.embeds, ref.cond.embeds)
    assert torch.equal(got.cond.pooled, ref.cond.pooled)
    assert torch.equal(got.uncond.embeds, ref.uncond.embeds)
    assert torch.equal(got.uncond.pooled, ref.uncond.pooled)
    assert torch.equal(got.latents, ref.latents)
    assert torch.equal(got.log_probs, ref.log_probs)
    assert torch.equal(got.images, ref.images)


def test_a_prompts_encoding_does_not_depend_on_its_batch(model_and_size: tuple[Any, int]) -> None:
    model, _ = model_and_size
    alone = encode_prompts(model, ["two blue spheres"])
    mixed = encode_prompts(model, PROMPTS)
    for row in range(4, 8):
        assert torch.equal(mixed.embeds[row], alone.embeds[0])
        assert torch.equal(mixed.pooled[row], alone.pooled[0])


def test_the_mini_models_negative_cache_follows_a_changed_text_encoder() -> None:
    model = _mini()
    before = model.encode_negative("blurry")
    with torch.no_grad():  # an optimizer step on the text encoder (pretraining trains it)
        for p in model.text_encoder.parameters():
            p.add_(0.1)
    after = model.encode_negative("blurry")
    assert not torch.equal(before.pooled, after.pooled)
    assert torch.equal(after.pooled, model.encode(["blurry"]).pooled)
