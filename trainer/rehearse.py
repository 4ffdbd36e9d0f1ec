"""The rehearsal: a paper-scale preset built exactly as written, checked and run for one optimizer step on a CPU.

    python -m trainer.opd trainer/configs/opd_paper.yaml --rehearse --world-size 8
    python -m trainer.grpo trainer/configs/grpo_geneval.yaml --rehearse --world-size 1,8,32

What it prints, from the preset's own config and the recipe's own functions: at each world size the per-process
images, prompt groups, batches and gradient accumulation (``epoch.epoch_layout``, which refuses a layout that does not
divide); each task's share of the epochs (``data.plan_epoch``); every adapter with its rank and alpha; the split audit
of the training prompts (``data.audit_split``, the real one); and the loss terms of one optimizer step with their
weights. The step runs through the recipe's ``main``, with what cannot exist on a CPU machine replaced by named
stand-ins: the tiny SD3 built from a config for the model, random LoRAs of the published shape for hub teachers and
anchors, the cold start rehearsed from the preset that makes it (``merge_teachers.yaml`` for ``init: runs/merge``), and
pixel-statistic scorers for scorers with weights. The step's epoch is the smallest one with the preset's group size,
batch size and task mix (64 px images), so it costs seconds; its numbers mean nothing, its running means the code path
works with this config.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import scorers
from flowbase.errors import UserError, one_line
from flowmodels.adapters import LoraSpec, add_lora, save_adapter
from flowmodels.models import load_model
from flowmodels.tiny import (
    default_tiny_dir,
    default_tiny_flux_dir,
    save_tiny_flux,
    save_tiny_sd3,
)
from scorers.base import Requirements, Scores
from trainer import config, grpo, merge, opd, rewards, runs, sft
from trainer.config import ConfigError
from trainer.data import audit_split, load_datasets, mix_counts, partition_cycle, plan_epoch
from trainer.epoch import epoch_layout
from trainer.folders import TINY
from trainer.metrics import read_metrics
from trainer.objectives import velocity_weight

CONFIGS = Path(__file__).parent / "configs"
SIZE = 32  # the step's images: the tiny model at the preset's size would cost minutes for nothing
EPOCHS = 20  # epochs planned for the task shares


# -- stand-ins ---------------------------------------------------------------------------------------------------------
class StandInScorer:
    """A rehearsal's stand-in for a scorer whose weights cannot be here: the mean grey level of each image, in [0, 1],
    as value and reward (a number that means nothing; it varies between images, so groups are not tied)."""

    version = "stand-in"

    def __init__(self, name: str) -> None:
        self.name = name
        self.requires = Requirements()

    def __call__(self, images: list, prompts: list[str], meta: list | None = None) -> Any:
        values = [
            float(np.asarray(im.convert("L"), dtype=np.float64).mean() / 255) for im in images
        ]
        return Scores(values, values, None)


def needs_weights(name: str) -> bool:
    """Whether scorer ``name`` needs downloaded weights or an optional extra (so the rehearsal stands it in)."""
    module, cls = scorers.SCORERS[name].split(":")
    try:
        req = getattr(importlib.import_module(module), cls).requires
    except ImportError:
        return True
    return bool(req.weights or req.extra)


def rehearsal_scorer(name: str) -> Any:
    """The real scorer where it needs nothing downloaded, else a stand-in."""
    return StandInScorer(name) if needs_weights(name) else scorers.load(name)


class StandIns:
    """The tiny model and the LoRAs that stand in for hub adapters, in one temporary folder."""

    def __init__(self, root: Path, flux: bool = False) -> None:
        self.root = root
        # a FLUX preset rehearses on the tiny FLUX (by its folder), any other on the tiny SD3 (`model: tiny`)
        self.base = str(save_tiny_flux(default_tiny_flux_dir())) if flux else TINY
        self.kind = "FLUX.1" if flux else "SD3"
        self.model = load_model(self.base if flux else save_tiny_sd3(default_tiny_dir()))
        self.made: dict[str, Path] = {}  # role -> folder
        self.by_source: dict[
            str, Path
        ] = {}  # one stand-in per adapter source (a merge's teachers are OPD's too)

    def lora(self, role: str, spec: LoraSpec) -> Path:
        """A LoRA of ``spec``'s shape on the tiny model, with a random delta (teachers must differ from the base)."""
        name = f"standin{len(self.made)}"
        torch.manual_seed(len(self.made))
        add_lora(self.model.denoiser, name, spec)
        g = torch.Generator().manual_seed(100 + len(self.made))
        with torch.no_grad():
            for key, p in self.model.denoiser.named_parameters():
                if "lora_B" in key and f".{name}." in key:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        folder = save_adapter(
            self.model.denoiser, name, self.root / name, {"base_model": self.base}
        )
        self.made[role] = folder
        return folder


