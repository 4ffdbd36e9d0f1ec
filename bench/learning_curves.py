"""Learning curves on the offline tiny SD3 (CPU, a minute or two): GRPO raises a weightless reward, OPD closes the
velocity gap to its teacher.

- GRPO: mean image brightness (``scorers/brightness.py``) per step, with the within-batch std: the reward must rise
  by several initial stds (the random tiny VAE makes brightness move only a little in absolute terms).
- OPD: ``E w(t) ||v_theta - v_T||^2`` on the states the student visited at each step, toward a random-LoRA teacher.

    PYTHONPATH=. python bench/learning_curves.py [--grpo-steps 30] [--opd-steps 12]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from result_lines import emit  # noqa: E402  (bench/, the script's own folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "learning_curves.json"
    )
    parser.add_argument("--grpo-steps", type=int, default=30)
    parser.add_argument("--opd-steps", type=int, default=12)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(ROOT)
    import torch

    from flowmodels.adapters import LoraSpec, add_lora, save_adapter
    from flowmodels.models import load_model
    from flowmodels.tiny import default_tiny_dir, save_tiny_sd3
    from trainer import grpo, opd
    from trainer.config import load
    from trainer.metrics import read_metrics

    work = Path(tempfile.mkdtemp(prefix="flow_opd_curves_"))
    save_tiny_sd3(default_tiny_dir())
    t0 = time.perf_counter()
    quiet = ["run.log_with=none", "run.save_every=0"]
    grpo.main(
        load(
            grpo.Config,
            ROOT / "trainer/configs/grpo_tiny.yaml",
            [
                *quiet,
                f"run.out={work / 'grpo'}",
                f"run.max_steps={args.grpo_steps}",
                "kl_beta=0",
                "sample.groups_per_epoch=2",
                "sample.group_size=8",
                "sample.batch_size=8",
                "optim.lr=1e-2",
                "lora.rank=8",
                "lora.alpha=16",
                "datasets={geneval: harness/prompts/geneval_train/train_metadata.jsonl}",
            ],
        )
    )
    g = read_metrics(work / "grpo")

    model = load_model(default_tiny_dir())
    torch.manual_seed(4)
    add_lora(model.denoiser, "t", LoraSpec(rank=4, alpha=8))
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, p in model.denoiser.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    teacher = save_adapter(model.denoiser, "t", work / "teacher", {"base_model": "tiny"})
    opd.main(
        load(
            opd.Config,
            ROOT / "trainer/configs/opd_tiny.yaml",
            [
                *quiet,
                f"run.out={work / 'opd'}",
                "init=null",
                "anchor=null",
                f"run.max_steps={args.opd_steps}",
                f"teachers={{geneval: {teacher}, ocr: {teacher}}}",
                "optim.lr=1e-2",
                "optim.weight_decay=0",
                "run.ema=false",
                "lora.rank=4",
                "lora.alpha=8",
            ],
        )
    )
    o = read_metrics(work / "opd")
    first, last = g[:5], g[-5:]
    spread = sum(r["reward/std"] for r in first) / len(first)
    result = {
        "grpo_brightness": [round(r["reward/brightness"], 5) for r in g],
        "grpo_reward_std": [round(r["reward/std"], 5) for r in g],
        "grpo_rise_in_initial_stds": (
            sum(r["reward/brightness"] for r in last) / 5
            - sum(r["reward/brightness"] for r in first) / 5
        )
        / spread,
        "opd_gap": [round(r["opd/gap"], 5) for r in o],
        "opd_gap_last3_over_first3": sum(r["opd/gap"] for r in o[-3:])
        / sum(r["opd/gap"] for r in o[:3]),
        "wall_s": time.perf_counter() - t0,
        "threads": torch.get_num_threads(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    emit(
        {
            "grpo_rise_in_initial_stds": result["grpo_rise_in_initial_stds"],
            "opd_gap_last3_over_first3": result["opd_gap_last3_over_first3"],
            "wall_s": result["wall_s"],
        }
    )


if __name__ == "__main__":
    main()
