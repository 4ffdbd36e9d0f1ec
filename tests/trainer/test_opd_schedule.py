"""What one OPD step costs against one GRPO step, counted in denoiser rows and passes (not timed), and that OPD's
cheaper schedule (rollouts that stop at the last trained state, teachers and anchor in one pass) trains bit for
bit as the per-adapter passes over full rollouts did."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flowmodels.sd3 import SD3
from tests.support.training import QUIET, synthetic_lora
from trainer import grpo, opd
from trainer.config import load

# one optimizer step on 8 images (4 prompts x 2) in 2 batches of 4, 4 sampling steps, 3 of them trained (0, 1, 2)
SAMPLE = [
    "sample.steps=4",
    "sample.size=64",
    "sample.group_size=2",
    "sample.groups_per_epoch=4",
    "sample.batch_size=4",
    "sample.steps_per_epoch=1",
]
COMMON = [
    *QUIET,
    *SAMPLE,
    "model=tiny",
    "run.max_steps=1",
    "run.ema=false",
    "run.mixed_precision=no",
    "lora.rank=4",
    "lora.alpha=8",
]
ROWS = 2 * 4  # a batch's rows per denoiser pass under CFG (uncond and cond)
BATCHES, STEPS, TRAINED = 2, 4, 3


def _count_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every denoiser pass's batch size (CFG doubles it)."""
    rows: list[int] = []
    real = SD3._forward

    def counted(self: SD3, x: torch.Tensor, s: torch.Tensor, cond: object) -> torch.Tensor:
        rows.append(x.shape[0])
        return real(self, x, s, cond)  # type: ignore[arg-type]

    monkeypatch.setattr(SD3, "_forward", counted)
    return rows


def _grpo(out: Path) -> None:
    grpo.main(
        load(
            grpo.Config,
            None,
            [
                *COMMON,
                "datasets={pickscore: harness/prompts/pickscore_train/train.txt}",
                "rewards={brightness: 1.0}",
                "kl_beta=0.04",
                f"run.out={out}",
            ],
        )
    )


def _opd(out: Path, teachers: dict[str, Path], anchor: Path, *extra: str) -> Path:
    opd.main(
        load(
            opd.Config,
            None,
            [
                *COMMON,
                "datasets={geneval: harness/prompts/geneval_train/train_metadata.jsonl, "
                "ocr: harness/prompts/ocr_train/train.txt}",
                "teachers={" + ", ".join(f"{k}: {v}" for k, v in teachers.items()) + "}",
                f"anchor={anchor}",
                "mar_lambda=0.5",
                "optim.weight_decay=0",
                f"run.out={out}",
                *extra,
            ],
        )
    )
    return out


@pytest.fixture()
def adapters(tiny_home: Path, tmp_path: Path) -> tuple[dict[str, Path], Path]:
    teachers = {
        "geneval": synthetic_lora(tmp_path / "t_geneval", seed=1, scale=0.3),
        "ocr": synthetic_lora(tmp_path / "t_ocr", seed=2, scale=0.3),
    }
    return teachers, synthetic_lora(tmp_path / "anchor", seed=3, scale=0.3)


def test_an_opd_step_costs_at_most_a_tenth_more_denoiser_rows_than_a_grpo_step(
    adapters: tuple[dict[str, Path], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teachers, anchor = adapters
    rows = _count_rows(monkeypatch)
    _grpo(tmp_path / "grpo")
    grpo_rows = sum(rows)
    assert len(rows) == BATCHES * (STEPS + TRAINED * 2)
    # GRPO: every sampling step (its reward reads the final image), then per trained step the student and the
    # KL reference (the base)
    assert grpo_rows == BATCHES * ROWS * (STEPS + TRAINED * 2)
    rows.clear()
    _opd(tmp_path / "opd", teachers, anchor)
    opd_rows = sum(rows)
    # OPD (direct loss, no reward): sampling stops at the last trained state x_2 (2 steps, not 4), then per trained
    # step the routed teachers (each sample once), the anchor and the student
    assert opd_rows == BATCHES * ROWS * (2 + TRAINED * 3)
    assert opd_rows <= 1.1 * grpo_rows
    # in passes: teachers and anchor run as one pass with per-row adapters, so a trained step is two passes in
    # either recipe (labels + student; student + reference)
    assert len(rows) == BATCHES * (2 + TRAINED * 2)


def test_opd_trains_bit_for_bit_as_with_full_rollouts_and_one_pass_per_adapter(
    adapters: tuple[dict[str, Path], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teachers, anchor = adapters
    short = _opd(tmp_path / "short", teachers, anchor, "run.max_steps=2")
    # the schedule before: every sampling step with decoded images, then teachers and anchor one pass each
    monkeypatch.setattr(opd, "rollout_keep", lambda cfg, scoring: "all")
    monkeypatch.setattr(opd, "mixable", lambda net: False)
    full = _opd(tmp_path / "full", teachers, anchor, "run.max_steps=2")
    a = load_file(str(short / "lora" / "adapter_model.safetensors"))
    b = load_file(str(full / "lora" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].abs().max() > 0 for k in a if "lora_B" in k)  # it did train
