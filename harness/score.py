"""``harness score``: run one scorer over a folder of images and save per-image results as JSONL.

Images pair with prompts by order: image files are sorted naturally (``2.png`` before ``10.png``) and matched to
the lines of a prompt file (``.txt``, one per non-empty line, or ``.jsonl`` with a ``prompt`` field, whose
``metadata`` / ``meta`` object or, failing that, whole row is the image's metadata). A manifest
(``harness generate``'s ``manifest.jsonl``) instead names each row's image and prompt; its ``metadata`` /
``meta`` object (or, failing that, the whole row) is handed to the scorer as that image's metadata, which is what
GenEval needs. Without prompts, prompt-free scorers (jpeg, deqa, judge) still run; the OCR scorer then refuses.
A scorer that declares the metadata it needs (``Requirements.meta``: geneval, mini_geneval, compbench) has it
checked before the scorer is loaded or an image opened: one line naming the field and the file format that
carries it.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

import scorers
from flowbase.errors import InputError, MissingError
from scorers.base import Requirements, check_meta
from scorers.remote import RemoteScorer

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
IMAGE_KEYS = ("image", "path", "file", "image_path", "filename")


@dataclass(frozen=True)
class ScoreItem:
    """One image to score, with its prompt and metadata."""

    image: Path
    prompt: str
    meta: dict[str, Any] | None = None


@dataclass(frozen=True)
class ScoreReport:
    """What ``score_folder`` did."""

    scorer: str
    version: str
    rows: list[dict[str, Any]]
    out: Path

    @property
    def mean_value(self) -> float:
        """Mean raw value over the images."""
        return sum(r["value"] for r in self.rows) / len(self.rows)

    @property
    def mean_reward(self) -> float:
        """Mean reward over the images."""
        return sum(r["reward"] for r in self.rows) / len(self.rows)


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, in natural order."""
    if folder.is_file():
        raise InputError(f"image folder {folder} is a file; pass the folder that holds the images")
    if not folder.is_dir():
        raise MissingError(f"image folder {folder} does not exist")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise MissingError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return sorted(files, key=_natural_key)


