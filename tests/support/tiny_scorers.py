"""Tiny, offline stand-ins for scorer weights, built from configs and saved in the official layouts.

Each builder writes files the way the real hub repo / checkpoint lays them out, so the scorers load them through
their real loaders: a transformers CLIP folder (PickScore, CLIP-L), a CLIP BPE tokenizer folder, an open_clip state
dict file (HPS), the LAION aesthetic head (.pth), and an ImageReward checkpoint (ImageReward.pt + med_config.json)
with a BERT WordPiece vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def save_clip_tokenizer(folder: Path) -> Path:
    """A CLIP BPE tokenizer over single letters (+ "th", "the"); specials get the largest ids, as in CLIP."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    for c in LETTERS:
        vocab[c] = len(vocab)
    for c in LETTERS:
        vocab[c + "</w>"] = len(vocab)
    vocab["th"] = len(vocab)
    vocab["the</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    return folder


CLIP_VOCAB = (
    2 * len(LETTERS) + 4
)  # letters, letters</w>, th, the</w>, <|startoftext|>, <|endoftext|>


def tiny_clip_config(hidden_act: str = "gelu", image_size: int = 28, patch: int = 14) -> object:
    """A CLIPConfig a few thousand parameters big."""
    from transformers import CLIPConfig

    return CLIPConfig(
        projection_dim=12,
        logit_scale_init_value=2.3,
        text_config={
            "vocab_size": CLIP_VOCAB,
            "hidden_size": 16,
            "intermediate_size": 24,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "hidden_act": hidden_act,
            "eos_token_id": 2,
            "bos_token_id": CLIP_VOCAB - 2,
            "pad_token_id": CLIP_VOCAB - 1,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 24,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch,
            "hidden_act": hidden_act,
        },
    )


def save_tiny_hf_clip(
    folder: Path, seed: int = 0, hidden_act: str = "gelu", with_tokenizer: bool = True
) -> Path:
    """A random tiny transformers CLIPModel saved with save_pretrained (plus tokenizer files)."""
    from transformers import CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel(tiny_clip_config(hidden_act))
    with torch.no_grad():  # move weights off their tiny init so embeddings differ across inputs
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        model.logit_scale.fill_(2.3)
    model.save_pretrained(folder)
    if with_tokenizer:
        save_clip_tokenizer(folder)
    return folder


def tiny_openclip_state_dict(
    seed: int = 0,
    width: int = 16,
    text_width: int = 16,
    layers: int = 2,
    text_layers: int = 2,
    patch: int = 14,
    grid: int = 2,
    embed_dim: int = 12,
    context: int = 16,
    vocab: int = CLIP_VOCAB,
) -> dict[str, torch.Tensor]:
    """Random tensors under open_clip's CLIP key names and shapes (VisionTransformer + text Transformer)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, s: float = 0.3) -> torch.Tensor:
        return s * torch.randn(*shape, generator=g)

    def ln(prefix: str, d: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1 + r(d, s=0.1), f"{prefix}.bias": r(d, s=0.1)}

    def block(prefix: str, d: int) -> dict[str, torch.Tensor]:
        out = {**ln(f"{prefix}.ln_1", d), **ln(f"{prefix}.ln_2", d)}
        out[f"{prefix}.attn.in_proj_weight"] = r(3 * d, d)
        out[f"{prefix}.attn.in_proj_bias"] = r(3 * d, s=0.1)
        out[f"{prefix}.attn.out_proj.weight"] = r(d, d)
        out[f"{prefix}.attn.out_proj.bias"] = r(d, s=0.1)
        out[f"{prefix}.mlp.c_fc.weight"] = r(4 * d, d)
        out[f"{prefix}.mlp.c_fc.bias"] = r(4 * d, s=0.1)
        out[f"{prefix}.mlp.c_proj.weight"] = r(d, 4 * d)
        out[f"{prefix}.mlp.c_proj.bias"] = r(d, s=0.1)
        return out

    sd: dict[str, torch.Tensor] = {
        "visual.class_embedding": r(width),
        "visual.positional_embedding": r(grid * grid + 1, width),
        "visual.conv1.weight": r(width, 3, patch, patch, s=0.05),
        **ln("visual.ln_pre", width),
        **ln("visual.ln_post", width),
        "visual.proj": r(width, embed_dim),
        "token_embedding.weight": r(vocab, text_width),
        "positional_embedding": r(context, text_width),
        **ln("ln_final", text_width),
        "text_projection": r(text_width, embed_dim),
        "logit_scale": torch.tensor(4.6052),
        "attn_mask": torch.full((context, context), float("-inf")).triu_(1),
    }
    for i in range(layers):
        sd.update(block(f"visual.transformer.resblocks.{i}", width))
    for i in range(text_layers):
        sd.update(block(f"transformer.resblocks.{i}", text_width))
    return sd


def save_tiny_aesthetic_head(path: Path, in_dim: int = 12, seed: int = 0) -> Path:
    """A random head with the LAION v2 layout (keys layers.{0,2,4,6,7}) saved with torch.save."""
    g = torch.Generator().manual_seed(seed)
    dims = [in_dim, 1024, 128, 64, 16, 1]
    sd = {}
    for idx, a, b in zip((0, 2, 4, 6, 7), dims[:-1], dims[1:], strict=True):
        sd[f"layers.{idx}.weight"] = torch.randn(b, a, generator=g) / a**0.5
        sd[f"layers.{idx}.bias"] = 0.1 * torch.randn(b, generator=g)
    torch.save(sd, path)
    return path


BERT_WORDS = ["the", "cat", "dog", "with", "two", "horns", "on", "its", "head", "red", "blue"]


def save_bert_tokenizer(folder: Path) -> Path:
    """A WordPiece vocab.txt in bert-base-uncased's layout ([PAD]=0, [UNK], [CLS], [SEP], [MASK], words)."""
    folder.mkdir(parents=True, exist_ok=True)
    toks = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *BERT_WORDS,
        *LETTERS,
        *("##" + c for c in LETTERS),
    ]
    (folder / "vocab.txt").write_text("\n".join(toks) + "\n")
    return folder


BERT_VOCAB = 5 + len(BERT_WORDS) + 2 * len(LETTERS)


def save_tiny_imagereward(folder: Path, seed: int = 0) -> Path:
    """ImageReward.pt + med_config.json in the official key layout (blip.visual_encoder.*, blip.text_encoder.*,
    mlp.layers.*), sized tiny: ViT patch 16 on 32 px (4 patches), width 128 (two 64-d heads), BERT width 32."""
    from scorers.blip import BlipImageReward, MedConfig

    folder.mkdir(parents=True, exist_ok=True)
    med = {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 48,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 40,
        "model_type": "bert",
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "pad_token_id": 0,
        "type_vocab_size": 2,
        "vocab_size": BERT_VOCAB + 2,  # + [DEC], [ENC] as BLIP's init_tokenizer adds them
        "encoder_width": 32,  # overwritten by the vision width, as BLIP does
        "add_cross_attention": True,
    }
    (folder / "med_config.json").write_text(json.dumps(med))
    torch.manual_seed(seed)
    model = BlipImageReward(
        MedConfig.from_dict(med), vit_width=128, vit_depth=2, image_size=32, patch=16
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    sd = model.state_dict()
    # the official file also carries BLIP heads the scorer does not use (loaded with strict=False upstream)
    sd["blip.vision_proj.weight"] = torch.randn(8, 128)
    sd["blip.text_proj.weight"] = torch.randn(8, 32)
    torch.save(sd, folder / "ImageReward.pt")
    return folder
