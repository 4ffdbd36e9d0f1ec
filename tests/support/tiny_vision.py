"""Tiny vision models for scorer tests, built from configs and saved to disk (loaded back through the real
loaders): Mask2Former (Swin backbone, 80 COCO labels), CLIP (character-level tokenizer) and BLIP VQA (a small
WordPiece vocabulary with yes/no and BLIP's [DEC]/[ENC] tokens). Numbers from them mean nothing."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_mask2former(folder: Path, num_labels: int = 80) -> Path:
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    torch.manual_seed(0)
    backbone = SwinConfig(
        image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
        window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    cfg = Mask2FormerConfig(
        backbone_config=backbone, num_labels=num_labels, hidden_dim=32, num_queries=8, encoder_layers=1,
        decoder_layers=2, encoder_feedforward_dim=32, dim_feedforward=32, mask_feature_size=32,
        feature_size=32, num_attention_heads=2, common_stride=4,
    )  # fmt: skip
    Mask2FormerForUniversalSegmentation(cfg).save_pretrained(folder)
    return folder


def save_tiny_clip(folder: Path) -> Path:
    from transformers import CLIPConfig, CLIPModel

    from flowmodels.tiny import write_char_clip_tokenizer

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={"vocab_size": 514, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 512,
                     "eos_token_id": 513, "pad_token_id": 513},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(cfg).save_pretrained(folder)
    write_char_clip_tokenizer(folder)
    return folder


BLIP_WORDS = [
    "yes",
    "no",
    "a",
    "an",
    "the",
    "red",
    "blue",
    "green",
    "car",
    "bowl",
    "bench",
    "cat",
    "dog",
    "?",
]


def save_tiny_blip(folder: Path) -> Path:
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *BLIP_WORDS, "[DEC]", "[ENC]"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BlipConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "encoder_hidden_size": 32,
                     "bos_token_id": len(vocab) - 2, "pad_token_id": 0, "sep_token_id": 3,
                     "max_position_embeddings": 64},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
    )  # fmt: skip
    BlipForQuestionAnswering(cfg).save_pretrained(folder)
    return folder
