"""LoRA merging in weight-delta space: identities, the linear average, TIES by hand, SVD re-factoring, the recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from trainer import merge
from trainer.config import ConfigError, load
from trainer.merge import Lora, ab_mean, deltas_to_lora, lora_deltas, merge_deltas, refactor, ties

PATHS = ("blocks.0.attn.to_q", "blocks.0.attn.to_k")


def _random_lora(seed: int, rank: int = 2, alpha: int = 4, shape=(6, 5)) -> Lora:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for path in PATHS:
        state[f"base_model.model.{path}.lora_A.weight"] = torch.randn(rank, shape[1], generator=g)
        state[f"base_model.model.{path}.lora_B.weight"] = torch.randn(shape[0], rank, generator=g)
    cfg = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": ["to_k", "to_q"]}
    return Lora(cfg, state)


def test_delta_is_alpha_over_r_times_b_a():
    lo = _random_lora(0, rank=2, alpha=4)
    d = lora_deltas(lo)
    a = lo.state["base_model.model.blocks.0.attn.to_q.lora_A.weight"]
    b = lo.state["base_model.model.blocks.0.attn.to_q.lora_B.weight"]
    assert torch.allclose(d["blocks.0.attn.to_q"], 2.0 * b @ a)


@pytest.mark.parametrize("method", ["linear", "task_arithmetic"])
def test_merging_an_adapter_with_itself_returns_it(method):
    lo = _random_lora(1)
    weights = [0.5, 0.5] if method == "task_arithmetic" else [1.0, 1.0]
    merged = merge_deltas([lora_deltas(lo), lora_deltas(lo)], weights, method)
    back, err = deltas_to_lora(merged, rank=2, targets=["to_q", "to_k"], base=None)
    assert err.worst < 1e-5 and err.total < 1e-5
    for path, delta in lora_deltas(lo).items():
        assert torch.allclose(merged[path], delta, atol=1e-5)
        assert torch.allclose(lora_deltas(back)[path], delta, atol=1e-4)
    same = ab_mean([lo, lo], [1.0, 1.0])
    assert all(torch.allclose(same[k], v) for k, v in lo.state.items())


def test_linear_merge_is_the_average_of_the_deltas():
    a, b = _random_lora(2), _random_lora(3)
    merged = merge_deltas([lora_deltas(a), lora_deltas(b)], [1.0, 1.0], "linear")
    lora, err = deltas_to_lora(
        merged, rank=4, targets=["to_q", "to_k"], base=None
    )  # K r = 4: exact
    assert err.worst < 1e-5
    for path in PATHS:
        avg = (lora_deltas(a)[path] + lora_deltas(b)[path]) / 2
        assert torch.allclose(lora_deltas(lora)[path], avg, atol=1e-4)
    # the authors' factor-wise average is a different thing
    factors = ab_mean([a, b], [1.0, 1.0])
    ab_delta = lora_deltas(Lora(a.config, factors))["blocks.0.attn.to_q"]
    avg_q = (lora_deltas(a)["blocks.0.attn.to_q"] + lora_deltas(b)["blocks.0.attn.to_q"]) / 2
    assert not torch.allclose(ab_delta, avg_q, atol=1e-2)


def test_ties_by_hand():
    stack = torch.tensor(
        [[[3.0, -1.0, 0.5, 2.0]], [[-4.0, 2.0, 0.1, 1.0]]]
    )  # K = 2, one 1 x 4 "matrix"
    # density 0.5 keeps 2 of 4 per teacher: t0 -> [3, 0, 0, 2], t1 -> [-4, 2, 0, 0]
    # elected signs of the sum [-1, 2, 0, 2]: [-, +, 0, +]; agreeing entries: [-4], [2], none, [2]
    assert torch.equal(ties(stack, 0.5), torch.tensor([[-4.0, 2.0, 0.0, 2.0]]))
    assert torch.allclose(ties(stack, 1.0), torch.tensor([[-4.0, 2.0, 0.3, 1.5]]))


def test_refactor_exact_truncated_and_padded():
    g = torch.Generator().manual_seed(4)
    delta = torch.randn(6, 3, generator=g) @ torch.randn(3, 5, generator=g)  # rank 3
    b, a = refactor(delta, 3)
    assert torch.allclose(b @ a, delta, atol=1e-5)
    b, a = refactor(delta, 8)  # above min(6, 5): zero padding
    assert b.shape == (6, 8) and a.shape == (8, 5) and torch.allclose(b @ a, delta, atol=1e-5)
    b1, a1 = refactor(delta, 1)
    s = torch.linalg.svdvals(delta)
    assert torch.linalg.matrix_norm(b1 @ a1 - delta).item() == pytest.approx(
        s[1:].norm().item(), rel=1e-4
    )


def test_truncated_lora_at_another_alpha_is_the_best_rank_r_delta():
    """Three rank-2 teachers merged (exact rank 6) and stored at r 2 / alpha 4 (the paper's shape in miniature):
    PEFT's (alpha / r) B A is the truncated SVD of the average, and the errors are the discarded singular values'."""
    loras = [_random_lora(s) for s in (11, 12, 13)]
    merged = merge_deltas([lora_deltas(lo) for lo in loras], [1.0, 1.0, 1.0], "linear")
    got, err = deltas_to_lora(merged, rank=2, targets=["to_q", "to_k"], base=None, alpha=4)
    assert got.config["r"] == 2 and got.config["lora_alpha"] == 4
    back = lora_deltas(got)  # applies alpha / r = 2
    worst, num, den = 0.0, 0.0, 0.0
    for path in PATHS:
        u, s, vh = torch.linalg.svd(merged[path].double())
        best = (u[:, :2] * s[:2]) @ vh[:2]
        assert torch.allclose(back[path].double(), best, atol=1e-4)
        worst = max(worst, float(s[2:].norm() / s.norm()))
        num, den = num + float(s[2:].norm() ** 2), den + float(s.norm() ** 2)
    assert err.worst == pytest.approx(worst, rel=1e-4)
    assert err.total == pytest.approx((num / den) ** 0.5, rel=1e-4)
    assert 0 < err.total <= err.worst < 1


def _write(lora: Lora, folder: Path, base: str | None = "tiny") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(lora.config))
    save_file(lora.state, str(folder / "adapter_model.safetensors"))
    if base is not None:
        (folder / "manifest.json").write_text(json.dumps({"base_model": base}))
    return folder


def test_merge_recipe_writes_a_loadable_lora(tmp_path):
    a = _write(_random_lora(5), tmp_path / "a")
    b = _write(_random_lora(6), tmp_path / "b")
    out = tmp_path / "merged_run"
    cfg = load(merge.Config, None, [f"teachers={{x: {a}, y: {b}}}", f"out={out}"])
    merge.main(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["output"] == "lora" and manifest["rank"] == 4 and manifest["base_model"] == "tiny"
    )
    assert (out / "config.yaml").exists()
    got = merge.read_lora(out / "lora")
    assert got.config["r"] == 4 and got.config["lora_alpha"] == 4
    for path in PATHS:
        avg = (lora_deltas(_random_lora(5))[path] + lora_deltas(_random_lora(6))[path]) / 2
        assert torch.allclose(lora_deltas(got)[path], avg, atol=1e-4)


def test_merge_into_a_folder_holding_a_run_is_refused_unless_overwrite(tmp_path):
    a = _write(_random_lora(5), tmp_path / "a")
    out = tmp_path / "run"
    out.mkdir()
    held = json.dumps({"recipe": "grpo", "step": 2})
    (out / "manifest.json").write_text(held)
    cfg = load(merge.Config, None, [f"teachers={{x: {a}}}", f"out={out}"])
    with pytest.raises(ConfigError, match="already holds a finished grpo run"):
        merge.main(cfg)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    assert (out / "manifest.json").read_text() == held
    merge.main(load(merge.Config, None, [f"teachers={{x: {a}}}", f"out={out}", "overwrite=true"]))
    assert json.loads((out / "manifest.json").read_text())["recipe"] == "merge"


def test_merge_refuses_teachers_of_different_bases(tmp_path):
    a = _write(_random_lora(5), tmp_path / "a", base="tiny")
    b = _write(_random_lora(6), tmp_path / "b", base="someone/else")
    cfg = load(merge.Config, None, [f"teachers={{x: {a}, y: {b}}}", f"out={tmp_path / 'o'}"])
    with pytest.raises(ConfigError, match="is a LoRA for 'someone/else'"):
        merge.main(cfg)
    assert not (tmp_path / "o").exists()


def test_merge_recipe_at_the_papers_student_shape_records_its_error(tmp_path):
    """rank/alpha as in merge_teachers.yaml (here 2 / 4 for rank-2 teachers): the LoRA has that shape, the manifest
    the truncation's errors, and a teacher trained on evaluation prompts passes that on to the merge."""
    a = _write(_random_lora(5), tmp_path / "a")
    b = _write(_random_lora(6), tmp_path / "b")
    (b / "manifest.json").write_text(
        json.dumps({"base_model": "tiny", "contaminated": ["datasets.ocr: 3 of 9 ..."]})
    )
    out = tmp_path / "m"
    cfg = load(
        merge.Config, None, [f"teachers={{x: {a}, y: {b}}}", f"out={out}", "rank=2", "alpha=4"]
    )
    merge.main(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["rank"], manifest["alpha"]) == (2, 4)
    assert 0 < manifest["svd_rel_error_total"] <= manifest["svd_rel_error"] < 1
    assert manifest["contaminated"] == [f"teachers.y {b}: datasets.ocr: 3 of 9 ..."]
    got = merge.read_lora(out / "lora")
    assert (got.config["r"], got.config["lora_alpha"]) == (2, 4)
    assert json.loads((out / "lora" / "manifest.json").read_text())["alpha"] == 4


def test_merge_refuses_a_shape_for_ab_mean(tmp_path):
    with pytest.raises(ConfigError, match="ab_mean keeps the teachers' LoRA shape"):
        load(merge.Config, None, ["method=ab_mean", "rank=32"])
