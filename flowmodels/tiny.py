"""Offline tiny-model kit: an SD3 pipeline built from configs, small enough to run anything on a CPU in seconds.

Hub weights cannot exist here, so tests (and the README's first command) build a randomly initialised SD3
pipeline with the real classes (MMDiT transformer, VAE, two CLIP text encoders with projection, optionally T5), or
a FLUX.1 one (``save_tiny_flux``), save it with ``save_pretrained``, and load it back through ``flowmodels.models.load_model``: the same loader users
call with a hub id. ``install_in_hub_cache`` lays the folder out as a Hugging Face cache snapshot so the hub-id
path is exercised offline too. Tokenizers are character-level CLIP BPE vocabularies generated here (no merges).

Numbers from a tiny model mean nothing; it exists to test plumbing and math.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

TINY_SD3_DIR_NAME = "tiny-sd3"
TINY_FLUX_DIR_NAME = "tiny-flux"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def write_char_clip_tokenizer(folder: Path, max_length: int = 77) -> None:
    """A CLIP tokenizer whose vocabulary is every byte character, alone and word-final; no merges.

    BOS and EOS sit at the end of the vocabulary (keeping BOS away from id 0, which padding would collide with).
    """
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    cfg = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "do_lower_case": True,
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))


def tiny_vae(blocks: int, **config: Any) -> Any:
    """An ``AutoencoderKL`` of 8 channels with 4 latent channels and ``2 ** (blocks - 1)`` downsampling;
    ``config`` sets the rest (scaling and shift factors, quant convs, upcasting)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=(8,) * blocks,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        **config,
    )


