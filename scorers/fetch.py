"""Scorer weights: is each one on this machine, download them (``harness fetch``), and the one-line error for
when they are missing.

A weight spec in ``Requirements.weights`` is a hub repo ``org/name`` with an optional ``@revision``, or a local
path. Presence is checked against the Hugging Face cache without touching the network
(``snapshot_download(local_files_only=True)``), so ``harness ls scorers`` is offline-safe. Downloading needs the
hub; on a machine without it (``HF_HUB_OFFLINE=1`` or no route), ``fetch`` fails with one line saying where to
run it and what to copy back.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from flowbase.errors import MissingError, UserError
from scorers import scorer_class
from scorers.base import Requirements

log = logging.getLogger(__name__)


class HubUnavailableError(UserError, RuntimeError):
    """The Hugging Face hub cannot be reached from this machine."""


@dataclass(frozen=True)
class WeightSpec:
    """One entry of Requirements.weights, parsed."""

    repo: str  # hub repo id, or a local path
    revision: str | None = None
    files: tuple[str, ...] = ()  # ``:file`` or ``:glob,glob`` after the revision (see scorers.hub)

    @property
    def is_local_path(self) -> bool:
        """A path (absolute, ./relative, ~) rather than a hub id."""
        return self.repo.startswith(("/", ".", "~")) or Path(self.repo).expanduser().exists()


def parse_spec(spec: str) -> WeightSpec:
    """``org/name@rev[:file-or-globs]`` -> WeightSpec(org/name, rev, files); a path stays a path."""
    if spec.startswith(("/", ".", "~")):
        return WeightSpec(spec)
    head, _, files = spec.partition(":")
    repo, _, revision = head.partition("@")
    names = tuple(f.strip() for f in files.split(",") if f.strip())
    return WeightSpec(repo, revision or None, names)


def hf_download_command(spec: str) -> str:
    """The ``hf download`` line (huggingface_hub's CLI) that puts ``spec``'s files into the HF cache."""
    parsed = parse_spec(spec)
    parts = ["hf", "download", parsed.repo]
    if len(parsed.files) == 1 and not set("*?[") & set(parsed.files[0]):
        parts.append(parsed.files[0])
    elif parsed.files:
        parts += ["--include", *(f"'{f}'" for f in parsed.files)]
    if parsed.revision:
        parts += ["--revision", parsed.revision]
    return " ".join(parts)


def missing_weights_message(scorer: str, spec: str, error: BaseException | None = None) -> str:
    """The one line shown when a scorer's weights are not on this machine."""
    cause = f" ({str(error).splitlines()[0][:200]})" if error else ""
    return (
        f"{scorer}: weights {spec!r} are not on this machine{cause}; run `harness fetch {scorer}` where the "
        "Hugging Face hub is reachable (then copy its HF cache, ~/.cache/huggingface/hub, here), "
        "or pass a local folder"
    )


def local_snapshot(spec: str) -> Path | None:
    """The local folder holding ``spec``'s files, or None; never touches the network."""
    parsed = parse_spec(spec)
    if parsed.is_local_path:
        path = Path(parsed.repo).expanduser()
        return path if path.exists() else None
    from huggingface_hub import snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError

    one = parsed.files[0] if len(parsed.files) == 1 else None
    if one is not None and not set("*?[") & set(one):  # one file: is that file cached?
        try:
            found = try_to_load_from_cache(parsed.repo, one, revision=parsed.revision)
        except (ValueError, OSError):
            return None
        return Path(found).parent if isinstance(found, str) else None
    try:
        return Path(snapshot_download(parsed.repo, revision=parsed.revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        return None


def weights_status(requires: Requirements) -> str:
    """'-' (needs none), 'present', or 'missing: a, b' for the specs not on this machine."""
    if not requires.weights:
        return "-"
    missing = [w for w in requires.weights if local_snapshot(w) is None]
    return "present" if not missing else "missing: " + ", ".join(missing)


def download(spec: str) -> Path:
    """Download one weight spec into the HF cache (or check a local path) and return its folder."""
    parsed = parse_spec(spec)
    if parsed.is_local_path:
        path = Path(parsed.repo).expanduser()
        if not path.exists():
            raise MissingError(f"local weights folder {path} does not exist")
        return path
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline:
        cached = local_snapshot(spec)
        if cached is not None:
            return cached
        raise HubUnavailableError(
            f"cannot download {spec}: HF_HUB_OFFLINE is set; unset it on a machine with hub access, or run "
            "`harness fetch` there and copy its ~/.cache/huggingface/hub here"
        )
    try:
        return Path(
            snapshot_download(
                parsed.repo, revision=parsed.revision, allow_patterns=list(parsed.files) or None
            )
        )
    except (
        Exception
    ) as e:  # connection errors come wrapped in several huggingface_hub / requests types
        cached = local_snapshot(spec)
        if cached is not None:
            log.warning("hub unreachable (%s); using the cached copy of %s", type(e).__name__, spec)
            return cached
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise HubUnavailableError(
            f"cannot download {spec} ({first}); run `harness fetch` on a machine with hub access and copy its "
            "~/.cache/huggingface/hub here"
        ) from None


@dataclass(frozen=True)
class Fetched:
    """What ``fetch`` did for one scorer."""

    scorer: str
    paths: tuple[Path, ...]
    note: str = ""


def fetch(names: list[str]) -> list[Fetched]:
    """Download the weights of the named scorers (unknown names fail before any download)."""
    classes = {name: scorer_class(name) for name in names}
    done: list[Fetched] = []
    for name, cls in classes.items():
        specs = cls.requires.weights
        if not specs:
            done.append(Fetched(name, (), "needs no weights"))
            continue
        done.append(Fetched(name, tuple(download(spec) for spec in specs)))
    return done
