"""The SD3 backend on the tiny offline model: loader, CFG, seeds, adapters, ratio = 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flowmodels import adapters as A
from flowmodels.models import ModelNotFoundError, load_model
from flowmodels.sampling import recompute_step, rollout
from flowmodels.tiny import install_in_hub_cache

SPEC = A.LoraSpec(rank=4, alpha=8)


def _randomise_lora(module: torch.nn.Module, name: str, seed: int) -> None:
    """Give adapter ``name`` a non-zero delta (a fresh LoRA has B = 0 and changes nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in module.named_parameters():
            if f"lora_B.{name}." in pname:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _probe(model) -> tuple[torch.Tensor, float, object]:  # noqa: ANN001
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *model.latent_shape(64, 64), generator=g)
    return x, 0.7, model.encode(["a red cube", "two blue spheres"])


def test_loads_from_a_local_folder_and_from_a_hub_id_in_the_cache(
    tiny_sd3_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hc

    install_in_hub_cache(tiny_sd3_dir, "tiny-org/tiny-sd3", tmp_path / "hub")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    by_id = load_model("tiny-org/tiny-sd3", device="cpu", dtype="float32")
    by_path = load_model(str(tiny_sd3_dir), device="cpu", dtype="float32")
    x, s, cond = _probe(by_path)
    assert by_id.model_id == "tiny-org/tiny-sd3"
    torch.testing.assert_close(by_id.velocity(x, s, cond), by_path.velocity(x, s, cond))


def test_missing_model_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as e:
        load_model("stabilityai/stable-diffusion-3.5-medium")
    msg = str(e.value)
    assert "\n" not in msg and "hf download" in msg and "--model /path" in msg
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        load_model(str(tmp_path))


def test_cfg_matches_the_guidance_formula(tiny_model) -> None:  # noqa: ANN001
    x, s, cond = _probe(tiny_model)
    uncond = tiny_model.encode(["", ""])
    v_c = tiny_model.velocity(x, s, cond)
    v_u = tiny_model.velocity(x, s, uncond)
    assert torch.equal(tiny_model.velocity(x, s, cond, uncond, 1.0), v_c)
    torch.testing.assert_close(
        tiny_model.velocity(x, s, cond, uncond, 4.5), v_u + 4.5 * (v_c - v_u), rtol=1e-5, atol=1e-5
    )
    assert not torch.allclose(v_c, v_u)


def test_same_seed_same_image_and_different_seed_different_image(tiny_model) -> None:  # noqa: ANN001
    kw = dict(steps=4, cfg=4.5, noise_level=0.0, height=64, width=64)
    a = rollout(tiny_model, ["a cat", "a cat"], [7, 8], **kw).images
    b = rollout(tiny_model, ["a cat"], [7], **kw).images
    assert a is not None and b is not None
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-5)  # batch-independent
    assert (a[0] - a[1]).abs().max() > 1e-3


def test_sde_rollout_records_and_rescoring_gives_ratio_exactly_one(tiny_model) -> None:  # noqa: ANN001
    A.add_lora(tiny_model.denoiser, "student", SPEC, trainable=True)
    _randomise_lora(tiny_model.denoiser, "student", 1)
    ro = rollout(
        tiny_model,
        ["a red cube", "text 'hi'"],
        [1, 2],
        steps=5,
        cfg=4.5,
        noise_level=0.7,
        height=64,
        width=64,
    )
    assert ro.latents.shape == (2, 6, 4, 8, 8) and ro.log_probs.shape == (2, 5)
    assert ro.images is not None and ro.images.shape == (2, 3, 64, 64)
    for i in range(5):
        step = recompute_step(tiny_model, ro, i)
        ratio = torch.exp(step.log_prob - ro.log_probs[:, i])
        assert torch.equal(ratio, torch.ones(2)), f"step {i}: ratio {ratio}"


def test_adapters_switch_and_disable(tiny_model) -> None:  # noqa: ANN001
    net = tiny_model.denoiser
    x, s, cond = _probe(tiny_model)
    base = tiny_model.velocity(x, s, cond)
    A.add_lora(net, "student", SPEC, trainable=True)
    assert torch.equal(tiny_model.velocity(x, s, cond), base)  # B = 0 at init: no change yet
    A.add_lora(net, "teacher", SPEC)
    _randomise_lora(net, "student", 1)
    _randomise_lora(net, "teacher", 2)
    A.activate(net, "student")
    v_student = tiny_model.velocity(x, s, cond)
    with A.using(net, "teacher"):
        v_teacher = tiny_model.velocity(x, s, cond)
    with A.disabled(net):
        v_base = tiny_model.velocity(x, s, cond)
    assert A.active_adapter(net) == "student"
    assert not torch.allclose(v_student, v_teacher) and not torch.allclose(v_student, base)
    assert torch.equal(v_base, base)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(".student." in n for n in trainable)
    with A.using(net, "teacher"):
        assert {n for n, p in net.named_parameters() if p.requires_grad} == trainable
    with pytest.raises(KeyError, match="no adapter 'nope'"):
        A.activate(net, "nope")


