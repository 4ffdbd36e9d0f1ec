"""The FLUX.1 backend on the tiny offline FLUX: diffusers parity, FLUX's shifted schedule, the SDE step on it,
LoRA adapters (per-row too), native settings and the loader."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flowmodels import adapters as A
from flowmodels.flux import FLUX_LORA_TARGETS, Flux, calculate_shift
from flowmodels.models import load_model, native_settings
from flowmodels.sampling import initial_noise, rollout, sde_step
from flowmodels.tiny import save_tiny_flux

PROMPTS = ["a red cube", "two cats on a mat"]


@pytest.fixture()
def flux(tiny_flux_dir: Path) -> Flux:
    model = load_model(str(tiny_flux_dir), device="cpu", dtype="float32")
    assert isinstance(model, Flux)
    return model


@pytest.fixture(scope="module")
def cfg_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny FLUX without the guidance embedding (schnell's layout): cfg is true classifier-free guidance."""
    return save_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux-cfg", guidance=False)


def _randomise_lora(module: torch.nn.Module, name: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in module.named_parameters():
            if f"lora_B.{name}." in pname:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("distilled", [True, False], ids=["dev-guidance", "true-cfg"])
def test_ode_rollout_gives_diffusers_flux_pipelines_images(
    distilled: bool, tiny_flux_dir: Path, cfg_flux_dir: Path
) -> None:
    """Our Euler ODE rollout (noise level 0) == FluxPipeline from the same initial latents, steps and guidance."""
    model = load_model(
        str(tiny_flux_dir if distilled else cfg_flux_dir), device="cpu", dtype="float32"
    )
    assert model.distilled is distilled
    cfg, steps = (3.5, 4) if distilled else (2.0, 4)
    ro = rollout(model, PROMPTS, [3, 4], steps=steps, cfg=cfg, noise_level=0.0, height=64, width=64)
    x0 = ro.latents[:, 0]
    packed = model.pipe._pack_latents(x0, *x0.shape)
    # FLUX.1-dev: guidance_scale feeds the guidance embedding; without it diffusers' true CFG over a negative prompt
    extra = (
        {"guidance_scale": cfg}
        if distilled
        else {"true_cfg_scale": cfg, "negative_prompt": ["", ""]}
    )
    with torch.no_grad():
        want = model.pipe(
            prompt=PROMPTS,
            latents=packed,
            num_inference_steps=steps,
            height=64,
            width=64,
            max_sequence_length=model.t5_length,
            output_type="pt",
            **extra,
        ).images
    torch.testing.assert_close(ro.sigmas, model.pipe.scheduler.sigmas.float(), rtol=0, atol=1e-7)
    torch.testing.assert_close(ro.images, want, rtol=1e-4, atol=1e-5)
    assert ro.images.std() > 0  # a real image, not a constant


def test_the_schedule_is_fluxs_dynamically_shifted_one(flux: Flux) -> None:
    """sigmas = time_shift(mu, linspace(1, 1/N, N)) + [0], mu linear in the image tokens (FluxPipeline's)."""
    config = dict(flux.pipe.scheduler.config)
    assert calculate_shift(256, config) == pytest.approx(0.5)
    assert calculate_shift(4096, config) == pytest.approx(1.15)
    for size, steps in ((64, 4), (512, 6), (1024, 28)):
        tokens = (size // 16) ** 2
        mu = 0.5 + (1.15 - 0.5) * (tokens - 256) / (4096 - 256)
        t = np.linspace(1.0, 1 / steps, steps)
        want = [math.exp(mu) / (math.exp(mu) + (1 / x - 1)) for x in t] + [0.0]
        got = flux.sigmas(steps, height=size, width=size)
        torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32))
    # without a size: the model's native one (the tiny FLUX declares 64 px)
    torch.testing.assert_close(flux.sigmas(4), flux.sigmas(4, height=64, width=64))
    assert not torch.allclose(
        flux.sigmas(6, height=512, width=512), flux.sigmas(6, height=64, width=64)
    )


def test_sde_step_on_fluxs_schedule_is_flow_grpos_formula(flux: Flux) -> None:
    """Each recorded SDE transition of a rollout == mean + std * the image's own noise draw, with the mean and
    std of Flow-GRPO's SDE (docs/method.md 2) on FLUX's shifted schedule, and its Gaussian log-prob."""
    a, steps, seeds = 0.9, 4, [5, 6]
    ro = rollout(flux, PROMPTS, seeds, steps=steps, cfg=3.5, noise_level=a, height=64, width=64)
    sig = flux.sigmas(steps, height=64, width=64)
    torch.testing.assert_close(ro.sigmas, sig)
    _, gens = initial_noise(flux.latent_shape(64, 64), seeds)
    cap = float(sig[1])
    for i in range(2):  # step 0 starts at s = 1 (sigma_t uses s~ = sigma_1 there), step 1 below it
        x = ro.latents[:, i]
        s, s_next = float(sig[i]), float(sig[i + 1])
        dt = s_next - s
        v = flux.velocity(x, s, ro.cond, None, 3.5)
        sigma_t = a * math.sqrt(s / (1 - (cap if s >= 1 else s)))
        mean = x + (v + sigma_t**2 / (2 * s) * (x + (1 - s) * v)) * dt
        std = sigma_t * math.sqrt(-dt)
        noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens])
        torch.testing.assert_close(ro.latents[:, i + 1], mean + std * noise, rtol=1e-4, atol=1e-5)
        step = sde_step(x, v, s, s_next, a, sigma_cap=cap, prev_sample=ro.latents[:, i + 1])
        torch.testing.assert_close(step.mean, mean, rtol=1e-5, atol=1e-6)
        assert float(step.std[0]) == pytest.approx(std, rel=1e-6)
        logp = (
            -((ro.latents[:, i + 1] - mean) ** 2) / (2 * std**2)
            - math.log(std)
            - 0.5 * math.log(2 * math.pi)
        ).mean(dim=(1, 2, 3))
        torch.testing.assert_close(ro.log_probs[:, i], logp, rtol=1e-4, atol=1e-4)


