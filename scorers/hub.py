"""Where scorer weights come from: pinned hub specs or local paths, with one clear error when missing.

A weights spec is ``org/repo@revision`` (a whole-repo snapshot of model files), optionally followed by
``:file`` for one file (``xswu/HPSv2@697403c...:HPS_v2.1_compressed.pt``) or ``:glob,glob`` for a subset
(``laion/CLIP-ViT-H-14-laion2B-s32B-b79K@1c2b849...:*.json,*.txt``). Scorers list their specs in
``Requirements.weights``; ``harness fetch NAME`` should call ``fetch_scorer(NAME)``. At load time ``resolve``
accepts a spec or a local path (file or folder), uses the Hugging Face cache (and the network, when allowed),
and turns any failure into ``WeightsNotFoundError``: one line naming what is missing and how to get it.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

import scorers
from flowbase.errors import InputError, MissingError

log = logging.getLogger(__name__)

# what a whole-repo snapshot needs for transformers models (not TF/Flax/ONNX copies)
MODEL_FILES = ("*.json", "*.txt", "*.safetensors", "*.model")
_GLOB_CHARS = set("*?[")


class WeightsNotFoundError(MissingError):
    """A scorer's weights are neither a local path nor in the hub cache (and could not be downloaded)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class WeightSpec:
    """A parsed weights spec: repo, pinned revision, and the files wanted (empty: model files)."""

    repo: str
    revision: str | None
    files: tuple[str, ...] = ()

    @property
    def single_file(self) -> str | None:
        """The one plain filename asked for, if that is what the spec names."""
        if len(self.files) == 1 and not (_GLOB_CHARS & set(self.files[0])):
            return self.files[0]
        return None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        files = f":{','.join(self.files)}" if self.files else ""
        return f"{self.repo}{rev}{files}"


def parse_spec(spec: str) -> WeightSpec:
    """Parse ``org/repo[@revision][:file-or-globs]``; ValueError if it is not of that form."""
    head, _, files = spec.partition(":")
    repo, _, revision = head.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")) or repo.startswith((".", "/", "~")):
        raise InputError(f"{spec!r} is not a hub spec of the form org/repo@revision[:file]")
    names = tuple(f.strip() for f in files.split(",") if f.strip())
    return WeightSpec(repo=repo, revision=revision or None, files=names)


def fetch(spec: str | WeightSpec) -> Path:
    """Download (or find in the cache) what ``spec`` names; returns the file or the snapshot folder."""
    from huggingface_hub import hf_hub_download, snapshot_download

    s = parse_spec(spec) if isinstance(spec, str) else spec
    if s.single_file is not None:
        return Path(hf_hub_download(s.repo, s.single_file, revision=s.revision))
    patterns = list(s.files) if s.files else list(MODEL_FILES)
    folder = Path(snapshot_download(s.repo, revision=s.revision, allow_patterns=patterns))
    if not s.files and not any(folder.glob("*.safetensors")):
        # older repos ship only pytorch_model.bin; fetch it only when there is no safetensors copy
        folder = Path(
            snapshot_download(s.repo, revision=s.revision, allow_patterns=[*patterns, "*.bin"])
        )
    return folder


def resolve(spec_or_path: str | Path, scorer: str, arg: str = "weights") -> Path:
    """A local path as is, else the cached/downloaded hub files; WeightsNotFoundError says how to get them."""
    path = Path(spec_or_path).expanduser()
    if path.exists():
        return path
    text = str(spec_or_path)
    try:
        spec = parse_spec(text)
    except ValueError:
        raise WeightsNotFoundError(
            f"{scorer}: weights {text!r} are neither a local path nor a hub spec (org/repo@revision); "
            f"run `harness fetch {scorer}` or pass {arg}=/path/to/a/local/copy"
        ) from None
    try:
        return fetch(spec)
    except (
        Exception
    ) as e:  # LocalEntryNotFoundError, OfflineModeIsEnabled, GatedRepoError, HTTP errors, ...
        raise WeightsNotFoundError(
            f"{scorer}: weights {spec} are not available here ({type(e).__name__}); run "
            f"`harness fetch {scorer}` on a machine with hub access and copy the Hugging Face cache, "
            f"or pass {arg}=/path/to/a/local/copy"
        ) from None


def fetch_scorer(name: str) -> list[Path]:
    """Fetch every weights spec a registered scorer declares (what ``harness fetch NAME`` should call)."""
    if name not in scorers.SCORERS:
        scorers.load(name)  # raises UnknownScorerError with suggestions
    module, cls = scorers.SCORERS[name].split(":")
    requires = getattr(importlib.import_module(module), cls).requires
    paths = []
    for spec in requires.weights:
        try:
            paths.append(fetch(spec))
        except Exception as e:
            raise WeightsNotFoundError(
                f"{name}: could not fetch {spec} ({type(e).__name__}: {_first_line(e)}); "
                "check hub access and `hf auth login` for gated repos"
            ) from None
        log.info("%s: %s -> %s", name, spec, paths[-1])
    return paths


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""
