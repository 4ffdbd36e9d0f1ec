"""The mini model backend: same interface and adapters as SD3, saved and loaded like any model, pretrainable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flowmodels import adapters as A
from flowmodels.mini import MINI_LORA_TARGETS, MiniConfig, MiniFlow, tokenize
from flowmodels.models import BUILTIN_MODELS, ModelNotFoundError, load_model
from flowmodels.sampling import recompute_step, rollout

SMALL = MiniConfig(dim=32, layers=2, heads=4, text_layers=1)


@pytest.fixture()
def mini_dir(tmp_path: Path) -> Path:
    model = MiniFlow.create(SMALL, seed=0)
    with (
        torch.no_grad()
    ):  # adaLN-zero and the output layer start at 0: give the untrained net some output
        for p in model.denoiser.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return model.save_pretrained(tmp_path / "mini")


def test_tokenizer_spells_quoted_text_and_pads() -> None:
    vocab = {t: i for i, t in enumerate(SMALL.vocab)}
    ids = tokenize(['the text "7A"', "Two Red squares", ""], vocab, 8)
    row = [SMALL.vocab[i] for i in ids[0].tolist() if i]
    assert row == ["the", "text", '"', "7", "A", '"']
    assert [SMALL.vocab[i] for i in ids[1].tolist() if i] == ["two", "red", "squares"]
    assert ids[2].tolist() == [0] * 8
    assert tokenize(["a zebra"], vocab, 4)[0, 1].item() == vocab["<unk>"]


def test_saved_model_loads_through_the_common_loader(mini_dir: Path) -> None:
    a = MiniFlow.from_pretrained(mini_dir, "m")
    b = load_model(str(mini_dir), device="cpu", dtype="float32")
    assert type(b).__name__ == "MiniFlow" and b.model_id == str(mini_dir)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cond = a.encode(["a red circle", "two squares"])
    assert torch.equal(
        a.velocity(x, 0.5, cond), b.velocity(x, 0.5, b.encode(["a red circle", "two squares"]))
    )
    uncond = a.encode(["", ""])
    v_c, v_u = a.velocity(x, 0.5, cond), a.velocity(x, 0.5, uncond)
    torch.testing.assert_close(
        a.velocity(x, 0.5, cond, uncond, 3.0), v_u + 3.0 * (v_c - v_u), rtol=1e-5, atol=1e-5
    )


def test_size_and_missing_builtin_errors(mini_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = load_model(str(mini_dir), device="cpu", dtype="float32")
    with pytest.raises(ValueError, match="32 x 32 images only"):
        m.latent_shape(64, 64)
    monkeypatch.setitem(BUILTIN_MODELS, "mini", mini_dir.parent / "nowhere")
    with pytest.raises(ModelNotFoundError, match="python -m trainer.pretrain"):
        load_model("mini")


def test_lora_adapters_and_sde_rollout_ratio_one(mini_dir: Path) -> None:
    m = load_model(str(mini_dir), device="cpu", dtype="float32")
    A.add_lora(
        m.denoiser,
        "student",
        A.LoraSpec(rank=4, alpha=8, targets=MINI_LORA_TARGETS),
        trainable=True,
    )
    with torch.no_grad():
        for n, p in m.denoiser.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    trainable = [n for n, p in m.denoiser.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ro = rollout(
        m,
        ["a red circle", 'the text "A1"'],
        [3, 4],
        steps=4,
        cfg=4.5,
        noise_level=0.7,
        height=32,
        width=32,
    )
    assert ro.images is not None and ro.images.shape == (2, 3, 32, 32)
    assert 0.0 <= float(ro.images.min()) and float(ro.images.max()) <= 1.0
    for i in range(4):
        step = recompute_step(m, ro, i)
        assert torch.equal(torch.exp(step.log_prob - ro.log_probs[:, i]), torch.ones(2))
    x, cond = ro.latents[:, 1], ro.cond
    v_student = m.velocity(x, 0.5, cond)
    with A.disabled(m.denoiser):
        assert not torch.allclose(m.velocity(x, 0.5, cond), v_student)


def test_pretraining_lowers_the_loss_and_saves_a_loadable_model(tmp_path: Path) -> None:
    import json

    from trainer import pretrain

    out = pretrain.main(
        [
            "--out",
            str(tmp_path / "p"),
            "--max-steps",
            "30",
            "--batch",
            "16",
            "--dim",
            "32",
            "--layers",
            "2",
            "--minutes",
            "5",
            "--log-every",
            "10",
            "--save-every",
            "0",
        ]
    )
    losses = json.loads((out / "loss.json").read_text())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    meta = json.loads((out / "model_index.json").read_text())["pretrain"]
    assert meta["steps"] == 30 and meta["command"].startswith("python -m trainer.pretrain --out")
    assert load_model(str(out), device="cpu").cfg.dim == 32

    # a second stage continues from the first and keeps its record, so the chain reproduces stage by stage
    again = pretrain.main(
        ["--out", str(tmp_path / "q"), "--init", str(out), "--max-steps", "3", "--batch", "8"]
        + ["--schedule", "cosine", "--minutes", "5", "--save-every", "0", "--faded", "0.25"]
    )
    meta2 = json.loads((again / "model_index.json").read_text())["pretrain"]
    assert meta2["init"] == str(out) and meta2["schedule"] == "cosine" and meta2["faded"] == 0.25
    assert meta["faded"] == 0.0
    assert meta2["previous"]["steps"] == 30 and meta2["previous"]["schedule"] == "constant"


def test_pretraining_learning_rate_schedule_golden_values() -> None:
    from trainer.pretrain import lr_at

    # warm-up: (step + 1) / 200 of the peak
    assert lr_at(0, 1e-3, 1000, "constant") == pytest.approx(1e-3 / 200)
    assert lr_at(99, 1e-3, 1000, "constant") == pytest.approx(0.5e-3)
    assert lr_at(500, 1e-3, 1000, "constant") == pytest.approx(1e-3)
    # cosine: 0.5 (1 + cos(pi step / total)) after the warm-up; half the peak at the midpoint, 0 at the end
    assert lr_at(500, 1e-3, 1000, "cosine") == pytest.approx(0.5e-3)
    assert lr_at(250, 1e-3, 1000, "cosine") == pytest.approx(1e-3 * (1 + 2**-0.5) / 2)
    assert lr_at(1000, 1e-3, 1000, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_at(5000, 1e-3, 1000, "cosine") == pytest.approx(0.0, abs=1e-12)


def test_fuse_folds_the_active_lora_into_the_weights(mini_dir: Path) -> None:
    m = load_model(str(mini_dir), device="cpu", dtype="float32")
    base_params = sum(p.numel() for p in m.denoiser.parameters())
    spec = A.LoraSpec(rank=4, alpha=8, targets=MINI_LORA_TARGETS)
    A.add_lora(m.denoiser, "other", spec)
    A.add_lora(m.denoiser, "student", spec)
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in m.denoiser.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    ro = rollout(m, ["a red circle"], [3], steps=2, cfg=1.0, height=32, width=32)
    x, cond = ro.latents[:, 1], ro.cond
    with torch.no_grad():
        with A.disabled(m.denoiser):
            v_base = m.velocity(x, 0.5, cond)
        v_student = m.velocity(x, 0.5, cond)
    assert A.fuse(m.denoiser) == "student"
    assert A.adapter_names(m.denoiser) == []
    assert not any("lora_" in n for n, _ in m.denoiser.named_parameters())
    assert sum(p.numel() for p in m.denoiser.parameters()) == base_params
    with torch.no_grad():
        v_fused = m.velocity(x, 0.5, cond)
    assert torch.allclose(v_fused, v_student, atol=1e-4)
    assert not torch.allclose(v_fused, v_base, atol=1e-2)
