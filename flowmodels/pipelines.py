"""Evaluation-only models: any supported diffusers text-to-image pipeline, sampled through its own ``__call__``.

A model folder whose ``model_index.json`` names a pipeline with no ``FlowModel`` backend (``flowmodels.models``)
but listed in ``FAMILIES`` is loaded with that diffusers class and generates with the protocol's steps, guidance,
size and negative prompt, and one CPU ``torch.Generator`` per image seeded by that image's seed (so an image
depends only on its seed, up to float rounding between batch sizes). The pipeline's own scheduler runs its own
sampler: no SDE, no log-probabilities and no LoRA, so these models can be evaluated, not trained.

``family_record`` is what a run's protocol stores about the model: pipeline class, guidance kind (``cfg``: two
passes mixed by the scale; ``distilled``: the scale is an input embedding of a guidance-distilled model;
``none``), scheduler class and its shift settings, text-encoder token lengths and the call options fixed here.
It is read from the folder's config files, without loading weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from flowbase.errors import InputError
from flowmodels.sampling import rollout

if TYPE_CHECKING:
    from flowmodels.backend import FlowModel

GUIDANCE_KINDS = ("cfg", "distilled", "none")


@dataclass(frozen=True)
class Family:
    """How one diffusers pipeline class is sampled for evaluation: its own defaults and fixed call options."""

    name: str  # what tables and `harness ls models` call it
    steps: int  # the pipeline's own default number of steps
    guidance: float  # its default guidance scale (CFG, or the distilled guidance it embeds)
    guidance_kind: str  # cfg | distilled | none
    negative_prompt: bool  # whether its __call__ takes a negative prompt
    denoiser: str  # the component whose config holds sample_size (and patch_size)
    # the text encoders' token length when the pipeline takes it as max_sequence_length; None: each tokenizer's
    # model_max_length (CLIP: 77)
    max_sequence_length: int | None = None
    # call options fixed so the protocol means the same everywhere (each is recorded with the run)
    options: dict[str, Any] = field(default_factory=dict)
    # an empty negative prompt becomes zero embeddings (the pipeline's force_zeros_for_empty_prompt)
    zeros_for_empty_negative: bool = False


# diffusers pipeline class in model_index.json -> how it is evaluated (tested on tiny configs of each:
# flowmodels.tiny_pipelines)
FAMILIES: dict[str, Family] = {
    "StableDiffusionXLPipeline": Family(
        "SDXL", 50, 5.0, "cfg", True, "unet", zeros_for_empty_negative=True
    ),
    "SanaPipeline": Family(
        "SANA",
        20,
        4.5,
        "cfg",
        True,
        "transformer",
        max_sequence_length=300,
        # the exact requested size (no snapping to the aspect-ratio bins and resizing back)
        options={"use_resolution_binning": False},
    ),
    "SanaSprintPipeline": Family(
        "SANA-Sprint",
        2,
        4.5,
        "distilled",  # one pass; the scale enters through the transformer's guidance embedding
        False,
        "transformer",
        max_sequence_length=300,
        options={"use_resolution_binning": False},
    ),
    "PixArtAlphaPipeline": Family(
        "PixArt-Alpha",
        20,
        4.5,
        "cfg",
        True,
        "transformer",
        max_sequence_length=120,
        options={"use_resolution_binning": False, "clean_caption": False},
    ),
    "PixArtSigmaPipeline": Family(
        "PixArt-Sigma",
        20,
        4.5,
        "cfg",
        True,
        "transformer",
        max_sequence_length=300,
        # clean_caption rewrites prompts only where bs4 and ftfy happen to be installed: prompts are used as given
        options={"use_resolution_binning": False, "clean_caption": False},
    ),
}

# scheduler config keys a run records (when the scheduler has them)
SCHEDULER_KEYS = (
    "shift",
    "flow_shift",
    "use_dynamic_shifting",
    "base_shift",
    "max_shift",
    "base_image_seq_len",
    "max_image_seq_len",
    "time_shift_type",
    "use_flow_sigmas",
    "prediction_type",
    "timestep_spacing",
    "algorithm_type",
    "solver_order",
    "use_karras_sigmas",
    "sigma_data",
)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a model folder; a malformed file is an ``InputError`` naming it."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a JSON object")
    return data


def _config(folder: Path, component: str, name: str = "config.json") -> dict[str, Any]:
    path = folder / component / name
    return read_json(path) if path.exists() else {}


def vae_scale(folder: Path) -> int:
    """Pixels per latent cell: 2 ** (VAE blocks - 1) (``AutoencoderKL``: block_out_channels; ``AutoencoderDC``:
    encoder_block_out_channels), as the pipelines compute it."""
    cfg = _config(folder, "vae")
    blocks = cfg.get("encoder_block_out_channels") or cfg.get("block_out_channels") or [0] * 4
    return 2 ** (len(blocks) - 1)


def family_settings(folder: Path, family: Family) -> dict[str, Any]:
    """The family's default steps, guidance scale and kind, and the model's own size (its denoiser's ``sample_size`` times
    the VAE's scale: 1024 px for SDXL, SANA 1024px and PixArt-Sigma 1024)."""
    out: dict[str, Any] = {
        "steps": family.steps,
        "cfg": family.guidance,
        "guidance": guidance_kind(folder, family),
    }
    sample = _config(folder, family.denoiser).get("sample_size")
    if isinstance(sample, int):
        out["height"] = out["width"] = sample * vae_scale(folder)
    return out


def size_multiple(folder: Path, family: Family) -> int:
    """What height and width must be a multiple of: the VAE's scale times the transformer's patch size (a UNet
    pads odd latent sizes itself)."""
    return vae_scale(folder) * int(_config(folder, family.denoiser).get("patch_size") or 1)


def guidance_kind(folder: Path, family: Family) -> str:
    """``distilled`` when the denoiser embeds the guidance scale (``guidance_embeds``), else the family's."""
    return (
        "distilled"
        if _config(folder, family.denoiser).get("guidance_embeds")
        else family.guidance_kind
    )


def text_lengths(folder: Path, family: Family) -> dict[str, int]:
    """Token length per text encoder: the pipeline's ``max_sequence_length``, or each tokenizer's own."""
    spec = read_json(folder / "model_index.json")
    encoders = sorted(
        k
        for k, v in spec.items()
        if k.startswith("text_encoder") and isinstance(v, list) and v and v[0] is not None
    )
    if family.max_sequence_length is not None:
        return {k: family.max_sequence_length for k in encoders}
    out = {}
    for enc in encoders:
        tok = _config(folder, enc.replace("text_encoder", "tokenizer"), "tokenizer_config.json")
        if isinstance(tok.get("model_max_length"), int):
            out[enc] = tok["model_max_length"]
    return out


def scheduler_record(folder: Path) -> dict[str, Any]:
    """The scheduler's class and the settings that shape its noise levels."""
    cfg = _config(folder, "scheduler", "scheduler_config.json")
    return {"class": cfg.get("_class_name"), **{k: cfg[k] for k in SCHEDULER_KEYS if k in cfg}}


def family_record(folder: Path, family: Family | None, backend: str | None) -> dict[str, Any]:
    """What a run's protocol records about the model (see the module docstring); read from config files."""
    cls = read_json(folder / "model_index.json").get("_class_name")
    rec: dict[str, Any] = {"pipeline": cls}
    if backend is not None:  # a FlowModel backend samples with rollout's Euler/SDE steps
        embeds = _config(folder, "transformer").get("guidance_embeds")  # FLUX.1-dev
        guidance = "distilled" if embeds else "cfg"
        rec.update(sampler="flowmodels.sampling.rollout", backend=backend, guidance=guidance)
    if family is not None:
        rec.update(
            family=family.name,
            sampler="pipeline __call__",
            guidance=guidance_kind(folder, family),
            negative_prompt="zeros when empty" if family.zeros_for_empty_negative else "encoded",
            call_options=dict(family.options),
        )
        denoiser = _config(folder, family.denoiser)
        if rec["guidance"] == "distilled" and "guidance_embeds_scale" in denoiser:
            rec["guidance_embeds_scale"] = denoiser["guidance_embeds_scale"]
        rec["text_lengths"] = text_lengths(folder, family)
    # a backend's own text lengths are generation settings (SD3's t5_length)
    if (folder / "scheduler").exists():
        rec["scheduler"] = scheduler_record(folder)
    return rec


def missing_components(folder: Path) -> list[str]:
    """Components ``model_index.json`` names whose weights are not in the folder (an incomplete download)."""
    spec = read_json(folder / "model_index.json")
    missing = []
    for name, entry in sorted(spec.items()):
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2:
            continue
        if entry[0] not in ("diffusers", "transformers") or entry[1] is None:
            continue
        sub = folder / name
        is_model = not sub.exists() or (sub / "config.json").exists()
        weights = [*sub.glob("*.safetensors"), *sub.glob("*.bin")] if sub.exists() else []
        if is_model and not weights:
            missing.append(name)
    return missing


@dataclass
class PipelineModel:
    """A loaded diffusers pipeline that generates through its own ``__call__`` (evaluation only)."""

    model_id: str
    folder: Path
    family: Family
    pipe: Any
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def from_pretrained(
        cls,
        folder: Path,
        model_id: str,
        family: Family,
        *,
        dtype: torch.dtype,
        device: torch.device,
    ) -> PipelineModel:
        import diffusers

        cls_name = read_json(folder / "model_index.json")["_class_name"]
        pipe = getattr(diffusers, cls_name).from_pretrained(str(folder), torch_dtype=dtype)
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return cls(model_id, folder, family, pipe, device, dtype)

    def native_settings(self) -> dict[str, Any]:
        return family_settings(self.folder, self.family)

    def check(self, *, height: int, width: int, negative_prompt: str) -> None:
        """Refuse settings the pipeline cannot honour (before it runs)."""
        multiple = size_multiple(self.folder, self.family)
        if height % multiple or width % multiple:
            raise InputError(
                f"{self.model_id}: size {height}x{width} is not a multiple of {multiple} "
                f"({self.family.name}); pass --size N*{multiple}"
            )
        if negative_prompt and not self.family.negative_prompt:
            raise InputError(f"{self.model_id}: {self.family.name} takes no negative prompt")

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        *,
        steps: int,
        cfg: float,
        height: int,
        width: int,
        negative_prompt: str = "",
    ) -> Tensor:
        """Images [B, 3, H, W] in [0, 1] (float32, CPU), image ``b`` from a generator seeded ``seeds[b]``."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        self.check(height=height, width=width, negative_prompt=negative_prompt)
        fam = self.family
        kwargs: dict[str, Any] = dict(fam.options)
        if fam.max_sequence_length is not None:
            kwargs["max_sequence_length"] = fam.max_sequence_length
        if guidance_kind(self.folder, fam) != "none":
            kwargs["guidance_scale"] = cfg
        if fam.negative_prompt:
            empty = fam.zeros_for_empty_negative and not negative_prompt
            kwargs["negative_prompt"] = None if empty else [negative_prompt] * len(prompts)
        out = self.pipe(
            prompt=list(prompts),
            num_inference_steps=steps,
            height=height,
            width=width,
            generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds],
            output_type="pt",
            **kwargs,
        )
        return out.images.float().cpu().clamp(0, 1)


def sample_images(
    model: FlowModel | PipelineModel,
    prompts: list[str],
    seeds: list[int],
    *,
    steps: int,
    cfg: float,
    height: int,
    width: int,
    negative_prompt: str = "",
    noise_level: float = 0.0,
) -> Tensor:
    """Images [B, 3, H, W] in [0, 1] for the harness: a ``FlowModel`` through ``rollout`` (Euler ODE at noise
    level 0), an evaluation-only pipeline through its own ``__call__``."""
    if isinstance(model, PipelineModel):
        if noise_level != 0:
            raise InputError(
                f"{model.model_id}: {model.family.name} samples with its own scheduler; "
                "noise level must be 0"
            )
        return model.generate(
            prompts,
            seeds,
            steps=steps,
            cfg=cfg,
            height=height,
            width=width,
            negative_prompt=negative_prompt,
        )
    ro = rollout(
        model,
        prompts,
        seeds,
        steps=steps,
        cfg=cfg,
        noise_level=noise_level,
        height=height,
        width=width,
        negative_prompt=negative_prompt,
    )
    assert ro.images is not None
    return ro.images
