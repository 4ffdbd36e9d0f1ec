"""Generate images for prompts with a recorded, resumable manifest.

Layout of an output folder::

    out/settings.json      every setting that changes pixels (model, LoRA, steps, CFG, size, seeds rule, ...)
    out/images/00012_03.png  prompt index 12, image 3
    out/manifest.jsonl     one line per finished image: ids, prompt, metadata, seed, file, sha256

An image is written to a temporary name and renamed, then its manifest line is appended and flushed, so a run
killed at any point leaves only complete images and complete lines (a torn last line is dropped on resume).
Re-running the same command skips what the manifest already lists; a different setting in the same folder is an
error, never a silent mix (a folder holding no images yet, left by a run that failed before its first one, takes
the new settings). Seeds: image ``j`` of prompt index ``i`` uses ``seed + i * K + j`` (K images per prompt),
T2I-CompBench's rule, so any image can be regenerated on its own. Steps, CFG and size left unset are the model's
own (``flowmodels.models.native_settings``: the mini model's 32 px and 10 steps), else the paper's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from flowbase.errors import InputError
from flowmodels.adapters import fuse, load_adapter
from flowmodels.images import to_pil
from flowmodels.models import (
    check_sampling,
    load_for_sampling,
    native_settings,
    resolve_device,
    resolve_dtype,
)
from flowmodels.pipelines import PipelineModel, sample_images
from harness.benchmarks import (
    PromptItem,
    load_benchmark_prompts,
    load_prompt_file,
    sampling_settings,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateSettings:
    """Everything that determines the pixels (recorded in settings.json and checked on resume)."""

    model: str = "stabilityai/stable-diffusion-3.5-medium"
    lora: str | None = None
    # None: what the model declares as its own (``flowmodels.models.native_settings``), else the paper's 40 steps,
    # CFG 4.5, 512 px; ``generate_images`` fills them in before anything is written
    steps: int | None = None
    cfg: float | None = None
    height: int | None = None
    width: int | None = None
    seed: int = 42
    images_per_prompt: int = 1
    negative_prompt: str = ""
    t5_length: int = 128
    noise_level: float = 0.0  # 0 = Euler ODE, the evaluation protocol
    batch_size: int = 8  # does not change pixels beyond float noise; not checked on resume
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps must be >= 1, got {self.steps}")
        if self.images_per_prompt < 1:
            raise InputError(f"--images-per-prompt must be >= 1, got {self.images_per_prompt}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if min(self.height or 1, self.width or 1) <= 0:
            raise InputError(f"--size must be positive, got {self.height}x{self.width}")
        if self.cfg is not None and self.cfg < 0:
            raise InputError(f"--cfg must be >= 0, got {self.cfg}")

    def with_model_defaults(self, model: Any = None) -> GenerateSettings:
        """A copy whose unset sampling settings are the model's own (``model``: the loaded one, else
        ``self.model`` read from its folder), then the paper's."""
        unset = {k for k in ("steps", "cfg", "height", "width") if getattr(self, k) is None}
        if not unset:
            return self
        filled = sampling_settings([], native=native_settings(model or self.model))
        return replace(self, **{k: filled[k] for k in unset})

    def seed_for(self, prompt_index: int, image_index: int) -> int:
        """The seed of image ``image_index`` of the prompt at ``prompt_index``."""
        return self.seed + prompt_index * self.images_per_prompt + image_index

    def pixel_settings(self) -> dict[str, Any]:
        """The settings that must match for a folder to be resumed."""
        d = asdict(self)
        for k in ("batch_size", "device"):
            d.pop(k)
        return d


@dataclass(frozen=True)
class ImageRecord:
    """One manifest line."""

    prompt_id: str
    prompt_index: int
    image_index: int
    prompt: str
    meta: dict[str, Any]
    seed: int
    file: str  # relative to the output folder
    sha256: str


@dataclass(frozen=True)
class GenerateResult:
    generated: int
    skipped: int
    manifest: Path
    records: list[ImageRecord]


def load_prompt_items(
    *, prompts: str | Path | None = None, benchmark: str | None = None, limit: int | None = None
) -> list[PromptItem]:
    """Prompts from a file or a benchmark (exactly one), optionally only the first ``limit``."""
    if (prompts is None) == (benchmark is None):
        raise InputError("give exactly one of --prompts FILE or --benchmark NAME")
    items = load_benchmark_prompts(benchmark) if benchmark else load_prompt_file(prompts)  # type: ignore[arg-type]
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be >= 1, got {limit}")
        items = items[:limit]
    return items


