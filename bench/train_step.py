"""Cost of one GRPO iteration vs one OPD iteration (with MAR), and peak memory with 1 vs 4 teacher adapters.

Both recipes run through their real ``main`` on the same model, prompts, batch and sampler (one process, CPU or
one GPU), with ``steps_per_epoch = 1`` so an iteration = sample the batch + score/label + train every step once.
The ratio compares the second iteration of each (the first warms caches up), in ``--pairs`` interleaved pairs of
GRPO, OPD and OPD on its schedule before (full rollouts with images, then one pass per teacher and one for the
anchor, instead of rollouts that stop at the last trained state and one pass with per-row adapters), and
reports the median of the per-pair ratios: on a shared machine the load moves both sides of a pair alike. The
recipes' iteration times are read in this process's CPU seconds by default (``--clock cpu``; one thread), so time
spent waiting for a core on a loaded machine is not counted; ``--clock wall`` reads wall seconds.

Memory: OPD with K = 1 and K = 4 teacher adapters (plus the anchor) in separate fresh processes on the same batch,
each routed sample to its task's teacher. The peak is taken over training only (rollouts, teacher and anchor
passes, backward), after the model and every adapter are loaded: on CUDA ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``; on CPU the kernel's peak resident set (VmHWM) after resetting it through
``/proc/self/clear_refs``, reported whole and above the RSS after imports (the Python and torch runtime). The
weights themselves (base and adapters) are counted exactly too. Target (Flow-OPD, docs/method.md 5.8): 4 teachers cost at most 15% more than 1, because teachers are LoRA
adapters on one base (memory = base + K adapters), not K pipelines.

The model is a random SD3 transformer with SD3.5-M's LoRA-to-layer ratio (hidden 768, r 16, as 1536 / r 32) and the
tiny VAE and text encoders, so a CPU can run it; numbers are relative, not absolute.

    PYTHONPATH=. python bench/train_step.py [--pairs 5] [--out bench/results/train_step.json] [--size 128]

The figures end the output as ``RESULT name=value`` lines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from result_lines import emit  # noqa: E402  (bench/, the script's own folder)


def build_model(folder: Path, layers: int, heads: int) -> Path:
    """A random SD3 pipeline whose transformer is wide like SD3.5-M (tiny VAE and text encoders)."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    from flowmodels.tiny import tiny_sd3_components

    if (folder / "model_index.json").exists():
        return folder
    comps = tiny_sd3_components(0, workdir=folder.parent / ".tok")
    comps["transformer"] = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        num_layers=layers,
        attention_head_dim=64,
        num_attention_heads=heads,
        joint_attention_dim=64 * heads,
        caption_projection_dim=64 * heads,
        pooled_projection_dim=64,
        out_channels=4,
        pos_embed_max_size=64,
    )
    StableDiffusion3Pipeline(**comps).save_pretrained(str(folder))
    return folder


def make_teacher(model_dir: Path, folder: Path, seed: int, rank: int) -> Path:
    """A LoRA with random A and B on the bench model (stands in for a trained teacher)."""
    import torch

    from flowmodels.adapters import LoraSpec, add_lora, save_adapter
    from flowmodels.models import load_model

    if (folder / "adapter_config.json").exists():
        return folder
    model = load_model(model_dir, dtype="float32", device="cpu")
    torch.manual_seed(seed)
    add_lora(model.denoiser, "t", LoraSpec(rank=rank, alpha=2 * rank))
    with torch.no_grad():
        for name, p in model.denoiser.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return save_adapter(model.denoiser, "t", folder, {"base_model": str(model_dir)})


def common(args: argparse.Namespace, out: Path) -> list[str]:
    """The settings GRPO and OPD share: same model, prompts, batch, sampler, LoRA."""
    tasks = {f"t{k}": "harness/prompts/ocr_train/train.txt" for k in range(4)}
    return [
        f"model={args.model_dir}",
        "datasets=" + json.dumps(tasks),
        "prompt_limit=16",
        f"sample.size={args.size}",
        f"sample.steps={args.steps}",
        "sample.group_size=2",
        "sample.groups_per_epoch=4",
        "sample.batch_size=8",
        "sample.steps_per_epoch=1",
        "sample.t5_length=16",
        f"lora.rank={args.rank}",
        f"lora.alpha={2 * args.rank}",
        "run.max_steps=2",
        "run.log_with=none",
        "run.ema=false",
        f"run.mixed_precision={'bf16' if args.cuda else 'no'}",
        f"run.out={out}",
    ]


