"""GRPO and OPD on the offline tiny FLUX, on CPU, from the FLUX presets with tiny sizes: `python -m trainer.grpo`
and `python -m trainer.opd` two steps each, and the presets' rehearsal on the tiny FLUX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flowmodels.flux import FLUX_LORA_TARGETS
from trainer import grpo, opd
from trainer.config import load
from trainer.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "trainer" / "configs"
# the presets' numbers at a size a CPU runs in seconds (the LoRA targets stay the preset's)
TINY = [
    "run.log_with=none",
    "prompt_limit=64",
    "sample.steps=4",
    "sample.size=64",
    "sample.group_size=4",
    "sample.groups_per_epoch=2",
    "sample.batch_size=4",
    "sample.steps_per_epoch=1",
    "lora.rank=4",
    "lora.alpha=8",
    "optim.lr=1.0e-3",
    "run.max_steps=2",
    "run.mixed_precision=no",
    "run.ema_every=1",
]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def _moved(lora: Path) -> list[str]:
    state = load_file(str(lora / "adapter_model.safetensors"))
    return [k for k, v in state.items() if "lora_B" in k and v.abs().sum() > 0]


def test_the_flux_presets_are_flow_grpos_flux_recipe() -> None:
    g = load(grpo.Config, CONFIGS / "grpo_flux_pickscore.yaml")
    assert g.model == "black-forest-labs/FLUX.1-dev"
    assert (g.sample.steps, g.sample.cfg, g.sample.noise_level, g.sample.size) == (6, 3.5, 0.9, 512)
    assert (g.sample.group_size, g.sample.groups_per_epoch, g.sample.batch_size) == (24, 48, 3)
    assert (g.lora.rank, g.lora.alpha, g.lora.targets) == (64, 128, FLUX_LORA_TARGETS)
    assert (g.kl_beta, g.optim.lr, g.run.mixed_precision, g.run.eval_steps) == (
        0.0,
        3e-4,
        "bf16",
        28,
    )
    o = load(opd.Config, CONFIGS / "opd_flux.yaml")
    assert o.model == g.model and o.sample == g.sample and o.lora == g.lora
    assert o.teachers == {"pickscore": g.run.out}


@pytest.fixture(scope="module")
def grpo_run(tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("flux_ws")
    got = _run("-m", "trainer.grpo", str(CONFIGS / "grpo_flux_pickscore.yaml"), *TINY,
               f"model={tiny_flux_dir}", "rewards={brightness: 1.0}", "run.out=runs/grpo_flux",
               cwd=ws)  # fmt: skip
    assert got.returncode == 0, got.stderr[-3000:]
    return ws / "runs" / "grpo_flux"


def test_grpo_trains_a_lora_on_flux_two_steps(grpo_run: Path, tiny_flux_dir: Path) -> None:
    m = json.loads((grpo_run / "manifest.json").read_text())
    assert (m["recipe"], m["step"], m["base_model"]) == ("grpo", 2, str(tiny_flux_dir))
    rows = read_metrics(grpo_run)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss/total"])) for r in rows)
    assert (
        rows[0]["train/approx_kl"] == 0.0
    )  # the first update is on-policy: every ratio is exactly 1
    moved = _moved(grpo_run / "lora")
    assert any(".ff.net." in k for k in moved) and any(
        "single_transformer_blocks" in k for k in moved
    )


def test_opd_distils_a_flux_teacher_two_steps(grpo_run: Path, tiny_flux_dir: Path) -> None:
    ws = grpo_run.parent.parent
    got = _run("-m", "trainer.opd", str(CONFIGS / "opd_flux.yaml"), *TINY, f"model={tiny_flux_dir}",
               f"teachers={{pickscore: {grpo_run}}}", "run.out=runs/opd_flux", "run.ema=false",
               cwd=ws)  # fmt: skip
    assert got.returncode == 0, got.stderr[-3000:]
    run = ws / "runs" / "opd_flux"
    m = json.loads((run / "manifest.json").read_text())
    assert (m["recipe"], m["step"], m["base_model"]) == ("opd", 2, str(tiny_flux_dir))
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss/opd"] > 0 and all(
        torch.isfinite(torch.tensor(r["loss/total"])) for r in rows
    )
    assert _moved(run / "lora")  # the student moved toward its teacher


def test_the_flux_preset_rehearses_on_the_tiny_flux(tiny_home: Path) -> None:
    got = _run("-m", "trainer.grpo", "trainer/configs/grpo_flux_pickscore.yaml", "--rehearse",
               "--world-size", "32", cwd=ROOT)  # fmt: skip
    assert got.returncode == 0, got.stderr[-3000:]
    assert "model black-forest-labs/FLUX.1-dev: the tiny FLUX.1 built from a config" in got.stdout
    assert (
        "per process: 36 images (1.5 prompt groups: groups span processes) in 12 batches of 3"
        in (got.stdout)
    )
    assert "ok: grpo_flux_pickscore.yaml builds" in got.stdout