def read_manifest(path: Path) -> list[ImageRecord]:
    """The complete lines of a manifest (a torn last line from a crash is ignored)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(ImageRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            log.warning("ignoring an incomplete manifest line in %s", path)
    return records


def _write_manifest(path: Path, records: list[ImageRecord]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(asdict(r)) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_settings(out: Path, settings: GenerateSettings) -> None:
    path = out / "settings.json"
    want = settings.pixel_settings()
    # a folder without images (a run that failed before its first image) holds nothing to conflict with
    if path.exists() and _holds_images(out):
        have = json.loads(path.read_text())
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff:
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise InputError(
                f"{out} holds images made with other settings ({shown}); use another --out"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(want, indent=2))


def _holds_images(out: Path) -> bool:
    """Whether ``out``'s manifest lists an image that is still there."""
    return any((out / r.file).exists() for r in read_manifest(out / "manifest.jsonl"))


def generate_images(
    items: list[PromptItem],
    settings: GenerateSettings,
    out: str | Path,
    *,
    model: Any = None,
    progress: bool = True,
) -> GenerateResult:
    """Generate every (prompt, image) pair not already in ``out``'s manifest; returns what was done."""
    out = Path(out)
    if model is None:  # a device or dtype this machine lacks fails before anything is written
        resolve_dtype(settings.dtype, resolve_device(settings.device))
        check_sampling(settings.model, lora=settings.lora, noise_level=settings.noise_level)
    settings = settings.with_model_defaults(model)
    _check_settings(out, settings)
    (out / "images").mkdir(exist_ok=True)
    manifest = out / "manifest.jsonl"
    records = read_manifest(manifest)
    done = {(r.prompt_index, r.image_index) for r in records if (out / r.file).exists()}
    records = [r for r in records if (r.prompt_index, r.image_index) in done]
    _write_manifest(manifest, records)  # drop torn lines and lines whose image is gone

    todo = [
        (item, j)
        for item in items
        for j in range(settings.images_per_prompt)
        if (item.index, j) not in done
    ]
    skipped = len(items) * settings.images_per_prompt - len(todo)
    if not todo:
        return GenerateResult(0, skipped, manifest, records)
    if model is None:
        model = load_generation_model(settings)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="generating", unit="img", disable=not progress)
    with manifest.open("a", encoding="utf-8") as fh:
        for start in range(0, len(todo), settings.batch_size):
            batch = todo[start : start + settings.batch_size]
            new = _generate_batch(model, batch, settings, out)
            for rec in new:
                fh.write(json.dumps(asdict(rec)) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            records.extend(new)
            bar.update(len(batch))
    bar.close()
    return GenerateResult(len(todo), skipped, manifest, records)


def load_generation_model(settings: GenerateSettings) -> Any:
    """Load the model (and LoRA) that ``settings`` names."""
    check_sampling(settings.model, lora=settings.lora, noise_level=settings.noise_level)
    model = load_for_sampling(
        settings.model, dtype=settings.dtype, device=settings.device, t5_length=settings.t5_length
    )
    if settings.lora:
        assert not isinstance(model, PipelineModel)  # check_sampling refused a LoRA there
        info = load_adapter(model.denoiser, settings.lora, "lora")
        if info.base_model and info.base_model != settings.model:
            log.warning(
                "LoRA %s was trained on %s; applying it to %s",
                settings.lora,
                info.base_model,
                settings.model,
            )
        # generation never switches adapters: fold the LoRA into the weights (2x faster in the mini model)
        fuse(model.denoiser)
    return model


def _generate_batch(
    model: Any, batch: list[tuple[PromptItem, int]], settings: GenerateSettings, out: Path
) -> list[ImageRecord]:
    seeds = [settings.seed_for(item.index, j) for item, j in batch]
    images = sample_images(
        model,
        [item.prompt for item, _ in batch],
        seeds,
        steps=settings.steps,
        cfg=settings.cfg,
        noise_level=settings.noise_level,
        height=settings.height,
        width=settings.width,
        negative_prompt=settings.negative_prompt,
    )
    records = []
    for (item, j), seed, img in zip(batch, seeds, to_pil(images), strict=True):
        rel = f"images/{item.index:05d}_{j:02d}.png"
        path = out / rel
        tmp = path.with_name(path.name + ".tmp")
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
        records.append(
            ImageRecord(
                prompt_id=item.id,
                prompt_index=item.index,
                image_index=j,
                prompt=item.prompt,
                meta=item.meta,
                seed=seed,
                file=rel,
                sha256=sha256_file(path),
            )
        )
    return records