class _CpuClock:
    """The ``time`` module as the recipes see it, with ``perf_counter`` reading this process's CPU seconds: on a
    machine shared with other jobs, waiting for a core then costs nothing (``--clock cpu``)."""

    perf_counter = staticmethod(time.process_time)

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def _iteration_s(run: Path) -> dict[str, float]:
    """The last (warm) iteration of a run: sampling (+ rewards) and training seconds."""
    from trainer.metrics import read_metrics

    last = read_metrics(run)[-1]
    return {
        "sample_s": last["time/sample_s"],
        "train_s": last["time/train_s"],
        "iteration_s": last["time/sample_s"] + last["time/train_s"],
    }


def time_ratio(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """GRPO (brightness reward, KL to the base) and OPD (4 routed teachers + MAR anchor), same batch, interleaved.

    Each pair runs GRPO, OPD and OPD on its schedule before (full rollouts with images, one pass per teacher and
    one for the anchor) one after another, two iterations each; the second is timed.
    The ratios are taken within a pair, so load on a shared machine moves both sides of each ratio alike.
    """
    import statistics

    from trainer import grpo, opd
    from trainer.config import load

    teachers = {f"t{k}": str(args.teachers[k]) for k in range(4)}
    opd_args = ["teachers=" + json.dumps(teachers), f"anchor={args.anchor}", "mar_lambda=0.02"]
    keep, mixable = opd.rollout_keep, opd.mixable

    def run_grpo(out: Path) -> dict[str, float]:
        grpo_args = ["rewards={brightness: 1.0}", "kl_beta=0.04"]
        grpo.main(load(grpo.Config, None, [*common(args, out), *grpo_args]))
        return _iteration_s(out)

    def run_opd(out: Path, full: bool) -> dict[str, float]:
        if (
            full
        ):  # the schedule before: full rollouts, then one pass per teacher and one for the anchor
            opd.rollout_keep = lambda cfg, scoring: "all"
            opd.mixable = lambda net: False
        try:
            opd.main(load(opd.Config, None, [*common(args, out), *opd_args]))
        finally:
            opd.rollout_keep, opd.mixable = keep, mixable
        return _iteration_s(out)

    if args.clock == "cpu":
        grpo.time = opd.time = _CpuClock()  # type: ignore[attr-defined]
    pairs = []
    for i in range(args.pairs):
        runs = {
            "grpo": lambda i=i: run_grpo(work / f"grpo{i}"),
            "opd": lambda i=i: run_opd(work / f"opd{i}", full=False),
            "opd_before": lambda i=i: run_opd(work / f"opd_before{i}", full=True),
        }
        order = list(runs) if i % 2 == 0 else list(reversed(runs))  # drift favours neither side
        got = {name: runs[name]() for name in order}
        g, o, f = got["grpo"], got["opd"], got["opd_before"]
        pairs.append(
            {
                **got,
                "opd_over_grpo": o["iteration_s"] / g["iteration_s"],
                "opd_before_over_grpo": f["iteration_s"] / g["iteration_s"],
            }
        )
        print(
            f"pair {i + 1}/{args.pairs} ({args.clock} s): grpo {g['iteration_s']:.2f}, opd "
            f"{o['iteration_s']:.2f} ({pairs[-1]['opd_over_grpo']:.3f}), opd before "
            f"{f['iteration_s']:.2f} ({pairs[-1]['opd_before_over_grpo']:.3f})",
            file=sys.stderr,
            flush=True,
        )

    def med(key: str) -> float:
        return statistics.median(p[key] for p in pairs)  # type: ignore[misc]

    return {
        "clock": args.clock,
        "pairs": pairs,
        "opd_over_grpo_median": med("opd_over_grpo"),
        "opd_over_grpo_range": [
            min(p["opd_over_grpo"] for p in pairs),
            max(p["opd_over_grpo"] for p in pairs),
        ],  # type: ignore[type-var]
        "opd_before_over_grpo_median": med("opd_before_over_grpo"),
    }


def _status_mib(field: str) -> float:
    """A field of /proc/self/status (VmRSS: current resident set, VmHWM: its peak), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib() -> float:
    return _status_mib("VmRSS")


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) so it measures only what follows (Linux clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def weight_bytes(args: argparse.Namespace, k: int) -> dict[str, float]:
    """Weights held by the denoiser: the base and all adapters (student + k teachers + anchor), MiB."""
    from flowmodels.adapters import LoraSpec, add_lora, load_adapter
    from flowmodels.models import load_model

    model = load_model(args.model_dir, dtype="float32", device="cpu")
    net = model.denoiser
    base = sum(p.numel() * p.element_size() for p in net.parameters())
    add_lora(net, "student", LoraSpec(rank=args.rank, alpha=2 * args.rank), trainable=True)
    for i in range(k):
        load_adapter(net, args.teachers[i], f"teacher{i}")
    load_adapter(net, args.anchor, "anchor")
    lora = sum(p.numel() * p.element_size() for n, p in net.named_parameters() if "lora_" in n)
    return {"base_weights_mib": base / 2**20, "adapter_weights_mib": lora / 2**20}


def memory_child(args: argparse.Namespace, k: int, work: Path) -> dict[str, float]:
    """Runs in a fresh process: one OPD step with ``k`` teacher adapters; reports peak memory."""
    import torch

    from trainer import opd, optim
    from trainer.config import load

    base_rss = rss_mib()
    marks: dict[str, float] = {}
    prepare = optim.prepare

    def prepare_then_mark(
        *a, **kw
    ):  # model, student, teachers and anchor are loaded: training starts now
        tr = prepare(*a, **kw)
        marks["loaded_rss_mib"] = rss_mib()
        reset_peak_rss()
        if args.cuda:
            torch.cuda.reset_peak_memory_stats()
        return tr

    optim.prepare = prepare_then_mark
    teachers = {
        f"t{i}": str(args.teachers[i % k]) for i in range(4)
    }  # k distinct folders -> k adapters
    cfg = load(
        opd.Config,
        None,
        [
            *common(args, work / f"mem{k}"),
            "teachers=" + json.dumps(teachers),
            f"anchor={args.anchor}",
            "mar_lambda=0.02",
            "run.max_steps=1",
        ],
    )
    opd.main(cfg)
    train_peak = _status_mib(
        "VmHWM"
    )  # peak since training started (sampling + teacher passes + backward)
    out = {
        "teachers": k,
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        / 1024,  # incl. loading
        "runtime_rss_mib": base_rss,  # after imports, before the model
        "loaded_rss_mib": marks["loaded_rss_mib"],  # model + adapters resident, before training
        "train_peak_rss_mib": train_peak,
        "train_peak_above_runtime_mib": train_peak - base_rss,
        **weight_bytes(args, k),
    }
    if args.cuda:
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_step.json")
    parser.add_argument(
        "--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "flow_opd_bench"
    )
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=5, help="interleaved GRPO / OPD pairs timed")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="time iterations in this process's CPU seconds (robust on a shared machine) or wall seconds",
    )
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.cuda = torch.cuda.is_available()
    args.work.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)
    args.model_dir = build_model(args.work / "model", args.layers, args.heads)
    args.teachers = [
        make_teacher(args.model_dir, args.work / f"teacher{k}", k, args.rank) for k in range(4)
    ]
    args.anchor = make_teacher(args.model_dir, args.work / "anchor", 99, args.rank)
    if args.child:
        print(json.dumps(memory_child(args, args.child, args.work)))
        return

    t0 = time.perf_counter()
    timing = time_ratio(args, args.work / f"time-{int(t0)}")
    memory = {}
    for k in (1, 4):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(k),
            "--work",
            str(args.work),
            "--size",
            str(args.size),
            "--steps",
            str(args.steps),
            "--layers",
            str(args.layers),
            "--heads",
            str(args.heads),
            "--rank",
            str(args.rank),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        memory[k] = json.loads(proc.stdout.strip().splitlines()[-1])
    key = "cuda_peak_mib" if args.cuda else "train_peak_rss_mib"
    result = {
        "device": "cuda"
        if args.cuda
        else f"cpu ({os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})",
        "model": {
            "layers": args.layers,
            "hidden": 64 * args.heads,
            "lora_rank": args.rank,
            "size": args.size,
            "sde_steps": args.steps,
            "batch": "4 prompts x 2 images, CFG 4.5",
        },
        "timing": timing,
        "memory": {
            "1_teacher": memory[1],
            "4_teachers": memory[4],
            "ratio_4_over_1": memory[4][key] / memory[1][key],
            "ratio_above_runtime": memory[4]["train_peak_above_runtime_mib"]
            / memory[1]["train_peak_above_runtime_mib"],
            "measure": key,
        },
        "wall_s": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    emit(
        {
            "pairs": args.pairs,
            "clock": args.clock,
            "opd_over_grpo_median": timing["opd_over_grpo_median"],
            "opd_over_grpo_min": timing["opd_over_grpo_range"][0],
            "opd_over_grpo_max": timing["opd_over_grpo_range"][1],
            "opd_before_over_grpo_median": timing["opd_before_over_grpo_median"],
            "peak_memory_4_teachers_over_1": result["memory"]["ratio_4_over_1"],
            "peak_memory_above_runtime_4_teachers_over_1": result["memory"]["ratio_above_runtime"],
        }
    )


if __name__ == "__main__":
    main()