def _read_text(path: Path, what: str) -> str:
    """A user's text file, or one line saying why it cannot be read."""
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; pass a file")
    if not path.is_file():
        raise MissingError(f"{what} {path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    except OSError as e:
        raise InputError(f"{what} {path} cannot be read ({e.strerror})") from None


def _jsonl(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise InputError(f"{path}:{number}: not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{number}: expected a JSON object")
        yield number, row


def _row_meta(row: dict[str, Any]) -> dict[str, Any]:
    """A JSONL row's metadata: its ``metadata`` or ``meta`` object, else the row itself (GenEval's format)."""
    for key in ("metadata", "meta"):
        if isinstance(row.get(key), dict):
            return dict(row[key])
    return row


def read_prompt_rows(path: Path) -> list[tuple[str, dict[str, Any] | None]]:
    """(prompt, metadata) from a .txt file (one per non-empty line, no metadata) or a .jsonl file (field
    ``prompt``; metadata as ``_row_meta``)."""
    text = _read_text(path, "prompt file")
    if path.suffix == ".jsonl":
        rows: list[tuple[str, dict[str, Any] | None]] = []
        for number, row in _jsonl(path, text):
            if not isinstance(row.get("prompt"), str):
                raise InputError(f"{path}:{number}: no string field 'prompt'")
            rows.append((row["prompt"], _row_meta(row)))
        return rows
    return [(line, None) for line in text.splitlines() if line.strip()]


def read_prompts(path: Path) -> list[str]:
    """Prompts from a .txt file (one per non-empty line) or a .jsonl file (field ``prompt``)."""
    return [prompt for prompt, _ in read_prompt_rows(path)]


def _resolve(name: str, manifest: Path, images: Path | None) -> Path:
    candidates = [Path(name)] if Path(name).is_absolute() else [manifest.parent / name]
    if images is not None and not Path(name).is_absolute():
        candidates += [images / name, images / Path(name).name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise MissingError(
        f"{manifest}: image {name!r} not found (looked in {', '.join(map(str, candidates))})"
    )


def read_manifest(manifest: Path, images: Path | None = None) -> list[ScoreItem]:
    """Items from a JSONL manifest: an image path field, ``prompt``, optional ``metadata``/``meta`` object."""
    items = []
    for number, row in _jsonl(manifest, _read_text(manifest, "manifest")):
        key = next((k for k in IMAGE_KEYS if isinstance(row.get(k), str)), None)
        if key is None:
            raise InputError(
                f"{manifest}:{number}: no image path field (one of {', '.join(IMAGE_KEYS)})"
            )
        items.append(
            ScoreItem(
                image=_resolve(row[key], manifest, images),
                prompt=str(row.get("prompt", "")),
                meta=_row_meta(row),
            )
        )
    if not items:
        raise InputError(f"manifest {manifest} has no rows")
    return items


def collect_items(
    images: Path | None, prompts: Path | None = None, manifest: Path | None = None
) -> list[ScoreItem]:
    """Pair images with prompts (by order) or read them from a manifest."""
    if prompts is not None and manifest is not None:
        raise InputError("give --prompts or --manifest, not both")
    if manifest is not None:
        return read_manifest(manifest, images)
    if images is None:
        raise InputError("give --images (a folder) or --manifest")
    files = list_images(images)
    if prompts is None:
        return [ScoreItem(f, "") for f in files]
    rows = read_prompt_rows(prompts)
    if len(rows) != len(files):
        raise InputError(
            f"{len(files)} images in {images} but {len(rows)} prompts in {prompts}; they pair by order, "
            "so the counts must match (or use --manifest)"
        )
    return [ScoreItem(f, t, m) for f, (t, m) in zip(files, rows, strict=True)]


def _metas(items: list[ScoreItem]) -> list[dict[str, Any]] | None:
    metas = [it.meta for it in items]
    return None if all(m is None for m in metas) else [m or {} for m in metas]


def check_items_meta(scorer: str, items: list[ScoreItem]) -> None:
    """The metadata ``scorer`` declares it needs (``Requirements.meta``), checked for every item before any
    work; a name outside the registry (a remote-only scorer) is not checked here."""
    if scorer not in scorers.SCORERS:
        return
    requires = getattr(scorers.scorer_class(scorer), "requires", None)
    if isinstance(requires, Requirements):
        check_meta(scorer, requires, _metas(items))


def open_image(path: Path) -> Image.Image:
    """Open and decode one image file; ValueError naming the file when it is not a readable image."""
    try:
        image = Image.open(path)
        image.load()
    except Exception as e:  # UnidentifiedImageError, truncated data, decompression bombs
        raise InputError(f"cannot read image {path}: {e}") from None
    return image


def parse_options(options: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> kwargs; values that parse as JSON (numbers, true, null) are converted."""
    kwargs: dict[str, Any] = {}
    for option in options or []:
        key, sep, value = option.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(f"scorer option {option!r} is not KEY=VALUE")
        try:
            kwargs[key] = json.loads(value)
        except ValueError:
            kwargs[key] = value
    return kwargs


def check_options(
    cls: type, kwargs: dict[str, Any], what: str, given: tuple[str, ...] = ()
) -> None:
    """An ``InputError`` naming ``cls``'s options when ``kwargs`` holds one it does not take (``given``: the
    arguments the command passes itself, not options)."""
    import inspect

    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no introspectable signature: let the call decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    names = [
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and n not in given
    ]
    unknown = [k for k in kwargs if k not in names]
    if unknown:
        raise InputError(
            f"{what} takes no option {', '.join(map(repr, unknown))}; its options: "
            f"{', '.join(names) or 'none'}"
        )


def score_folder(
    scorer: str,
    images: Path | None = None,
    prompts: Path | None = None,
    manifest: Path | None = None,
    out: Path | None = None,
    batch_size: int = 16,
    url: str | None = None,
    options: list[str] | None = None,
) -> ScoreReport:
    """Score every image with one scorer (in process, or remotely when ``url`` is given) and write JSONL."""
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: must be >= 1")
    items = collect_items(images, prompts, manifest)
    check_items_meta(scorer, items)  # before the scorer is loaded or an image opened
    if url:
        if scorer not in scorers.SCORERS:
            scorers.scorer_class(scorer)  # raises the unknown-name error with suggestions
        kwargs = parse_options(options)
        if {"url", "name"} & set(kwargs):
            raise InputError(
                "give the remote scorer's url and name with --url and --scorer, not -o"
            )
        if kwargs:
            check_options(RemoteScorer, kwargs, "a remote scorer", given=("url", "name"))
        model: Any = RemoteScorer(url, scorer, **kwargs)
    else:
        kwargs = parse_options(options)
        if kwargs and scorer in scorers.SCORERS:
            module, cls = scorers.SCORERS[scorer].split(":")
            check_options(getattr(importlib.import_module(module), cls), kwargs, f"scorer {scorer}")
        model = scorers.load(scorer, **kwargs)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        scores = model(
            [open_image(it.image) for it in batch], [it.prompt for it in batch], _metas(batch)
        )
        details = scores.details or [None] * len(batch)
        for item, value, reward, detail in zip(
            batch, scores.values, scores.rewards, details, strict=True
        ):
            rows.append(
                {
                    "image": str(item.image),
                    "prompt": item.prompt,
                    "scorer": scorer,
                    "version": model.version,
                    "value": value,
                    "reward": reward,
                    "details": detail,
                }
            )
        log.info("scored %d / %d images", len(rows), len(items))
    folder = (
        images if images is not None else (manifest.parent if manifest is not None else Path("."))
    )
    path = out or folder / f"scores_{scorer}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return ScoreReport(scorer, str(model.version), rows, path)
