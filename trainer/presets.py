"""The paper presets side by side with the paper, Flow-GRPO and the authors' code: ``docs/paper-presets.md``.

    python -m trainer.presets            # print the page
    python -m trainer.presets --write    # write docs/paper-presets.md
    python -m trainer.presets --check    # exit 1 when the page is not what the configs give (CI runs this)

Our column is read from the configs (``trainer/configs/*.yaml`` over the recipe defaults), so a preset cannot drift
from its page. The other columns are facts: the Flow-OPD paper (arXiv 2605.08063, sec. 6.1 and appendix A),
Flow-GRPO's SD3.5-M configs (yifan123/flow_grpo ``config/grpo.py``, ``config/base.py``, ``scripts/train_sd3.py``) and
the authors' Flow-OPD code (CostaliyA/Flow-OPD at 434ab169: ``mix_opd_8gpu``, the GRPO-Mix config
``geneval_ocr_deqa_pickscore_32gpu``, ``scripts/merge.py``). A row is a deviation (**!**) when our value differs from
the reference the preset follows: the paper where it says, else Flow-GRPO for the GRPO stages, else the authors' code.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer import config

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "paper-presets.md"
CONFIGS = Path(__file__).parent / "configs"

# preset -> recipe
PRESETS = {
    "grpo_geneval": "grpo",
    "grpo_ocr": "grpo",
    "grpo_pickscore": "grpo",
    "grpo_mix": "grpo",
    "merge_teachers": "merge",
    "sft_teachers": "sft",
    "opd_paper": "opd",
}
# Flow-GRPO's train_sd3.py target_modules, in its order (the reference our adapters.SD3_LORA_TARGETS must match)
FLOW_GRPO_TARGETS = (
    "attn.add_k_proj, attn.add_q_proj, attn.add_v_proj, attn.to_add_out, attn.to_k, attn.to_out.0, attn.to_q, "
    "attn.to_v"
)


@dataclass(frozen=True)
class Row:
    """One hyperparameter: our config key and what each reference says (None: it says nothing)."""

    key: str
    paper: Any = None
    flow_grpo: Any = None
    authors: Any = None
    note: str = ""
    # where the followed reference is prose, whether ours does what it says (values are compared instead)
    same: bool | None = None


class _PerPreset(dict):
    """A reference value that differs between presets (preset name -> value; a preset not named: nothing said)."""


def _by_preset(**values: Any) -> _PerPreset:
    return _PerPreset(values)


# The GRPO stages (teachers and GRPO-Mix). Values keyed by preset where they differ between presets.
SAME, OTHER = True, False  # `same`: where a reference is prose, whether ours does what it says
GRPO_ROWS = (
    Row(
        "model",
        "stabilityai/stable-diffusion-3.5-medium",
        "stabilityai/stable-diffusion-3.5-medium",
    ),
    Row(
        "datasets",
        "Flow-GRPO's splits",
        _by_preset(
            grpo_geneval="dataset/geneval/train_metadata.jsonl (~50k, not public)",
            grpo_ocr="dataset/ocr/train.txt (19,653, not public)",
            grpo_pickscore="dataset/pickscore/train.txt",
            grpo_mix="the three train splits",
        ),
        note="ours: made as theirs were, evaluation prompts removed (harness/prompts/*_train/SOURCE.md)",
        same=OTHER,
    ),
    Row(
        "rewards",
        None,
        _by_preset(
            grpo_geneval={"geneval": 1.0}, grpo_ocr={"ocr": 1.0}, grpo_pickscore={"pickscore": 1.0}
        ),
    ),
    Row("partitions", _by_preset(grpo_mix={"geneval": 3, "ocr": 1, "pickscore": 1})),
    Row(
        "task_rewards",
        _by_preset(grpo_mix="each partition's scorer + DeQA, 1 : 1"),
        None,
        _by_preset(grpo_mix="each partition's scorer 0.8 + DeQA 0.2"),
        note="GRPO-Mix: the paper's 1 : 1",
        same=SAME,
    ),
    Row(
        "kl_beta",
        None,
        _by_preset(grpo_geneval=0.04, grpo_ocr=0.04, grpo_pickscore=0.01),
        _by_preset(grpo_mix=0.04),
    ),
    Row("kl_normaliser", None, "flow_grpo", note="mean (mu - mu_ref)^2 / (2 sigma_t^2), no dt"),
    Row("clip_range", None, 1e-4),
    Row("adv_clip", None, 5.0),
    Row("adv_std", None, "global"),
    Row("drop_tied_groups", None, True, note="samples whose advantage is exactly 0 leave the loss"),
    Row("sample.steps", 10, 10),
    Row("run.eval_steps", 40, 40),
    Row("sample.cfg", None, 4.5),
    Row("sample.noise_level", 0.7, 0.7),
    Row("sample.size", 512, 512),
    Row("sample.negative_prompt", None, ""),
    Row("sample.t5_length", None, 128),
    Row("sample.group_size", 24, 24, _by_preset(grpo_mix=24)),
    Row("sample.groups_per_epoch", None, 48, note="over 32 GPUs"),
    Row(
        "sample.batch_size",
        None,
        9,
        _by_preset(grpo_mix=3),
        note="per GPU at 32 GPUs; GRPO-Mix as the teachers",
    ),
    Row("sample.steps_per_epoch", None, 2),
    Row("sample.timestep_fraction", None, 0.99, note="9 of 10 steps trained"),
    Row("sample.shuffle", None, "samples"),
    Row("sample.logprob", None, "mean"),
    Row("lora.rank", 32, 32),
    Row("lora.alpha", 64, 64),
    Row("lora.init", None, "gaussian"),
    Row(
        "lora.targets",
        None,
        FLOW_GRPO_TARGETS,
        note="the joint attention only (not SD3.5-M's attn2)",
    ),
    Row(
        "optim.lr",
        None,
        _by_preset(grpo_geneval=3e-4, grpo_ocr=3e-4, grpo_pickscore=3e-4),
        _by_preset(grpo_mix=1e-4),
        note="GRPO-Mix: the authors' config",
    ),
    Row("optim.weight_decay", None, 1e-4),
    Row("optim.betas", None, (0.9, 0.999)),
    Row("optim.eps", None, 1e-8),
    Row("optim.grad_clip", None, 1.0),
    Row("run.mixed_precision", None, "fp16"),
    Row("run.ema", None, True),
    Row("run.ema_decay", None, 0.9),
    Row("run.ema_every", None, 8),
    Row(
        "run.ema_cadence",
        None,
        "batch",
        note="after every training batch, when (step + 1) % 8 == 0",
    ),
    Row("run.seed", None, 42),
)

OFFICIAL = "official Flow-GRPO GenEval, OCR, PickScore LoRAs"
OPD_ROWS = (
    Row(
        "model",
        "stabilityai/stable-diffusion-3.5-medium",
        None,
        "stabilityai/stable-diffusion-3.5-medium",
    ),
    Row(
        "init",
        "the merged teachers (the best row)",
        note="runs/merge: merge_teachers.yaml",
        same=SAME,
    ),
    Row("teachers", OFFICIAL, None, "GenEval, OCR (PickScore commented out)", same=SAME),
    Row(
        "anchor",
        "the DeQA teacher (DeQA : PickScore = 4 : 6)",
        None,
        "the DeQA teacher (mar_lora)",
        same=SAME,
    ),
    Row("mar_lambda", 0.02, None, 0.04),
    Row(
        "mar_sigma_max",
        "every trained step",
        None,
        "every trained step",
        note="1.0: every step",
        same=SAME,
    ),
    Row(
        "loss",
        "direct (Eq. 15)",
        None,
        "kl_only: PPO surrogate with advantage -KL, the KL not detached",
        note="the paper's final form",
        same=SAME,
    ),
    Row("step_weight", "kl (w(t))", None, "kl", same=SAME),
    Row(
        "kl_normaliser",
        "exact (a sum over latent elements)",
        None,
        "flow_grpo (a mean, no dt)",
        note="exact_mean: the paper's w(t) over a mean, so its scale does not grow with the resolution",
        same=OTHER,
    ),
    Row(
        "task_mix",
        "not stated (GRPO-Mix: partitions 3 : 1 : 1)",
        None,
        "alternate epochs, GenEval 3 : OCR 1",
        note="ours: the paper's GRPO-Mix ratio as shares of every epoch",
        same=OTHER,
    ),
    Row("adv_clip", None, None, 5.0, note="pg / mixed only"),
    Row("sample.steps", 10, 10, 10),
    Row("run.eval_steps", 40, 40, 40),
    Row("sample.cfg", None, 4.5, 4.5),
    Row("sample.noise_level", 0.7, 0.7, 0.7),
    Row("sample.size", 512, 512, 512),
    Row("sample.group_size", 24, 24, 16),
    Row(
        "sample.groups_per_epoch",
        None,
        48,
        16,
        note="the authors' over 8 GPUs; ours Flow-GRPO's over 32",
    ),
    Row("sample.batch_size", None, 9, 4, note="per GPU"),
    Row("sample.steps_per_epoch", None, 2, 2),
    Row("sample.timestep_fraction", None, 0.99, 0.99),
    Row("sample.shuffle", None, "samples", "samples"),
    Row(
        "lora.rank",
        32,
        32,
        32,
        note="with init the student takes the merge's shape (r 32 / alpha 64)",
    ),
    Row("lora.alpha", 64, 64, 64),
    Row("optim.lr", None, 3e-4, 1e-4),
    Row("optim.weight_decay", None, 1e-4, 1e-4),
    Row("optim.grad_clip", None, 1.0, 1.0),
    Row("run.mixed_precision", None, "fp16", "fp16"),
    Row("run.ema_decay", None, 0.9, 0.9),
    Row("run.ema_every", None, 8, 8),
    Row("run.ema_cadence", None, "batch", "batch"),
)

MERGE_ROWS = (
    Row("teachers", OFFICIAL, None, "the same three", same=SAME),
    Row(
        "method",
        "model merging (not specified)",
        None,
        "ab_mean (the A and B factors averaged key by key)",
        note="linear: the average of the weight deltas; method=ab_mean is the authors'",
        same=OTHER,
    ),
    Row(
        "rank",
        32,
        None,
        32,
        note="the student's LoRA shape: truncated SVD, its error in the manifest",
    ),
    Row("alpha", 64, None, 64),
    Row("output", "lora", None, "lora"),
)

SFT_ROWS = (
    Row("teachers", OFFICIAL, same=SAME),
    Row(
        "datasets",
        "teacher trajectories on Flow-GRPO's training prompts",
        note="ours: the generated training sets (harness/prompts/*_train/SOURCE.md)",
        same=OTHER,
    ),
    Row("prompts_per_task", note="ours: not stated"),
    Row("sample_steps", 40, 40, note="the evaluation sampler"),
    Row("cfg", None, 4.5),
    Row("size", 512, 512),
    Row("lora.rank", 32, 32),
    Row("lora.alpha", 64, 64),
    Row("optim.lr", note="ours: not stated"),
    Row("run.max_steps", note="ours: not stated"),
)

ROWS = {"grpo": GRPO_ROWS, "opd": OPD_ROWS, "merge": MERGE_ROWS, "sft": SFT_ROWS}


def fmt(value: Any) -> str:
    """A value as the page shows it (floats in %g, mappings as k: v, sequences joined)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value)
    if value == "":
        return '""'
    return str(value)