def test_per_row_adapters_give_each_row_its_adapters_velocity_bit_for_bit(tiny_model) -> None:  # noqa: ANN001
    """One CFG pass with a teacher, another teacher and the base on different rows equals one pass per adapter."""
    net = tiny_model.denoiser
    for i, name in enumerate(("student", "t1", "t2")):
        A.add_lora(net, name, SPEC, trainable=name == "student")
        _randomise_lora(net, name, i + 1)
    A.activate(net, "student")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, *tiny_model.latent_shape(64, 64), generator=g)
    cond = tiny_model.encode(list("abcdef"))
    uncond = tiny_model.encode([""] * 6)
    tags = ["t1", "t2", "t1", "student", "t2", "student"]
    assert A.mixable(net)
    with torch.no_grad(), A.per_row(net, tags):
        mixed = tiny_model.velocity(x, 0.7, cond, uncond, 4.5)
    for name in ("t1", "t2", "student"):  # what OPD ran before: one pass per adapter over its rows
        rows = torch.tensor([i for i, t in enumerate(tags) if t == name])
        with torch.no_grad(), A.using(net, name):
            alone = tiny_model.velocity(x[rows], 0.7, cond.select(rows), uncond.select(rows), 4.5)
        assert torch.equal(mixed[rows], alone), name
    assert A.active_adapter(net) == "student"  # nothing switched
    with pytest.raises(KeyError, match="nope"), A.per_row(net, ["nope"]):
        pass
    A.fuse(net)
    assert not A.mixable(net)  # no adapter left


def test_adapter_round_trip_and_manifest(tiny_model, tiny_sd3_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    net = tiny_model.denoiser
    A.add_lora(net, "student", SPEC, trainable=True)
    _randomise_lora(net, "student", 3)
    x, s, cond = _probe(tiny_model)
    want = tiny_model.velocity(x, s, cond)
    folder = A.save_adapter(
        net, "student", tmp_path / "lora", {"base_model": str(tiny_sd3_dir), "step": 5}
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["step"] == 5 and manifest["base_model"] == str(tiny_sd3_dir)
    assert manifest["adapter_config"]["r"] == 4

    fresh = load_model(str(tiny_sd3_dir), device="cpu", dtype="float32")
    info = A.load_adapter(fresh.denoiser, folder, "teacher")
    assert info.base_model == str(tiny_sd3_dir)
    assert torch.equal(fresh.velocity(x, s, cond), want)


def test_loads_a_peft_folder_as_flow_grpo_publishes_it(tiny_sd3_dir: Path, tmp_path: Path) -> None:
    """Flow-GRPO saves `PeftModel(transformer).save_pretrained`: keys `base_model.model.*`, no manifest."""
    from peft import get_peft_model

    src = load_model(str(tiny_sd3_dir), device="cpu", dtype="float32")
    peft_model = get_peft_model(src.denoiser, SPEC.peft_config())
    _randomise_lora(peft_model, "default", 4)
    peft_model.save_pretrained(str(tmp_path / "flow_grpo_lora"))
    assert not (tmp_path / "flow_grpo_lora" / "manifest.json").exists()
    x, s, cond = _probe(src)
    want = src.velocity(x, s, cond)

    dst = load_model(str(tiny_sd3_dir), device="cpu", dtype="float32")
    A.load_adapter(dst.denoiser, tmp_path / "flow_grpo_lora", "geneval_teacher")
    torch.testing.assert_close(dst.velocity(x, s, cond), want, rtol=0, atol=1e-6)


def test_adapter_for_another_architecture_is_rejected(tiny_sd3_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    src = load_model(str(tiny_sd3_dir), device="cpu", dtype="float32")
    A.add_lora(src.denoiser, "student", SPEC, trainable=True)
    folder = A.save_adapter(src.denoiser, "student", tmp_path / "lora")
    state = load_file(str(folder / "adapter_model.safetensors"))
    save_file(
        {k: v[:, :2].contiguous() if "lora_A" in k else v for k, v in state.items()},
        str(folder / "adapter_model.safetensors"),
    )
    dst = load_model(str(tiny_sd3_dir), device="cpu", dtype="float32")
    with pytest.raises((ValueError, RuntimeError)):
        A.load_adapter(dst.denoiser, folder, "bad")


def test_missing_adapter_is_one_clear_line(tiny_model) -> None:  # noqa: ANN001
    with pytest.raises(A.AdapterNotFoundError) as e:
        A.load_adapter(tiny_model.denoiser, "jieliu/SD3.5M-FlowGRPO-GenEval", "t")
    assert "\n" not in str(e.value) and "hf download" in str(e.value)


def test_size_that_does_not_fit_the_patch_grid_is_rejected(tiny_model) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny_model.latent_shape(72, 64)
    with pytest.raises(ValueError, match="steps"):
        tiny_model.sigmas(0)


def test_default_lora_targets_are_flow_grpos_and_skip_sd35s_second_attention() -> None:
    """SD3.5-M has a second attention (attn2) in its first blocks; Flow-GRPO's targets ("attn.to_q", ...) match the
    joint attention only, so its LoRAs carry no attn2 weights. The default spec must adapt exactly those modules."""
    from diffusers import SD3Transformer2DModel

    net = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=16,
        out_channels=4,
        pos_embed_max_size=8,
        dual_attention_layers=(0,),
    )
    assert any(".attn2." in n for n, _ in net.named_modules())
    A.add_lora(net, "student", A.LoraSpec(rank=2, alpha=4))
    adapted = {
        n.removesuffix(".lora_A.student")
        for n, _ in net.named_modules()
        if n.endswith("lora_A.student")
    }
    joint = (
        "add_k_proj",
        "add_q_proj",
        "add_v_proj",
        "to_add_out",
        "to_k",
        "to_out.0",
        "to_q",
        "to_v",
    )
    want = {f"transformer_blocks.{b}.attn.{m}" for b in range(2) for m in joint}
    want -= {
        "transformer_blocks.1.attn.to_add_out"
    }  # the last block's context branch has no output projection
    assert adapted == want
