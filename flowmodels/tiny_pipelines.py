"""Tiny SDXL, SANA, SANA-Sprint and PixArt (Alpha, Sigma) pipelines built from configs, for offline tests of the evaluation-only path.

Like ``flowmodels.tiny`` (the tiny SD3): the real diffusers classes with a few thousand random weights, saved with
``save_pretrained`` and loaded back through ``flowmodels.models`` exactly as a hub checkpoint is. Tokenizers are the
character-level ones of ``flowmodels.tiny``. Each pipeline's default size (its denoiser's ``sample_size`` times
the VAE's scale) is 64 px, so the pipelines' own defaults run on a CPU in a second. Numbers from them mean nothing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from flowmodels.tiny import _tiny_t5, char_unigram_tokenizer, tiny_vae, write_char_clip_tokenizer


def tiny_sdxl_components(seed: int = 0, *, workdir: Path) -> dict[str, Any]:
    """SDXL: a UNet with text-time addition embeddings, two CLIP text encoders (the second with projection),
    ``AutoencoderKL`` (4x) and ``EulerDiscreteScheduler`` with SDXL's schedule."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    torch.manual_seed(seed)
    hidden, proj, time_dim = 16, 16, 8
    unet = UNet2DConditionModel(
        sample_size=16,  # x 4 (VAE) = 64 px, the pipeline's default size
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=1,
        cross_attention_dim=2 * hidden,  # both encoders' penultimate states, concatenated
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + proj,  # 6 size/crop ids + pooled text
    )
    comps: dict[str, Any] = {"unet": unet, "vae": tiny_vae(3, force_upcast=False)}
    vocab = 2 * 256 + 2
    for key, cls in (("", CLIPTextModel), ("_2", CLIPTextModelWithProjection)):
        tok_dir = workdir / f"tokenizer{key}"
        write_char_clip_tokenizer(tok_dir)
        comps[f"tokenizer{key}"] = CLIPTokenizer.from_pretrained(str(tok_dir))
        cfg = CLIPTextConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            projection_dim=proj,
            max_position_embeddings=77,
            bos_token_id=vocab - 2,
            eos_token_id=vocab - 1,
            pad_token_id=vocab - 1,
            hidden_act="gelu",
        )
        comps[f"text_encoder{key}"] = cls(cfg)
    comps["scheduler"] = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )
    comps.update(image_encoder=None, feature_extractor=None)
    return comps


def tiny_sana_components(seed: int = 0, *, workdir: Path, sprint: bool = False) -> dict[str, Any]:
    """SANA: ``SanaTransformer2DModel``, a tiny Gemma2 text encoder, ``AutoencoderDC`` (2x) and SANA's
    flow-matching scheduler (DPM-Solver++ on flow sigmas, shift 3). ``sprint``: SANA-Sprint's guidance-distilled
    transformer (guidance embedding, RMS q/k norm) and its ``SCMScheduler``."""
    from diffusers import (
        AutoencoderDC,
        DPMSolverMultistepScheduler,
        SanaTransformer2DModel,
        SCMScheduler,
    )
    from transformers import Gemma2Config, Gemma2Model

    del workdir  # the Gemma tokenizer is made in memory
    torch.manual_seed(seed)
    sprint_args: dict[str, Any] = (
        {"guidance_embeds": True, "guidance_embeds_scale": 0.1, "qk_norm": "rms_norm_across_heads"}
        if sprint
        else {}
    )
    tokenizer = char_unigram_tokenizer(["<pad>", "<eos>", "<unk>", "<bos>"], model_max_length=8192)
    text_dim = 16
    transformer = SanaTransformer2DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_cross_attention_heads=2,
        cross_attention_head_dim=8,
        cross_attention_dim=16,
        caption_channels=text_dim,
        sample_size=32,  # x 2 (VAE) = 64 px, the pipeline's default size
        patch_size=1,
        **sprint_args,
    )
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)),
        decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=(1, 1),
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    text_encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=len(tokenizer) + 4,
            hidden_size=text_dim,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=8192,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=3,
        )
    )
    scheduler = (
        SCMScheduler()
        if sprint
        else DPMSolverMultistepScheduler(
            use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0
        )
    )
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def tiny_sana_sprint_components(seed: int = 0, *, workdir: Path) -> dict[str, Any]:
    """SANA-Sprint: ``tiny_sana_components`` with the guidance-distilled transformer and ``SCMScheduler``."""
    return tiny_sana_components(seed, workdir=workdir, sprint=True)


def tiny_pixart_sigma_components(seed: int = 0, *, workdir: Path) -> dict[str, Any]:
    """PixArt-Sigma: ``PixArtTransformer2DModel`` (learned variance), the tiny T5 of ``flowmodels.tiny``,
    ``AutoencoderKL`` (4x) and ``DPMSolverMultistepScheduler``."""
    from diffusers import DPMSolverMultistepScheduler, PixArtTransformer2DModel

    del workdir
    torch.manual_seed(seed)
    text = _tiny_t5(32, Path("."))
    transformer = PixArtTransformer2DModel(
        sample_size=16,  # x 4 (VAE) = 64 px
        num_layers=1,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=16,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    return {
        "transformer": transformer,
        "vae": tiny_vae(3, force_upcast=False),
        "text_encoder": text["text_encoder_3"],
        "tokenizer": text["tokenizer_3"],
        "scheduler": DPMSolverMultistepScheduler(),
    }


# kind -> (pipeline class, components builder)
TINY_PIPELINES: dict[str, tuple[str, Callable[..., dict[str, Any]]]] = {
    "sdxl": ("StableDiffusionXLPipeline", tiny_sdxl_components),
    "sana": ("SanaPipeline", tiny_sana_components),
    "sana-sprint": ("SanaSprintPipeline", tiny_sana_sprint_components),
    "pixart-sigma": ("PixArtSigmaPipeline", tiny_pixart_sigma_components),
    # PixArt-Alpha takes the same components (its own default token length, 120)
    "pixart-alpha": ("PixArtAlphaPipeline", tiny_pixart_sigma_components),
}


def save_tiny_pipeline(kind: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build the tiny ``kind`` pipeline (a key of ``TINY_PIPELINES``) and ``save_pretrained`` it to
    ``out_dir`` (idempotent for the same seed)."""
    import diffusers

    if kind not in TINY_PIPELINES:
        raise ValueError(f"unknown tiny pipeline {kind!r}; one of {', '.join(TINY_PIPELINES)}")
    out = Path(out_dir)
    marker = out / "tiny.json"
    want = {"kind": f"tiny-{kind}", "seed": seed, "version": 1}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return out
    if out.exists():
        shutil.rmtree(out)
    work = out.parent / f".{out.name}.tok"
    cls_name, build = TINY_PIPELINES[kind]
    pipe = getattr(diffusers, cls_name)(**build(seed, workdir=work))
    pipe.save_pretrained(str(out))
    shutil.rmtree(work, ignore_errors=True)
    marker.write_text(json.dumps(want))
    return out
