"""imagereward: z-normalisation, 35-token truncation, head collapse, official key names, golden forward, loader.

The golden forward is written here from the raw checkpoint tensors with functional ops, following BLIP's vit.py and
med.py (the upstream code cannot run here), so it checks both the key mapping and the module code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from scorers.hub import WeightsNotFoundError
from tests.support.tiny_scorers import BERT_VOCAB, save_bert_tokenizer, save_tiny_imagereward

IMAGES = [
    Image.fromarray(np.random.default_rng(s).integers(0, 256, (h, w, 3), dtype=np.uint8))
    for s, (w, h) in enumerate([(40, 30), (33, 50), (32, 32)])
]
PROMPTS = ["a red cat with two horns", "the blue dog", "a red cat with two horns"]
MEAN = np.array((0.48145466, 0.4578275, 0.40821073), dtype=np.float32)[:, None, None]
STD = np.array((0.26862954, 0.26130258, 0.27577711), dtype=np.float32)[:, None, None]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tiny_ir")
    return {"weights": save_tiny_imagereward(d / "ir"), "tok": save_bert_tokenizer(d / "bert")}


@pytest.fixture(scope="module")
def scorer(tiny: dict[str, Path]):  # noqa: ANN201
    from scorers.imagereward import ImageReward

    return ImageReward(weights=str(tiny["weights"]), tokenizer=str(tiny["tok"]), device="cpu")


def test_z_normalisation_constants():
    from scorers.imagereward import MEAN as M
    from scorers.imagereward import STD as S
    from scorers.imagereward import normalize_reward

    assert (M, S) == (0.16717362830052426, 1.0333394966054072)
    y = torch.tensor([M, M + S, M - 2 * S], dtype=torch.float64)
    torch.testing.assert_close(
        normalize_reward(y), torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    )


def test_prompts_are_padded_and_truncated_to_35_tokens(scorer):
    from scorers.imagereward import tokenize

    long = " ".join(["cat"] * 60)
    ids, mask = tokenize(scorer.tokenizer, [long, "a dog"])
    assert ids.shape == mask.shape == (2, 35)
    vocab = (Path(scorer.tokenizer.name_or_path) / "vocab.txt").read_text().split()
    cls, sep, pad, cat, a, dog = (
        vocab.index(t) for t in ("[CLS]", "[SEP]", "[PAD]", "cat", "a", "dog")
    )
    assert ids[0].tolist() == [cls] + [cat] * 33 + [sep] and mask[0].sum() == 35
    assert ids[1, :4].tolist() == [cls, a, dog, sep] and ids[1, 4:].eq(pad).all()
    assert mask[1].tolist() == [1] * 4 + [0] * 31
    # BLIP's init_tokenizer appends [DEC] and [ENC] after the WordPiece vocabulary; [CLS] is not replaced by [ENC]
    assert scorer.tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [
        BERT_VOCAB,
        BERT_VOCAB + 1,
    ]
    assert scorer.tokenizer("Cat")["input_ids"] == [cls, cat, sep]  # uncased


def test_head_collapses_to_one_affine_map():
    from scorers.blip import RewardHead

    torch.manual_seed(0)
    head = RewardHead(8).eval()
    w = torch.eye(8, dtype=torch.float64)
    b = torch.zeros(8, dtype=torch.float64)
    for lin in (m for m in head.layers if isinstance(m, torch.nn.Linear)):
        w, b = lin.weight.double() @ w, lin.weight.double() @ b + lin.bias.double()
    h = torch.randn(4, 8)
    torch.testing.assert_close(head(h).double(), (h.double() @ w.T + b)[:, 0], atol=1e-5, rtol=1e-5)
    head.train()  # dropout is the only non-affine part, and it is off at eval
    assert not torch.allclose(head(h.repeat(64, 1)), head.eval()(h.repeat(64, 1)))


def test_state_dict_keys_are_the_official_names(tiny):
    sd = torch.load(tiny["weights"] / "ImageReward.pt")
    for key in [
        "blip.visual_encoder.cls_token",
        "blip.visual_encoder.pos_embed",
        "blip.visual_encoder.patch_embed.proj.weight",
        "blip.visual_encoder.blocks.1.attn.qkv.weight",
        "blip.visual_encoder.blocks.1.attn.qkv.bias",
        "blip.visual_encoder.blocks.0.mlp.fc2.bias",
        "blip.visual_encoder.norm.weight",
        "blip.text_encoder.embeddings.word_embeddings.weight",
        "blip.text_encoder.embeddings.position_embeddings.weight",
        "blip.text_encoder.embeddings.LayerNorm.weight",
        "blip.text_encoder.encoder.layer.1.attention.self.query.weight",
        "blip.text_encoder.encoder.layer.1.attention.output.LayerNorm.bias",
        "blip.text_encoder.encoder.layer.0.crossattention.self.key.weight",
        "blip.text_encoder.encoder.layer.0.crossattention.self.value.bias",
        "blip.text_encoder.encoder.layer.0.intermediate.dense.weight",
        "blip.text_encoder.encoder.layer.0.output.LayerNorm.weight",
        "mlp.layers.0.weight",
        "mlp.layers.7.bias",
    ]:
        assert key in sd, key
    # cross-attention keys/values read the vision width (encoder_width is overwritten by it, as BLIP does)
    assert sd["blip.text_encoder.encoder.layer.0.crossattention.self.key.weight"].shape == (32, 128)
    assert not any("token_type" in k or "pooler" in k for k in sd)


# ------------------------------------------------------------------------------------------- golden forward


def _ln(x: torch.Tensor, sd: dict, p: str, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd[f"{p}.weight"], sd[f"{p}.bias"], eps)


def _lin(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    return F.linear(x, sd[f"{p}.weight"], sd[f"{p}.bias"])


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    b, L, c = x.shape
    return x.view(b, L, n, c // n).transpose(1, 2)


def ref_vit(sd: dict, pixels: torch.Tensor) -> torch.Tensor:
    """BLIP vit.py forward from raw tensors (64-d heads, eps 1e-6)."""
    p = "blip.visual_encoder"
    w = sd[f"{p}.patch_embed.proj.weight"]
    x = (
        F.conv2d(pixels, w, sd[f"{p}.patch_embed.proj.bias"], stride=w.shape[-1])
        .flatten(2)
        .transpose(1, 2)
    )
    x = torch.cat([sd[f"{p}.cls_token"].expand(x.shape[0], -1, -1), x], 1) + sd[f"{p}.pos_embed"]
    n = x.shape[-1] // 64
    i = 0
    while f"{p}.blocks.{i}.norm1.weight" in sd:
        b = f"{p}.blocks.{i}"
        q, k, v = _lin(_ln(x, sd, f"{b}.norm1", 1e-6), sd, f"{b}.attn.qkv").chunk(3, -1)
        q, k, v = _heads(q, n), _heads(k, n), _heads(v, n)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v
        x = x + _lin(a.transpose(1, 2).reshape(x.shape), sd, f"{b}.attn.proj")
        h = _ln(x, sd, f"{b}.norm2", 1e-6)
        x = x + _lin(F.gelu(_lin(h, sd, f"{b}.mlp.fc1")), sd, f"{b}.mlp.fc2")
        i += 1
    return _ln(x, sd, f"{p}.norm", 1e-6)


def ref_bert_cls(
    sd: dict, ids: torch.Tensor, mask: torch.Tensor, image: torch.Tensor, heads: int
) -> torch.Tensor:
    """BLIP med.py BertModel(mode='multimodal') forward from raw tensors; returns the [CLS] state."""
    p = "blip.text_encoder"
    x = sd[f"{p}.embeddings.word_embeddings.weight"][ids]
    x = x + sd[f"{p}.embeddings.position_embeddings.weight"][: ids.shape[1]]
    x = _ln(x, sd, f"{p}.embeddings.LayerNorm", 1e-12)
    add = (1.0 - mask[:, None, None, :].float()) * -10000.0

    def attend(x: torch.Tensor, kv: torch.Tensor, a: str, m: torch.Tensor | None) -> torch.Tensor:
        q = _heads(_lin(x, sd, f"{a}.self.query"), heads)
        k = _heads(_lin(kv, sd, f"{a}.self.key"), heads)
        v = _heads(_lin(kv, sd, f"{a}.self.value"), heads)
        s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        ctx = torch.softmax(s if m is None else s + m, -1) @ v
        return _ln(
            _lin(ctx.transpose(1, 2).reshape(x.shape), sd, f"{a}.output.dense") + x,
            sd,
            f"{a}.output.LayerNorm",
            1e-12,
        )

    i = 0
    while f"{p}.encoder.layer.{i}.attention.self.query.weight" in sd:
        L = f"{p}.encoder.layer.{i}"
        x = attend(x, x, f"{L}.attention", add)
        x = attend(x, image, f"{L}.crossattention", None)
        h = F.gelu(_lin(x, sd, f"{L}.intermediate.dense"))
        x = _ln(_lin(h, sd, f"{L}.output.dense") + x, sd, f"{L}.output.LayerNorm", 1e-12)
        i += 1
    return x[:, 0]


def _hand_pixels(im: Image.Image) -> torch.Tensor:
    """torchvision Resize(32) + CenterCrop(32) (round half to even) + ToTensor + Normalize, by hand."""
    w, h = im.size
    nw, nh = (32, int(32 * h / w)) if w <= h else (int(32 * w / h), 32)
    a = np.asarray(im.resize((nw, nh), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    top, left = round((nh - 32) / 2), round((nw - 32) / 2)
    return torch.from_numpy((a[top : top + 32, left : left + 32].transpose(2, 0, 1) - MEAN) / STD)


def test_reward_matches_a_forward_written_from_the_raw_checkpoint(scorer, tiny):
    sd = {k: v.float() for k, v in torch.load(tiny["weights"] / "ImageReward.pt").items()}
    heads = json.loads((tiny["weights"] / "med_config.json").read_text())["num_attention_heads"]
    pixels = torch.stack([_hand_pixels(im) for im in IMAGES])
    from scorers.imagereward import tokenize

    ids, mask = tokenize(scorer.tokenizer, PROMPTS)
    cls = ref_bert_cls(sd, ids, mask, ref_vit(sd, pixels), heads)
    y = cls
    for i in (0, 2, 4, 6, 7):
        y = _lin(y, sd, f"mlp.layers.{i}")
    want = (y[:, 0] - 0.16717362830052426) / 1.0333394966054072
    got = scorer(IMAGES, PROMPTS)
    np.testing.assert_allclose(got.values, want.numpy(), atol=1e-4)
    assert got.rewards == got.values
    assert len(set(np.round(got.values, 4))) == 3  # three different images, three different rewards


def test_padding_positions_are_masked(scorer):
    from scorers.clip import center_crop_batch
    from scorers.imagereward import tokenize

    ids, mask = tokenize(scorer.tokenizer, ["a cat"])
    other = ids.clone()
    other[mask == 0] = scorer.tokenizer.convert_tokens_to_ids("dog")
    pixels = center_crop_batch(IMAGES[:1], 32, rounding="round")
    with torch.no_grad():
        y = scorer.model(pixels, ids, mask)
        torch.testing.assert_close(scorer.model(pixels, other, mask), y)  # -10000 hides them
        assert not torch.allclose(scorer.model(pixels, other, torch.ones_like(mask)), y)


def test_batching_and_bad_input(scorer):
    scorer.batch_size = 2
    try:
        whole = scorer(IMAGES, PROMPTS).values
    finally:
        scorer.batch_size = 16
    single = [scorer([im], [p]).values[0] for im, p in zip(IMAGES, PROMPTS, strict=True)]
    np.testing.assert_allclose(whole, single, rtol=1e-5, atol=1e-5)
    gray = IMAGES[0].convert("L")
    assert scorer([gray], ["a cat"]).values == pytest.approx(
        scorer([gray.convert("RGB")], ["a cat"]).values
    )
    assert all(
        math.isfinite(v)
        for v in scorer(
            [Image.new("RGBA", (1, 1)), Image.new("RGB", (1200, 900))], ["a", "b"]
        ).values
    )
    with pytest.raises(ValueError, match="3 images but 2 prompts"):
        scorer(IMAGES, PROMPTS[:2])
    with pytest.raises(ValueError, match="image 0: has zero size"):
        scorer([Image.new("RGB", (0, 3))], ["a"])


def test_loader_errors(tiny, tmp_path):
    from scorers.imagereward import ImageReward

    (tmp_path / "med_config.json").write_text((tiny["weights"] / "med_config.json").read_text())
    with pytest.raises(FileNotFoundError, match="ImageReward.pt is missing"):
        ImageReward(weights=str(tmp_path), tokenizer=str(tiny["tok"]), device="cpu")
    sd = torch.load(tiny["weights"] / "ImageReward.pt")
    del sd["blip.text_encoder.encoder.layer.1.crossattention.self.key.bias"]
    torch.save(sd, tmp_path / "ImageReward.pt")
    with pytest.raises(ValueError, match="missing"):
        ImageReward(weights=str(tmp_path), tokenizer=str(tiny["tok"]), device="cpu")


def test_missing_weights_is_one_clear_line(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    import scorers

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as e:
        scorers.load("imagereward", device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and "zai-org/ImageReward" in msg and "harness fetch imagereward" in msg


# ----------------------------------------------------------------------------------------------- real weights

GOLDEN = Path("/work/shared/data/imagereward_benchmark/golden_images")


@pytest.mark.slow
def test_readme_golden_values_with_real_weights():
    """ImageReward README: the four benchmark images score 0.5812, 0.2745, -1.4132, -2.0296."""
    from scorers.imagereward import ImageReward

    if not GOLDEN.exists():
        pytest.skip(f"{GOLDEN} not present")
    try:
        s = ImageReward()  # real weights from the hub cache
    except WeightsNotFoundError as e:
        pytest.skip(str(e))
    prompt = "a painting of an ocean with clouds and birds, day time, low depth field effect"
    ims = [Image.open(GOLDEN / f"{i}.webp") for i in range(1, 5)]
    got = s(ims, [prompt] * 4).values
    np.testing.assert_allclose(got, [0.5812, 0.2745, -1.4132, -2.0296], atol=1e-2)
