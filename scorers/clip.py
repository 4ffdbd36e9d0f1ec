"""One CLIP code path for pickscore, hps, clipscore and aesthetic (and anyone else who needs CLIP).

The model is always transformers' ``CLIPModel``. Two loaders fill it:

* ``load_hf_clip(folder)``: a Hugging Face CLIP folder (PickScore_v1, openai/clip-vit-large-patch14). Loaded models
  are cached per (folder, device, dtype), so clipscore and aesthetic share one CLIP-L instance in a process.
* ``load_openclip(checkpoint)``: an open_clip state dict (HPS v2.1 is open_clip ``ViT-H-14``), whose keys
  ``openclip_to_hf`` maps onto CLIPModel names (fused ``in_proj`` split into q/k/v, ``proj`` transposed). open_clip
  itself needs torchvision, which this project cannot install, so we never import it.

Preprocessing is ours, in PIL and torch, because each reference differs in small ways that move numbers:

* ``center_crop_batch``: resize the short side to ``size`` (PIL bicubic, long side ``int(size*long/short)``), centre
  crop, /255, OpenAI mean/std. ``rounding="floor"`` is transformers' CLIPImageProcessor (PickScore, Flow-GRPO
  aesthetic, torchmetrics CLIPScore); ``"round"`` is torchvision's CenterCrop (the ``clip`` package, ImageReward).
* ``resize_max_pad``: HPS's ResizeMaxSize on the [0,1] tensor: scale the long side to ``size`` (bicubic, Python
  ``round`` for the short side), zero-pad to a square with ``pad//2`` on the left/top, then normalise.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from flowbase.errors import InputError

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


# ---------------------------------------------------------------------------------------------------------------
# preprocessing (pure: PIL in, tensors out)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> float32 [3, H, W] in [0, 1] (torchvision ToTensor)."""
    a = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Subtract the OpenAI CLIP mean and divide by its std, per channel. x: [..., 3, H, W]."""
    mean = torch.tensor(OPENAI_MEAN, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(OPENAI_STD, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so the short side is ``size``; the long side is ``int(size * long / short)``."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)


def crop_offsets(
    height: int, width: int, size: int, rounding: Literal["floor", "round"]
) -> tuple[int, int]:
    """(top, left) of a centred ``size`` crop; torchvision rounds half-way cases, transformers floors."""
    if rounding == "floor":
        return (height - size) // 2, (width - size) // 2
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def center_crop_batch(
    images: Sequence[Image.Image], size: int, rounding: Literal["floor", "round"] = "floor"
) -> torch.Tensor:
    """RGB images -> normalised [B, 3, size, size]: short-side resize, centre crop, /255, mean/std."""
    out = []
    for image in images:
        x = to_tensor(resize_short_side(image, size))
        top, left = crop_offsets(x.shape[1], x.shape[2], size, rounding)
        out.append(normalize(x[:, top : top + size, left : left + size]))
    return torch.stack(out) if out else torch.empty(0, 3, size, size)


def resize_max_pad(x: torch.Tensor, size: int, antialias: bool = True) -> torch.Tensor:
    """HPS ResizeMaxSize on a [3, H, W] tensor in [0, 1]: long side -> size, zero-pad centred to a square.

    The new short side is Python ``round(dim * scale)`` (banker's rounding, as the reference). When the long side
    already equals ``size`` the reference skips resize and pad and would crash on a non-square input; we pad.
    """
    _, h, w = x.shape
    scale = size / float(max(h, w))
    new_h, new_w = round(h * scale), round(w * scale)
    if (new_h, new_w) != (h, w):
        # torchvision's tensor resize: bicubic, align_corners False, antialias (default since 0.17), no clamp
        x = F.interpolate(
            x[None], size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=antialias
        )[0]
    pad_h, pad_w = size - new_h, size - new_w
    # F.pad's last-dim-first order: (left, right, top, bottom)
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)


def resize_max_pad_batch(
    images: Sequence[Image.Image], size: int, antialias: bool = True
) -> torch.Tensor:
    """RGB images -> normalised [B, 3, size, size] the HPS way (ToTensor, ResizeMaxSize, Normalize)."""
    out = [normalize(resize_max_pad(to_tensor(im), size, antialias)) for im in images]
    return torch.stack(out) if out else torch.empty(0, 3, size, size)


# ---------------------------------------------------------------------------------------------------------------
# models


def _features(out: Any) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output with pooler_output (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def unit(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dim; a zero vector stays zero (divided by 1), never NaN."""
    n = x.norm(dim=-1, keepdim=True)
    return x / torch.where(n == 0, torch.ones_like(n), n)


@torch.no_grad()
def image_embeds(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Projected, L2-normalised image embeddings [B, D] in float32."""
    p = pixels.to(device=model.device, dtype=model.dtype)
    return unit(_features(model.get_image_features(pixel_values=p)).float())


@torch.no_grad()
def text_embeds(model: Any, tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
    """Projected, L2-normalised text embeddings [B, D] in float32; prompts truncated to the context length."""
    max_len = int(model.config.text_config.max_position_embeddings)
    tok = tokenizer(
        list(prompts), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
    )
    out = model.get_text_features(
        input_ids=tok["input_ids"].to(model.device),
        attention_mask=tok["attention_mask"].to(model.device),
    )
    return unit(_features(out).float())


def text_embeds_unique(
    model: Any, tokenizer: Any, prompts: Sequence[str], batch_size: int
) -> torch.Tensor:
    """Text embeddings for every prompt, encoding each distinct prompt once (GRPO groups repeat them)."""
    uniq = list(dict.fromkeys(prompts))
    parts = [
        text_embeds(model, tokenizer, uniq[i : i + batch_size])
        for i in range(0, len(uniq), batch_size)
    ]
    table = torch.cat(parts) if parts else torch.empty(0)
    index = {p: i for i, p in enumerate(uniq)}
    return table[[index[p] for p in prompts]] if prompts else table


def pair_embeds(
    model: Any,
    tokenizer: Any,
    rgb: Sequence[Image.Image],
    prompts: Sequence[str],
    size: int,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit image and text embeddings [B, D] of (image, prompt) pairs: images centre-cropped to ``size`` in
    batches of ``batch_size``, each distinct prompt encoded once."""
    txt = text_embeds_unique(model, tokenizer, prompts, batch_size)
    img = torch.cat(
        [
            image_embeds(model, center_crop_batch(rgb[i : i + batch_size], size))
            for i in range(0, len(rgb), batch_size)
        ]
    )
    return img, txt


@functools.lru_cache(maxsize=4)
def _load_hf_clip_cached(folder: str, device: str, dtype: torch.dtype) -> Any:
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(folder)
    model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    log.info("loaded CLIP from %s on %s (%s)", folder, device, dtype)
    return model


def load_hf_clip(folder: str | Path, device: torch.device, dtype: torch.dtype) -> Any:
    """A transformers CLIPModel from a local folder, eval mode, frozen; shared per (folder, device, dtype)."""
    return _load_hf_clip_cached(str(Path(folder).resolve()), str(device), dtype)


def load_tokenizer(folder: str | Path) -> Any:
    """The CLIP tokenizer saved in ``folder`` (tokenizer.json or vocab.json + merges.txt)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


# ---------------------------------------------------------------------------------------------------------------
# open_clip state dicts -> CLIPModel

_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_PARTS = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_TOP = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {
    "visual.proj": "visual_projection.weight",
    "text_projection": "text_projection.weight",
}
_IGNORED = {
    "attn_mask",
    "visual.attn_mask",
}  # open_clip's causal mask buffer (non-persistent in new versions)


class CheckpointFormatError(InputError):
    """A checkpoint whose keys do not fit the architecture we map it onto."""


def openclip_to_hf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an open_clip CLIP state dict (ViT image tower, text transformer) to transformers CLIPModel keys."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, v in state_dict.items():
        key = key.removeprefix("module.")
        if key in _IGNORED:
            continue
        if key in _TOP:
            out[_TOP[key]] = v
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = v.t().contiguous()  # open_clip: x @ proj; nn.Linear: x @ W.T
        elif m := _BLOCK.match(key):
            tower = "vision_model" if m.group(1) else "text_model"
            prefix = f"{tower}.encoder.layers.{m.group(2)}."
            part = m.group(3)
            if part in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = part.rsplit("_", 1)[1]  # weight | bias
                q, k, val = v.chunk(3, dim=0)  # nn.MultiheadAttention packs [q; k; v] along dim 0
                out[prefix + f"self_attn.q_proj.{kind}"] = q.contiguous()
                out[prefix + f"self_attn.k_proj.{kind}"] = k.contiguous()
                out[prefix + f"self_attn.v_proj.{kind}"] = val.contiguous()
            elif part in _BLOCK_PARTS:
                out[prefix + _BLOCK_PARTS[part]] = v
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise CheckpointFormatError(
            f"{len(unknown)} keys are not part of a plain open_clip ViT CLIP: {shown}"
        )
    return out


def _count_blocks(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    pat = re.compile(rf"^{re.escape(prefix)}transformer\.resblocks\.(\d+)\.")
    idx = {int(m.group(1)) for k in state_dict if (m := pat.match(k))}
    return max(idx) + 1 if idx else 0


def clip_config_from_openclip(
    state_dict: dict[str, torch.Tensor],
    vision_heads: int,
    text_heads: int,
    hidden_act: str = "gelu",
) -> Any:
    """A CLIPConfig whose sizes are read off an open_clip state dict (head counts cannot be, so pass them)."""
    from transformers import CLIPConfig

    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    try:
        conv = sd["visual.conv1.weight"]  # [width, 3, patch, patch]
        v_width, patch = int(conv.shape[0]), int(conv.shape[-1])
        n_pos = int(sd["visual.positional_embedding"].shape[0])  # grid**2 + 1
        grid = round((n_pos - 1) ** 0.5)
        embed_dim = int(sd["visual.proj"].shape[1])
        t_vocab, t_width = (int(s) for s in sd["token_embedding.weight"].shape)
        context = int(sd["positional_embedding"].shape[0])
        v_mlp = int(sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0])
        t_mlp = int(sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0])
    except KeyError as e:
        raise CheckpointFormatError(
            f"not an open_clip ViT CLIP state dict (no {e.args[0]!r})"
        ) from None
    if grid * grid != n_pos - 1:
        raise CheckpointFormatError(
            f"visual.positional_embedding has {n_pos} rows, not grid**2 + 1"
        )
    return CLIPConfig(
        projection_dim=embed_dim,
        text_config={
            "vocab_size": t_vocab,
            "hidden_size": t_width,
            "intermediate_size": t_mlp,
            "num_hidden_layers": _count_blocks(sd, ""),
            "num_attention_heads": text_heads,
            "max_position_embeddings": context,
            "hidden_act": hidden_act,
            "layer_norm_eps": 1e-5,
            "projection_dim": embed_dim,
            # 2 selects transformers' legacy pooling: the argmax token id (EOT is the largest id),
            # which is exactly open_clip's text_global_pool(pool_type="argmax")
            "eos_token_id": 2,
            "bos_token_id": t_vocab - 2,  # CLIP's <|startoftext|>; unused by the forward pass
            "pad_token_id": t_vocab - 1,
        },
        vision_config={
            "hidden_size": v_width,
            "intermediate_size": v_mlp,
            "num_hidden_layers": _count_blocks(sd, "visual."),
            "num_attention_heads": vision_heads,
            "image_size": grid * patch,
            "patch_size": patch,
            "hidden_act": hidden_act,
            "layer_norm_eps": 1e-5,
            "projection_dim": embed_dim,
        },
    )


def read_checkpoint(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors from a .pt/.pth/.bin/.safetensors file; ``{"state_dict": ...}`` wrappers are unwrapped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=not allow_pickle)
    except Exception as e:
        hint = "" if allow_pickle else " (if you trust the file, pass allow_pickle=True)"
        raise CheckpointFormatError(
            f"{path}: cannot be read as a checkpoint ({type(e).__name__}){hint}"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointFormatError(f"{path}: does not hold a state dict of tensors")
    return obj


def load_openclip(
    checkpoint: str | Path,
    vision_heads: int,
    text_heads: int,
    device: torch.device,
    dtype: torch.dtype,
    allow_pickle: bool = False,
) -> Any:
    """A CLIPModel filled from an open_clip checkpoint file; every parameter must come from the file."""
    from transformers import CLIPModel

    sd = read_checkpoint(checkpoint, allow_pickle=allow_pickle)
    config = clip_config_from_openclip(sd, vision_heads, text_heads)
    model = CLIPModel(config)
    mapped = openclip_to_hf(sd)
    result = model.load_state_dict(mapped, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise CheckpointFormatError(
            f"{checkpoint}: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    log.info("loaded open_clip checkpoint %s on %s (%s)", checkpoint, device, dtype)
    return model