def ours(cfg: Any, key: str) -> Any:
    """``cfg``'s value at a dotted key."""
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _pick(value: Any, preset: str) -> Any:
    return value.get(preset) if isinstance(value, _PerPreset) else value


def load_preset(name: str) -> Any:
    """The preset as the recipe reads it (YAML over the dataclass defaults)."""
    import importlib

    module = importlib.import_module(f"trainer.{PRESETS[name]}")
    return config.load(module.Config, CONFIGS / f"{name}.yaml")


def table(name: str) -> list[str]:
    recipe = PRESETS[name]
    cfg = load_preset(name)
    lines = [
        f"## `{name}.yaml` (`python -m trainer.{recipe}`)",
        "",
        "| key | ours | paper | Flow-GRPO | authors' code | |",
        "|---|---|---|---|---|---|",
    ]
    for row in ROWS[recipe]:
        refs = [_pick(v, name) for v in (row.paper, row.flow_grpo, row.authors)]
        mine = ours(cfg, row.key)
        mine_s = fmt(mine)
        mark = "**!**" if _deviates(row, mine, refs, ORDER[recipe]) else ""
        cells = [f"`{row.key}`", mine_s, *(fmt(r) for r in refs), f"{mark} {row.note}".strip()]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


# which reference a stage follows, in order: the paper where it says, then the code the stage comes from
ORDER = {
    "grpo": (0, 1, 2),  # paper, Flow-GRPO, the authors' code
    "sft": (0, 1, 2),
    "opd": (0, 2, 1),  # paper, the authors' code, Flow-GRPO
    "merge": (0, 2, 1),
}


