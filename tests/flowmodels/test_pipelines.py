"""Evaluation-only pipelines (flowmodels.pipelines): tiny SDXL, SANA and PixArt-Sigma loaded through the real
loader, generating through their own __call__ with one seeded generator per image."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flowbase.errors import InputError
from flowmodels.models import (
    BACKENDS,
    ModelNotFoundError,
    check_sampling,
    load_for_sampling,
    load_model,
    model_record,
    native_settings,
    resolve_model_dir,
)
from flowmodels.pipelines import FAMILIES, PipelineModel, sample_images
from flowmodels.tiny import install_in_hub_cache
from flowmodels.tiny_pipelines import save_tiny_pipeline

SIXTY_FOUR = {"height": 64, "width": 64}  # each tiny pipeline's own size


def pixels(images: torch.Tensor) -> np.ndarray:
    """What the harness stores: 8-bit pixels."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


@pytest.mark.parametrize("cls_name", sorted(FAMILIES))
def test_family_defaults_are_the_pipelines_own(cls_name: str) -> None:
    import diffusers

    params = inspect.signature(getattr(diffusers, cls_name).__call__).parameters
    fam = FAMILIES[cls_name]
    assert fam.steps == params["num_inference_steps"].default
    assert fam.guidance == params["guidance_scale"].default
    assert fam.negative_prompt == ("negative_prompt" in params)
    if fam.max_sequence_length is not None:
        assert fam.max_sequence_length == params["max_sequence_length"].default
    assert set(fam.options) <= set(params)  # every fixed option is one the pipeline takes
    assert cls_name not in BACKENDS  # SD3, mini (and FLUX) keep their own backends