def tiny_sd3_components(seed: int = 0, *, with_t5: bool = False, workdir: Path) -> dict[str, Any]:
    """Randomly initialised SD3 components (about 0.5M parameters), deterministic given ``seed``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    hidden, proj = 32, 32
    joint = 2 * hidden if not with_t5 else 64
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=joint,
        caption_projection_dim=32,
        pooled_projection_dim=2 * proj,
        out_channels=4,
        pos_embed_max_size=32,
    )
    vae = tiny_vae(
        4,
        scaling_factor=1.5035,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    comps: dict[str, Any] = {"transformer": transformer, "vae": vae}
    vocab = 2 * 256 + 2
    for i, key in ((1, ""), (2, "_2")):
        tok_dir = workdir / f"tokenizer{key}"
        write_char_clip_tokenizer(tok_dir)
        comps[f"tokenizer{key}"] = CLIPTokenizer.from_pretrained(str(tok_dir))
        cfg = CLIPTextConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=37,
            num_hidden_layers=2 + i,
            num_attention_heads=4,
            projection_dim=proj,
            max_position_embeddings=77,
            bos_token_id=vocab - 2,
            eos_token_id=vocab - 1,
            pad_token_id=vocab - 1,
            hidden_act="gelu",
        )
        comps[f"text_encoder{key}"] = CLIPTextModelWithProjection(cfg)
    if with_t5:
        comps.update(_tiny_t5(joint, workdir))
    else:
        comps.update(text_encoder_3=None, tokenizer_3=None)
    comps["scheduler"] = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    return comps


def char_unigram_tokenizer(specials: list[str], *, model_max_length: int = 512) -> Any:
    """A fast character-level Unigram tokenizer (``tokenizers``): ``specials`` (pad, eos, unk, then an optional
    bos) take ids 0, 1, ..., then every printable ASCII character; unknown characters map to the unk token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)]
    vocab = [(t, 0.0) for t in specials] + [(c, -1.0) for c in chars]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    names = dict(zip(("pad_token", "eos_token", "unk_token", "bos_token"), specials, strict=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **names)
    fast.model_max_length = model_max_length
    return fast


def _tiny_t5(d_model: int, workdir: Path) -> dict[str, Any]:
    """A tiny T5 encoder with a character-level Unigram tokenizer made by the ``tokenizers`` library."""
    from transformers import T5Config, T5EncoderModel

    fast = char_unigram_tokenizer(["<pad>", "</s>", "<unk>"], model_max_length=512)
    config = T5Config(
        vocab_size=len(fast) + 10,
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
    )
    return {"text_encoder_3": T5EncoderModel(config), "tokenizer_3": fast}


def build_tiny_sd3(seed: int = 0, *, with_t5: bool = False, workdir: Path) -> Any:
    """An in-memory ``StableDiffusion3Pipeline`` of tiny random components."""
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(**tiny_sd3_components(seed, with_t5=with_t5, workdir=workdir))


def save_tiny_sd3(out_dir: str | Path, seed: int = 0, *, with_t5: bool = False) -> Path:
    """Build the tiny pipeline and ``save_pretrained`` it to ``out_dir`` (idempotent for the same seed)."""
    out = Path(out_dir)
    marker = out / "tiny.json"
    want = {"kind": "tiny-sd3", "seed": seed, "t5": with_t5, "version": 1}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return out
    if out.exists():
        shutil.rmtree(out)
    work = out.parent / f".{out.name}.tok"
    pipe = build_tiny_sd3(seed, with_t5=with_t5, workdir=work)
    pipe.save_pretrained(str(out))
    shutil.rmtree(work, ignore_errors=True)
    marker.write_text(json.dumps(want))
    return out


TINY_FLUX_SETTINGS = {"height": 64, "width": 64, "steps": 4, "cfg": 3.5, "guidance": "distilled"}


def tiny_flux_components(seed: int = 0, *, workdir: Path, guidance: bool = True) -> dict[str, Any]:
    """Randomly initialised FLUX.1 components: a FluxTransformer2DModel of one double- and one single-stream
    block (with FLUX.1-dev's guidance embedding unless ``guidance=False``), a CLIP text encoder (pooled), a tiny
    T5 (tokens), a 4-level VAE with FLUX's scaling and shift factors, and FLUX.1-dev's scheduler config."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    t5_dim, clip_dim = 32, 32
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x the 2 x 2 packing
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=t5_dim,
        pooled_projection_dim=clip_dim,
        guidance_embeds=guidance,
        axes_dims_rope=(4, 6, 6),
    )
    vae = tiny_vae(
        4,
        scaling_factor=0.3611,  # FLUX.1's VAE
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    write_char_clip_tokenizer(workdir / "tokenizer")
    vocab = 2 * 256 + 2
    clip = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=clip_dim,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
        hidden_act="gelu",
    )
    t5 = _tiny_t5(t5_dim, workdir)
    # FLUX.1-dev's scheduler_config.json: shift 3.0, dynamic shifting from 0.5 (256 tokens) to 1.15 (4096)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": CLIPTextModel(clip),
        "tokenizer": CLIPTokenizer.from_pretrained(str(workdir / "tokenizer")),
        "text_encoder_2": t5["text_encoder_3"],
        "tokenizer_2": t5["tokenizer_3"],
        "scheduler": scheduler,
    }


def save_tiny_flux(out_dir: str | Path, seed: int = 0, *, guidance: bool = True) -> Path:
    """Build a tiny ``FluxPipeline`` and ``save_pretrained`` it to ``out_dir`` (idempotent for the same seed),
    with a ``sampling.json`` declaring its own settings (64 px, 4 steps, distilled guidance 3.5)."""
    from diffusers import FluxPipeline

    out = Path(out_dir)
    marker = out / "tiny.json"
    want = {"kind": "tiny-flux", "seed": seed, "guidance": guidance, "version": 1}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return out
    if out.exists():
        shutil.rmtree(out)
    work = out.parent / f".{out.name}.tok"
    pipe = FluxPipeline(**tiny_flux_components(seed, workdir=work, guidance=guidance))
    pipe.save_pretrained(str(out))
    shutil.rmtree(work, ignore_errors=True)
    settings = (
        TINY_FLUX_SETTINGS if guidance else {**TINY_FLUX_SETTINGS, "cfg": 1.0, "guidance": "cfg"}
    )
    (out / "sampling.json").write_text(json.dumps(settings))
    marker.write_text(json.dumps(want))
    return out


def install_in_hub_cache(folder: str | Path, repo_id: str, cache_dir: str | Path) -> Path:
    """Copy a saved model into a Hugging Face cache layout so ``repo_id`` resolves offline from ``cache_dir``."""
    cache = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    snap = cache / "snapshots" / revision
    if snap.exists():
        shutil.rmtree(snap)
    shutil.copytree(folder, snap)
    (cache / "refs").mkdir(parents=True, exist_ok=True)
    (cache / "refs" / "main").write_text(revision)
    return snap


def default_tiny_dir() -> Path:
    """Where the demo keeps its tiny model: ``$FLOW_OPD_HOME/tiny-sd3`` (default ``~/.cache/flow-opd``)."""
    import os

    home = Path(os.environ.get("FLOW_OPD_HOME", Path.home() / ".cache" / "flow-opd"))
    return home / TINY_SD3_DIR_NAME


def default_tiny_flux_dir() -> Path:
    """Where the tiny FLUX lives beside the tiny SD3: ``$FLOW_OPD_HOME/tiny-flux``."""
    return default_tiny_dir().parent / TINY_FLUX_DIR_NAME