def _deviates(row: Row, mine: Any, refs: list[Any], order: tuple[int, ...]) -> bool:
    """Whether our value departs from the reference the preset follows."""
    follows = next((refs[i] for i in order if refs[i] is not None), None)
    if follows is None:
        return False
    if row.same is not None:
        return not row.same
    if isinstance(follows, str) and not isinstance(mine, str | tuple | list):
        raise ValueError(f"{row.key}: a prose reference needs same=True or False")
    return fmt(mine) != fmt(follows)


def render() -> str:
    head = [
        "# The paper presets, value by value",
        "",
        "Generated by `python -m trainer.presets --write` from `trainer/configs/` (CI checks it is current). **Ours**",
        "is what the recipe reads; **paper** is the Flow-OPD paper (sec. 6.1, appendix A); **Flow-GRPO** its SD3.5-M",
        "configs and `train_sd3.py`; **authors' code** the Flow-OPD repository (`mix_opd_8gpu`, the GRPO-Mix config,",
        "`scripts/merge.py`). A blank cell: that source does not say. **!** marks a value that departs from the",
        "reference the preset follows (the paper where it says, else Flow-GRPO, else the authors' code); the last",
        "column says why. Per-GPU numbers are derived from the world size at run time; check them with",
        "`python -m trainer.<recipe> PRESET --rehearse --world-size N`.",
        "",
    ]
    body: list[str] = []
    for name in PRESETS:
        body += [*table(name), ""]
    return "\n".join(head + body).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.presets", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--write", action="store_true", help=f"write {PAGE.relative_to(ROOT)}")
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is not current")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        current = PAGE.read_text() if PAGE.exists() else ""
        if current != page:
            sys.stderr.write(
                f"{PAGE.relative_to(ROOT)} is stale: run `python -m trainer.presets --write`\n"
            )
            return 1
        return 0
    if args.write:
        PAGE.write_text(page)
        return 0
    sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