def test_distilled_guidance_is_one_pass_and_ignores_the_negative_prompt(flux: Flux) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *flux.latent_shape(64, 64), generator=g)
    cond = flux.encode(PROMPTS)
    uncond = flux.encode(["ugly", "blurry"])
    calls = []
    hook = flux.denoiser.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        with_neg = flux.velocity(x, 0.7, cond, uncond, 3.5)
    finally:
        hook.remove()
    assert len(calls) == 1
    torch.testing.assert_close(with_neg, flux.velocity(x, 0.7, cond, None, 3.5), rtol=0, atol=0)
    assert not torch.allclose(with_neg, flux.velocity(x, 0.7, cond, None, 1.0))  # guidance matters


def test_true_cfg_without_the_guidance_embedding(cfg_flux_dir: Path) -> None:
    model = load_model(str(cfg_flux_dir), device="cpu", dtype="float32")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *model.latent_shape(64, 64), generator=g)
    cond, uncond = model.encode(PROMPTS), model.encode(["", ""])
    v_c, v_u = model.velocity(x, 0.5, cond), model.velocity(x, 0.5, uncond)
    got = model.velocity(x, 0.5, cond, uncond, 3.0)
    torch.testing.assert_close(got, v_u + 3.0 * (v_c - v_u), rtol=1e-4, atol=1e-5)


def test_lora_targets_attach_and_per_row_adapters_equal_one_pass_per_adapter(flux: Flux) -> None:
    """Flow-GRPO's FLUX targets (the preset's) reach both block kinds; per-row adapters are bit for bit."""
    net = flux.denoiser
    spec = A.LoraSpec(rank=4, alpha=8, targets=FLUX_LORA_TARGETS)
    for i, name in enumerate(("student", "t1", "t2")):
        A.add_lora(net, name, spec, trainable=name == "student")
        _randomise_lora(net, name, i + 1)
    wrapped = {
        n.rsplit(".base_layer", 1)[0] for n, _ in net.named_modules() if n.endswith("base_layer")
    }
    for target in FLUX_LORA_TARGETS:
        assert any(w.startswith("transformer_blocks.") and w.endswith(target) for w in wrapped), (
            target
        )
    single = {w for w in wrapped if w.startswith("single_transformer_blocks.")}
    assert single == {f"single_transformer_blocks.0.attn.to_{k}" for k in "qkv"}
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all(".student." in n for n in trainable)

    A.activate(net, "student")
    x = torch.randn(6, *flux.latent_shape(64, 64), generator=torch.Generator().manual_seed(0))
    cond = flux.encode(list("abcdef"))
    tags = ["t1", "t2", "t1", "student", "t2", "student"]
    assert A.mixable(net)
    with torch.no_grad(), A.per_row(net, tags):
        mixed = flux.velocity(x, 0.7, cond, None, 3.5)
    for name in ("t1", "t2", "student"):
        rows = torch.tensor([i for i, t in enumerate(tags) if t == name])
        with torch.no_grad(), A.using(net, name):
            alone = flux.velocity(x[rows], 0.7, cond.select(rows), None, 3.5)
        torch.testing.assert_close(mixed[rows], alone, rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad(), A.using(net, "t1"):
        assert not torch.allclose(flux.velocity(x, 0.7, cond, None, 3.5), mixed)


def test_native_settings_come_from_the_folder_without_loading(
    tiny_flux_dir: Path, tmp_path: Path, flux: Flux
) -> None:
    assert native_settings(str(tiny_flux_dir)) == {
        "height": 64,
        "width": 64,
        "steps": 4,
        "cfg": 3.5,
        "guidance": "distilled",
    }
    assert native_settings(flux) == native_settings(str(tiny_flux_dir))
    # a folder that declares nothing: FLUX.1-dev's own (28 steps, distilled guidance 3.5, 1024 px)
    bare = shutil.copytree(tiny_flux_dir, tmp_path / "bare")
    (bare / "sampling.json").unlink()
    assert native_settings(str(bare)) == {
        "height": 1024,
        "width": 1024,
        "steps": 28,
        "cfg": 3.5,
        "guidance": "distilled",
    }


def test_latent_shape_refuses_sizes_that_do_not_pack(flux: Flux) -> None:
    from flowbase.errors import InputError

    assert flux.latent_shape(64, 96) == (4, 8, 12)
    with pytest.raises(InputError, match="multiple of 16"):
        flux.latent_shape(72, 64)
