"""FSDP2 through accelerate on two CPU processes (gloo): the student is really sharded, every pass through it
(sampling, the student's gradient pass, the KL reference, teachers routed differently per rank, the anchor) gives
what one process gives on the same batch, and both ranks end a step with the same adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.training import QUIET, synthetic_lora
from trainer import grpo, runs
from trainer.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "trainer" / "configs"
FSDP = CONFIGS / "accelerate" / "fsdp.yaml"


def _accelerate() -> str:
    exe = Path(sys.executable).with_name("accelerate")
    if not exe.exists():
        pytest.skip("accelerate CLI not found")
    return str(exe)


def _env(tiny_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLOW_OPD_HOME": str(tiny_home),
        "CUDA_VISIBLE_DEVICES": "",
    }


def _launch(port: int, *args: str) -> list[str]:
    """``accelerate launch`` with the shipped FSDP config, on 2 CPU processes in full precision."""
    return [
        _accelerate(),
        "launch",
        "--config_file",
        str(FSDP),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        *args,
    ]


def _run(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_fsdp_step_matches_one_process_on_the_same_batch(tiny_home, tmp_path):
    adapters = [synthetic_lora(tmp_path / n, seed, 0.05) for seed, n in enumerate(("a", "b", "c"))]
    env = _env(tiny_home)
    worker = ["tests/support/fsdp_step.py"]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _run([sys.executable, *worker, str(one), *map(str, adapters)], env)
    _run(_launch(29531, *worker, str(two), *map(str, adapters)), env)
    single = torch.load(one / "rank0.pt", weights_only=False)
    ranks = [torch.load(two / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    assert single["world"] == 1 and not single["sharded"]
    for r in ranks:
        assert r["world"] == 2 and r["sharded"]
        full, local = r["base_numel"]
        assert local < full  # this rank holds a shard of the frozen base, not all of it
    # the same loss as one process on the same batch (sampling, student pass and KL reference all sharded)
    for r in ranks:
        assert r["kl"] > 0
        assert r["loss"] == pytest.approx(single["loss"], rel=1e-6)
        assert r["kl"] == pytest.approx(single["kl"], rel=1e-4)
        assert r["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-4)
    # after the step: the same adapter on both ranks, and the one a single process trains
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert a.keys() == b.keys() == single["state"].keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
        torch.testing.assert_close(a[k], single["state"][k], rtol=1e-4, atol=1e-6)
    # OPD's labels: rank 0 routes its rows to two teachers, rank 1 to one; both branches (one per-row pass, one
    # pass per adapter) give each rank what one process gives for that routing, and neither rank hangs
    for rank, r in enumerate(ranks):
        got, want = r["labels"][rank], single["labels"][rank]
        for key in ("mixed", "per_adapter", "anchor", "anchor_per_adapter"):
            torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)


def test_grpo_recipe_runs_sharded_with_the_shipped_config(tiny_home, tmp_path):
    """The README's command with the FSDP config: two steps, one adapter saved, the ranks agree."""
    out = tmp_path / "fsdp"
    args = ["-m", "trainer.grpo", str(CONFIGS / "grpo_tiny.yaml"), f"run.out={out}", *QUIET]
    _run(_launch(29533, *args, "run.save_every=0"), _env(tiny_home))
    m = json.loads((out / "manifest.json").read_text())
    assert (m["world_size"], m["distributed"], m["step"]) == (2, "fsdp2", 2)
    assert m["replicas_identical"] is True
    assert (out / "lora" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        ({"FSDP_VERSION": "1"}, [], "FSDP2 only"),
        ({"FSDP_VERSION": "2"}, ["run.save_every=1"], "run.save_every not supported under FSDP"),
        ({"FSDP_VERSION": "2"}, ["run.resume=auto"], "run.resume not supported under FSDP"),
    ],
)
def test_fsdp_refuses_what_it_cannot_do_before_any_work(
    tmp_path, monkeypatch, env, overrides, message
):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "r"
    cfg = load(grpo.Config, CONFIGS / "grpo_tiny.yaml", [*QUIET, f"run.out={out}", *overrides])
    with pytest.raises(ConfigError, match=message):
        runs.start("grpo", cfg, cfg.run)
    assert not out.exists()
