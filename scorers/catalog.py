"""What the registered scorers are and need, read from their classes without instantiating them.

``harness ls scorers`` and the README table come from here. Only each scorer's module is imported (scorer modules
do no heavy work at import: models and engines load in ``__init__``), so listing stays fast and offline.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from scorers import SCORERS, UnknownScorerError


def scorer_class(name: str) -> Any:
    """The class registered as ``name`` (its module imported, nothing instantiated)."""
    if name not in SCORERS:
        hint = difflib.get_close_matches(name, list(SCORERS), n=3)
        maybe = f" (did you mean {', '.join(hint)}?)" if hint else ""
        raise UnknownScorerError(
            f"unknown scorer {name!r}{maybe}; known: {', '.join(sorted(SCORERS))}"
        )
    module, cls = SCORERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def summary(cls: Any) -> str:
    """First line of the class docstring."""
    lines = (cls.__doc__ or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def device_needs(cls: Any) -> str:
    """'CPU', 'GPU >= N GB', plus where it runs when not in this process."""
    gpu = float(cls.requires.gpu_gb)
    where = "CPU" if gpu <= 0 else f"GPU >= {gpu:g} GB"
    runs = getattr(cls, "runs", None)
    if runs == "worker":
        return f"{where}, separate worker env"
    if runs == "endpoint":
        return f"{where}, OpenAI-compatible server"
    return where


@cache
def _extra_requirements() -> dict[str, list[str]]:
    """extra -> requirement strings, from the installed metadata or this checkout's pyproject.toml."""
    extras: dict[str, list[str]] = {}
    try:
        for req in importlib.metadata.requires("flow-opd") or []:
            match = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
            if match:
                extras.setdefault(match.group(1), []).append(req.split(";")[0].strip())
        return extras
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if sys.version_info < (3, 11) or not pyproject.is_file():
        return extras
    import tomllib

    optional = tomllib.loads(pyproject.read_text())["project"].get("optional-dependencies", {})
    return {k: list(v) for k, v in optional.items()}


def extra_status(extra: str | None) -> str:
    """'-' (no extra), 'installed', 'missing' or '?' (extra unknown to this install)."""
    if extra is None:
        return "-"
    reqs = _extra_requirements().get(extra)
    if reqs is None:
        return "?"
    for req in reqs:
        dist = re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0]
        if dist.startswith("flow-opd"):
            continue
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "missing"
    return "installed"


@dataclass(frozen=True)
class ScorerInfo:
    """One scorer as ``harness ls scorers`` shows it."""

    name: str
    version: str
    summary: str
    weights: tuple[str, ...]
    extra: str | None
    device: str
    weights_status: str = ""  # filled only when asked (it looks into the HF cache)
    extra_status: str = ""


def scorer_infos(check_local: bool = True) -> list[ScorerInfo]:
    """Every registered scorer, sorted by name; with ``check_local`` also weights/extra presence here."""
    from scorers.fetch import weights_status

    infos = []
    for name in sorted(SCORERS):
        cls = scorer_class(name)
        req = cls.requires
        infos.append(
            ScorerInfo(
                name=name,
                version=str(cls.version),
                summary=summary(cls),
                weights=tuple(req.weights),
                extra=req.extra,
                device=device_needs(cls),
                weights_status=weights_status(req) if check_local else "",
                extra_status=extra_status(req.extra) if check_local else "",
            )
        )
    return infos


def table_markdown() -> str:
    """The README ``## Scorers`` table: one row per registered scorer (machine independent)."""
    lines = [
        "| scorer | what | version | weights (`harness fetch`) | extra | runs on |",
        "|---|---|---|---|---|---|",
    ]
    for info in scorer_infos(check_local=False):
        weights = ", ".join(f"`{w}`" for w in info.weights) or "none"
        extra = f"`{info.extra}`" if info.extra else "-"
        lines.append(
            f"| `{info.name}` | {info.summary} | {info.version} | {weights} | {extra} | {info.device} |"
        )
    return "\n".join(lines) + "\n"


SECTION_INTRO = (
    "Every scorer returns the raw value in its metric's native scale and, separately, the reward Flow-GRPO trains\n"
    "on. `harness ls scorers` shows which weights are on this machine; `harness fetch NAME` downloads them where\n"
    "the Hugging Face hub is reachable. Scorers marked *separate worker env* or *OpenAI-compatible server* run out\n"
    "of process (`scorers/remote.py` documents the wire format). Generated by `python -m scorers.catalog`.\n"
)


def main() -> None:
    """``python -m scorers.catalog``: print the README ``## Scorers`` section."""
    sys.stdout.write("## Scorers\n\n" + SECTION_INTRO + "\n" + table_markdown())


if __name__ == "__main__":  # pragma: no cover
    main()