@pytest.mark.parametrize("fixture", ["tiny_sdxl_dir", "tiny_sana_dir"])
def test_an_image_depends_only_on_its_seed(fixture: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(fixture)
    model = load_for_sampling(str(folder), device="cpu", dtype="float32")
    assert isinstance(model, PipelineModel)
    kw = {"steps": 2, "cfg": 4.5, "height": 64, "width": 64}
    both = sample_images(model, ["a red cube", "two dogs"], [7, 8], **kw)
    alone = sample_images(model, ["two dogs"], [8], **kw)
    assert both.shape == (2, 3, 64, 64) and both.dtype == torch.float32
    # the same image alone or in a batch (8-bit pixels: a float rounding may move one level at most)
    assert np.abs(pixels(both[1:]).astype(int) - pixels(alone).astype(int)).max() <= 1
    other = sample_images(model, ["two dogs"], [9], **kw)
    assert np.abs(pixels(other).astype(int) - pixels(alone).astype(int)).max() > 10


@pytest.mark.parametrize(("kind", "length"), [("pixart-sigma", 300), ("pixart-alpha", 120)])
def test_pixart_generates_at_the_requested_size(kind: str, length: int, tmp_path: Path) -> None:
    folder = save_tiny_pipeline(kind, tmp_path / kind)
    assert native_settings(str(folder)) == {
        **SIXTY_FOUR,
        "steps": 20,
        "cfg": 4.5,
        "guidance": "cfg",
    }
    model = load_for_sampling(str(folder), device="cpu", dtype="float32")
    images = sample_images(model, ["a cat"], [1], steps=2, cfg=4.5, height=32, width=48)
    assert images.shape == (1, 3, 32, 48)  # no snapping to aspect-ratio bins
    rec = model_record(str(folder))
    assert rec["call_options"] == {"use_resolution_binning": False, "clean_caption": False}
    assert rec["text_lengths"] == {"text_encoder": length}


def test_sana_sprint_embeds_its_distilled_guidance(tmp_path: Path) -> None:
    folder = save_tiny_pipeline("sana-sprint", tmp_path / "sprint")
    own = native_settings(str(folder))
    assert own == {**SIXTY_FOUR, "steps": 2, "cfg": 4.5, "guidance": "distilled"}
    rec = model_record(str(folder))
    assert rec["guidance"] == "distilled" and rec["guidance_embeds_scale"] == 0.1
    assert rec["scheduler"] == {
        "class": "SCMScheduler",
        "prediction_type": "trigflow",
        "sigma_data": 0.5,
    }
    model = load_for_sampling(str(folder), device="cpu", dtype="float32")
    kw = {"steps": 2, "height": 64, "width": 64}
    a = sample_images(model, ["a cat", "a dog"], [3, 4], cfg=4.5, **kw)
    b = sample_images(model, ["a dog"], [4], cfg=4.5, **kw)
    assert np.abs(pixels(a[1:]).astype(int) - pixels(b).astype(int)).max() <= 1
    # the scale reaches the transformer (one pass: the embedding, not a second unconditional pass)
    c = sample_images(model, ["a dog"], [4], cfg=1.0, **kw)
    assert not torch.equal(b, c)
    with pytest.raises(InputError, match="takes no negative prompt"):
        sample_images(model, ["a dog"], [4], cfg=4.5, negative_prompt="blurry", **kw)


def test_native_settings_are_the_familys_and_the_folders_size(
    tiny_sdxl_dir: Path, tiny_sana_dir: Path
) -> None:
    sdxl, sana = native_settings(str(tiny_sdxl_dir)), native_settings(str(tiny_sana_dir))
    assert sdxl == {**SIXTY_FOUR, "steps": 50, "cfg": 5.0, "guidance": "cfg"}
    assert sana == {**SIXTY_FOUR, "steps": 20, "cfg": 4.5, "guidance": "cfg"}


def test_model_record_names_what_the_family_needs(tiny_sdxl_dir: Path, tiny_sana_dir: Path) -> None:
    sdxl = model_record(str(tiny_sdxl_dir))
    assert sdxl["pipeline"] == "StableDiffusionXLPipeline" and sdxl["guidance"] == "cfg"
    assert sdxl["scheduler"]["class"] == "EulerDiscreteScheduler"
    assert sdxl["text_lengths"] == {"text_encoder": 77, "text_encoder_2": 77}
    assert sdxl["negative_prompt"] == "zeros when empty"
    sana = model_record(str(tiny_sana_dir))
    assert sana["scheduler"]["class"] == "DPMSolverMultistepScheduler"
    assert sana["scheduler"]["flow_shift"] == 3.0 and sana["scheduler"]["use_flow_sigmas"] is True
    assert sana["text_lengths"] == {"text_encoder": 300}


def test_sd3_keeps_its_backend(tiny_sd3_dir: Path) -> None:
    rec = model_record(str(tiny_sd3_dir))
    assert (
        rec["backend"] == "flowmodels.sd3:SD3" and rec["sampler"] == "flowmodels.sampling.rollout"
    )
    assert rec["scheduler"]["class"] == "FlowMatchEulerDiscreteScheduler"
    assert rec["scheduler"]["shift"] == 3.0
    assert "text_lengths" not in rec  # SD3's T5 length is the generation's t5_length
    assert not isinstance(load_for_sampling(str(tiny_sd3_dir), device="cpu"), PipelineModel)


def test_an_unsupported_pipeline_is_one_line_naming_what_is_supported(tmp_path: Path) -> None:
    folder = tmp_path / "kandinsky"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    with pytest.raises(InputError) as e:
        native_settings(str(folder))
    msg = str(e.value)
    assert "\n" not in msg and "'KandinskyPipeline' is not supported" in msg
    for cls_name in [*BACKENDS, *FAMILIES]:
        assert cls_name in msg


def test_training_an_evaluation_only_pipeline_is_refused(tiny_sdxl_dir: Path) -> None:
    with pytest.raises(InputError, match="can be evaluated but has no FlowModel backend"):
        load_model(str(tiny_sdxl_dir), device="cpu")
    with pytest.raises(InputError, match="no LoRA"):
        check_sampling(str(tiny_sdxl_dir), lora="some/lora")
    with pytest.raises(InputError, match="noise level must be 0"):
        check_sampling(str(tiny_sdxl_dir), noise_level=0.7)
    check_sampling(str(tiny_sdxl_dir))


def test_a_size_the_pipeline_cannot_make_is_one_line(tiny_sana_dir: Path) -> None:
    model = load_for_sampling(str(tiny_sana_dir), device="cpu", dtype="float32")
    with pytest.raises(InputError, match="not a multiple of 2"):
        sample_images(model, ["x"], [0], steps=1, cfg=4.5, height=63, width=64)


def test_missing_component_weights_are_listed_at_once(
    tiny_sdxl_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hc

    broken = tmp_path / "partial"
    shutil.copytree(tiny_sdxl_dir, broken)
    for part in ("unet", "vae"):
        for f in (broken / part).glob("*.safetensors"):
            f.unlink()
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_dir(str(broken))
    msg = str(e.value)
    assert "\n" not in msg and "text_encoder_2, unet, vae" in msg and "save_pretrained" in msg
    # the same folder as an interrupted download in the hub cache: how to download it
    install_in_hub_cache(broken, "tiny-org/tiny-sdxl", tmp_path / "hub")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelNotFoundError) as e:
        native_settings("tiny-org/tiny-sdxl")
    msg = str(e.value)
    assert "\n" not in msg and "text_encoder_2, unet, vae" in msg
    assert "`hf download tiny-org/tiny-sdxl`" in msg