def is_flux(model: str | None) -> bool:
    """Whether a preset's model is a FLUX.1 (a local folder's pipeline class, else ``flux`` in the hub id)."""
    if not model:
        return False
    index = Path(model) / "model_index.json"
    if index.exists():
        return bool(json.loads(index.read_text()).get("_class_name") == "FluxPipeline")
    return "flux" in model.lower()


def producing_preset(folder: str) -> tuple[Path, str, Any] | None:
    """The preset in trainer/configs whose run writes ``folder`` (e.g. runs/merge -> merge_teachers.yaml)."""
    want = Path(folder).as_posix().rstrip("/")
    for path in sorted(CONFIGS.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        out = raw.get("out") or (raw.get("run") or {}).get("out")
        if out is None or Path(out).as_posix().rstrip("/") != want:
            continue
        for recipe, module in (("merge", merge), ("sft", sft), ("grpo", grpo), ("opd", opd)):
            try:
                return path, recipe, config.load(module.Config, path)
            except ConfigError:
                continue
    return None


def stand_in_adapter(kit: StandIns, role: str, source: str, notes: list[str]) -> Path:
    """A stand-in for adapter ``source``: the shape its producing preset gives it, else Flow-GRPO's published one."""
    if source in kit.by_source:
        kit.made[role] = kit.by_source[source]
        return kit.by_source[source]
    folder = _new_stand_in(kit, role, source, notes)
    kit.by_source[source] = kit.made[role] = folder
    return folder


def _new_stand_in(kit: StandIns, role: str, source: str, notes: list[str]) -> Path:
    made = producing_preset(source)
    spec = LoraSpec()
    if made is not None and made[1] == "merge":
        path, _, mcfg = made
        out = _rehearse_merge(kit, mcfg, notes)
        notes.append(f"{role} {source}: rehearsed from {_rel(path)} on stand-in teachers")
        return out
    if made is not None and hasattr(made[2], "lora"):
        spec = made[2].lora
        notes.append(f"{role} {source}: a stand-in of the LoRA {_rel(made[0])} trains")
    else:
        notes.append(f"{role} {source}: a stand-in of Flow-GRPO's published shape")
    return kit.lora(role, spec)


def _rehearse_merge(kit: StandIns, mcfg: Any, notes: list[str]) -> Path:
    teachers = {
        name: str(stand_in_adapter(kit, f"teachers.{name}", src, notes))
        for name, src in mcfg.teachers.items()
    }
    out = kit.root / f"merge{len(kit.made)}"
    merge.main(dataclasses.replace(mcfg, teachers=teachers, model=None, out=str(out)))
    return out


# -- what the preset says at a world size ------------------------------------------------------------------------------
def layout_lines(recipe: str, cfg: Any, world: int) -> list[str]:
    """Per-process numbers at ``world`` processes; ``epoch_layout`` raises when they do not divide."""
    if recipe == "merge":
        return ["one process merges (nothing to split)"]
    if recipe == "sft":
        total = len(cfg.datasets) * cfg.prompts_per_task * cfg.images_per_prompt
        per = -(-total // world)
        return [
            f"teacher samples: {total} ({cfg.prompts_per_task} prompts x {cfg.images_per_prompt} images x "
            f"{len(cfg.datasets)} tasks), about {per} per process",
            f"an optimizer step: {cfg.grad_accum} batch(es) of {cfg.batch_size} per process "
            f"({cfg.grad_accum * cfg.batch_size * world} images over the world)",
        ]
    s = cfg.sample
    lay = epoch_layout(s, world)
    total = s.groups_per_epoch * s.group_size
    groups = lay.images_per_rank / s.group_size
    spans = "" if lay.images_per_rank % s.group_size == 0 else ": groups span processes"
    T = s.train_timesteps
    return [
        f"an epoch: {s.groups_per_epoch} prompt groups x {s.group_size} images = {total} images",
        f"per process: {lay.images_per_rank} images ({groups:g} prompt groups{spans}) in {lay.batches_per_rank} "
        f"batches of {s.batch_size}",
        f"per optimizer step: {lay.accum_batches} batches x {T} trained steps = {lay.accum_batches * T} "
        f"accumulated micro-steps; {s.steps_per_epoch} optimizer steps an epoch",
    ]


def share_lines(recipe: str, cfg: Any, pools: dict) -> list[str]:
    """Each task's share of the images of the first ``EPOCHS`` epochs, beside the stated mix."""
    if recipe in ("merge", "sft"):
        return []
    partitions = getattr(cfg, "partitions", None) or None
    task_mix = getattr(cfg, "task_mix", None) or None
    stated = partitions or task_mix
    epochs = len(partition_cycle(partitions)) * 4 if partitions else EPOCHS
    seen: Counter[str] = Counter()
    for epoch in range(epochs):
        plan = plan_epoch(
            pools,
            epoch,
            groups=cfg.sample.groups_per_epoch,
            group_size=cfg.sample.group_size,
            seed=cfg.run.seed,
            partitions=partitions,
            task_mix=task_mix,
        )
        seen.update(it.task for it in plan.items)
    total = sum(seen.values())
    how = (
        "partitions (whole epochs)"
        if partitions
        else "task_mix (shares of every epoch)"
        if task_mix
        else "none: drawn from the union, the pool sizes decide"
    )
    lines = [f"stated mix: {how}"]
    for task in pools:
        want = f", stated {100 * stated[task] / sum(stated.values()):.1f}%" if stated else ""
        lines.append(
            f"{task:<10} {100 * seen[task] / total:5.1f}% of the images of {epochs} epochs{want}"
        )
    if task_mix:
        counts = mix_counts(task_mix, cfg.sample.groups_per_epoch)
        lines.append("groups an epoch: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return lines


def rehearsal_epoch(recipe: str, cfg: Any) -> Any:
    """The smallest epoch with the preset's group size, batch size and mix, one optimizer step long."""
    if recipe == "sft":
        need = -(-cfg.batch_size * cfg.grad_accum // (len(cfg.datasets) * cfg.images_per_prompt))
        return dataclasses.replace(cfg, prompts_per_task=max(1, need), size=SIZE)
    s = cfg.sample
    tasks = getattr(cfg, "task_mix", None) or {}
    for groups in range(1, 10_000):
        if (groups * s.group_size) % s.batch_size:
            continue
        if tasks and min(mix_counts(tasks, groups)[t] for t, n in tasks.items() if n) < 1:
            continue
        return dataclasses.replace(
            cfg,
            sample=dataclasses.replace(s, groups_per_epoch=groups, steps_per_epoch=1, size=SIZE),
        )
    raise ConfigError("no small epoch fits the preset's group size and batch size")


# -- the rehearsal -----------------------------------------------------------------------------------------------------
def rehearse(
    recipe: str,
    main: Callable[[Any], Any],
    cfg: Any,
    source: str,
    worlds: list[int],
    say: Callable[[str], None] = print,
) -> None:
    """Print what the preset does at each world size, then run one optimizer step of ``main`` with stand-ins."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings(
        "ignore", category=FutureWarning
    )  # library deprecations, not the preset's
    runs.setup_logging()  # third-party progress bars and chatter off (the level stays WARNING)
    say(f"rehearsal of {source} (trainer.{recipe})")
    pools = (
        load_datasets(cfg.datasets, getattr(cfg, "prompt_limit", None)) if recipe != "merge" else {}
    )
    for world in worlds:
        say(f"\nat world size {world}:")
        for line in layout_lines(recipe, cfg, world):
            say(f"  {line}")
    shares = share_lines(recipe, cfg, pools)
    if shares:
        say("\ntask shares:")
        for line in shares:
            say(f"  {line}")
    with tempfile.TemporaryDirectory(prefix="flow-opd-rehearsal-") as tmp:
        kit = StandIns(Path(tmp), flux=is_flux(getattr(cfg, "model", None)))
        notes: list[str] = []
        run_cfg = _stand_in_config(recipe, cfg, kit, notes)
        if recipe != "merge":
            audit = audit_split(pools, cfg.data.allow_eval_prompts)
            say(f"\nsplit audit (training prompts that are prompts of {', '.join(audit.audited)}):")
            for task, o in audit.overlaps.items():
                say(f"  {task:<10} {o.lines} of {o.total} ({cfg.datasets[task]})")
        say("\nstand-ins (what cannot exist on this machine):")
        for note in [
            f"model {cfg.model}: the tiny {kit.kind} built from a config ({SIZE} px images)",
            *notes,
        ]:
            say(f"  {note}")
        scorers = sorted(getattr(cfg, "scorer_names", lambda: set())())
        if scorers:
            kinds = [f"{n} ({'stand-in' if needs_weights(n) else 'real'})" for n in scorers]
            say(f"  scorers: {', '.join(kinds)}")
        previous = rewards.stand_in_scorers
        rewards.stand_in_scorers = rehearsal_scorer
        try:
            main(run_cfg)
        finally:
            rewards.stand_in_scorers = previous
        _report(recipe, cfg, run_cfg, kit, say)
    ran = "merged" if recipe == "merge" else "ran one optimizer step"
    sizes = ", ".join(map(str, worlds))
    say(f"\nok: {Path(source).name} builds, divides at world size {sizes} and {ran}")


def _stand_in_config(recipe: str, cfg: Any, kit: StandIns, notes: list[str]) -> Any:
    """The preset with stand-ins for weights, a temporary run folder and the rehearsal's small epoch."""
    if recipe == "merge":
        teachers = {
            n: str(stand_in_adapter(kit, f"teachers.{n}", s, notes))
            for n, s in cfg.teachers.items()
        }
        return dataclasses.replace(cfg, teachers=teachers, model=None, out=str(kit.root / "run"))
    changes: dict[str, Any] = {"model": kit.base}
    if getattr(cfg, "teachers", None):
        changes["teachers"] = {
            task: str(stand_in_adapter(kit, f"teachers.{task}", src, notes))
            for task, src in cfg.teachers.items()
        }
    if getattr(cfg, "anchor", None):
        changes["anchor"] = str(stand_in_adapter(kit, "anchor", cfg.anchor, notes))
    if cfg.init is not None:
        changes["init"] = str(stand_in_adapter(kit, "init", cfg.init, notes))
    if hasattr(cfg, "reward_servers"):
        changes["reward_servers"] = {}
    changes["run"] = dataclasses.replace(
        cfg.run,
        out=str(kit.root / "run"),
        max_steps=1,
        mixed_precision="no",
        cpu=True,
        log_with="none",
        eval_every=0,
        eval_benchmarks=(),
        keep_best=(),
        save_every=0,
        resume=None,
    )
    return rehearsal_epoch(recipe, dataclasses.replace(cfg, **changes))


def _report(recipe: str, cfg: Any, run_cfg: Any, kit: StandIns, say: Callable[[str], None]) -> None:
    out = Path(kit.root / "run")
    say("\nadapters:")
    student = out / "lora" / "adapter_config.json"
    if student.exists():
        role = "merged" if recipe == "merge" else "student"
        init = f"  (from init {cfg.init})" if getattr(cfg, "init", None) else ""
        say(f"  {role:<18} {_shape(student)}{init}")
    for role, folder in kit.made.items():
        if role.startswith(("teachers.", "anchor")) or recipe == "merge":
            say(f"  {role:<18} {_shape(folder / 'adapter_config.json')}")
    manifest = json.loads((out / "manifest.json").read_text())
    if recipe == "merge":
        worst, total = manifest.get("svd_rel_error"), manifest.get("svd_rel_error_total")
        errors = (
            ""
            if worst is None
            else f"; relative SVD error: worst module {worst:.3g}, all {total:.3g}"
        )
        say(
            f"\nthe merge: {manifest['method']} of {len(cfg.teachers)} teachers -> r {manifest['rank']} / alpha "
            f"{manifest.get('alpha')}{errors} (of the stand-ins; the real teachers' error goes to the run's manifest)"
        )
        return
    metrics = read_metrics(out)[0]
    s = getattr(run_cfg, "sample", None)
    what = (
        f"{s.groups_per_epoch} groups x {s.group_size} images in {s.groups_per_epoch * s.group_size // s.batch_size} "
        f"batches of {s.batch_size}"
        if s is not None
        else f"{run_cfg.prompts_per_task} prompts per task"
    )
    say(f"\none optimizer step on the CPU (1 process, {what}, {SIZE} px):")
    for key, weight in _loss_terms(recipe, cfg):
        if key in metrics:
            say(f"  {key:<16} {metrics[key]: .6g}   {weight}")
    for key in ("train/kept_fraction", "train/grad_norm"):
        if key in metrics:
            say(f"  {key:<16} {metrics[key]: .6g}")
    if recipe == "opd":
        say("  w(t) of the trained steps (sigma: weight): " + _step_weights(cfg, kit))


def _loss_terms(recipe: str, cfg: Any) -> list[tuple[str, str]]:
    if recipe == "grpo":
        return [
            (
                "loss/policy",
                f"x 1: PPO-clipped surrogate (clip {cfg.clip_range:g}, advantages clipped at {cfg.adv_clip:g})",
            ),
            ("loss/kl", f"x kl_beta {cfg.kl_beta:g}: KL to the base ({cfg.kl_normaliser})"),
            ("loss/total", "policy + kl_beta x kl"),
        ]
    if recipe == "opd":
        mar = (
            f"x mar_lambda {cfg.mar_lambda:g} toward the anchor"
            if cfg.anchor
            else "off (no anchor)"
        )
        return [
            (
                "loss/opd",
                f"x 1: {cfg.loss} distillation to the routed teachers, step weight {cfg.step_weight}",
            ),
            ("loss/mar", f"{mar} (steps with sigma <= {cfg.mar_sigma_max:g})"),
            ("loss/total", "opd + mar"),
        ]
    return [("loss/flow_matching", "x 1: flow matching on the teachers' samples")]


def _step_weights(cfg: Any, kit: StandIns) -> str:
    s = cfg.sample
    if cfg.step_weight == "uniform":
        return "1 at every step (step_weight uniform)"
    sig = kit.model.sigmas(s.steps, height=s.size, width=s.size)
    cap = float(sig[1]) if len(sig) > 2 else None
    parts = []
    for j in s.trained_steps(None):
        w = velocity_weight(sig[j], sig[j + 1], s.noise_level, cap, cfg.kl_normaliser).weight
        parts.append(f"{float(sig[j]):.3f}: {float(w):.3g}")
    return ", ".join(parts)


def _shape(adapter_config: Path) -> str:
    c = json.loads(adapter_config.read_text())
    targets = c.get("target_modules") or []
    return f"r {c['r']} / alpha {c['lora_alpha']}, {len(targets)} target module names"


def _rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


# -- command line ------------------------------------------------------------------------------------------------------
def cli(cls: type, main: Callable[[Any], Any], argv: list[str] | None = None) -> None:
    """A recipe's entry point: ``[CONFIG.yaml] [key=value ...]`` trains; with ``--rehearse`` it rehearses."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--rehearse" not in args:
        with _user_errors():
            main(config.parse(cls, args))
        return
    recipe = config.entry_point(cls).rsplit(".", 1)[-1]  # run as `python -m trainer.opd`: __main__
    parser = argparse.ArgumentParser(
        prog=f"python -m trainer.{recipe}",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument(
        "--rehearse", action="store_true", help="rehearse the preset instead of training"
    )
    parser.add_argument(
        "--world-size",
        default="1",
        help="process count(s) to lay the epoch out for, e.g. 8 or 1,8,32 (default 1)",
    )
    known, rest = parser.parse_known_args(args)
    try:
        worlds = [int(w) for w in known.world_size.split(",") if w.strip()]
        if not worlds or min(worlds) < 1:
            raise ValueError
    except ValueError:
        sys.stderr.write(
            f"error: --world-size {known.world_size!r} must be positive integers, e.g. 8 or 1,8,32\n"
        )
        raise SystemExit(2) from None
    cfg = config.parse(cls, rest)
    source = rest[0] if rest and "=" not in rest[0] else "(defaults)"
    with _user_errors():
        rehearse(recipe, main, cfg, source, worlds)


@contextmanager
def _user_errors() -> Iterator[None]:
    """The ``UserError`` family as one line on stderr and exit status 2; anything else keeps its traceback."""
    try:
        yield
    except UserError as e:
        sys.stderr.write(f"error: {one_line(e)}\n")
        raise SystemExit(2) from None
