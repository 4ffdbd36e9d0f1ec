"""What the registered scorers are and need, read from their classes without instantiating them.

``harness ls scorers`` and the README table come from here. Only each scorer's module is imported (scorer modules
do no heavy work at import: models and engines load in ``__init__``), so listing stays fast and offline.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import scorers
from scorers import hub, scorer_class
from scorers.fetch import hf_download_command, local_snapshot, parse_spec, weights_status


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
    if runs == "either":
        return f"{where}, or an OpenAI-compatible server"
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
    infos = []
    for name in sorted(scorers.SCORERS):  # read now: tests swap the registry dict
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


def missing_requirements(names: Sequence[str]) -> list[str]:
    """What the named scorers need and this machine lacks, one line each with how to get it ([] = ready).

    In-process scorers need their weights (looked up in the HF cache; downloaded now when the hub is reachable)
    and their pip extra; a worker scorer (``runs = "worker"``) needs its ``url_env`` set; an endpoint scorer has
    a default URL and is not checked. Nothing is loaded: this runs before any work starts."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    lines: list[str] = []
    for name in dict.fromkeys(names):
        cls = scorer_class(name)
        runs = getattr(cls, "runs", None)
        if runs == "worker":
            env = getattr(cls, "url_env", None)
            if env and not os.environ.get(env):
                lines.append(
                    f"{name}: runs as a worker in its own environment and {env} is not set; start "
                    f"`python -m {cls.__module__}_worker` there and set {env}=http://HOST:PORT "
                    "(docs/eval.md, 'Scorers that run elsewhere')"
                )
            continue
        if runs == "endpoint":
            continue
        req = cls.requires
        get: list[str] = []
        for spec in req.weights:
            if local_snapshot(spec) is not None:
                continue
            if parse_spec(spec).is_local_path:
                lines.append(f"{name}: weights folder {spec} does not exist")
                continue
            if not offline:
                try:
                    hub.fetch(spec)  # what loading the scorer would download
                    continue
                except Exception:  # noqa: BLE001 - reported below with how to get it
                    pass
            get.append(f"`{hf_download_command(spec)}`")
        if get:
            lines.append(
                f"{name}: weights not here (`harness fetch {name}`, or {' and '.join(get)})"
            )
        if extra_status(req.extra) == "missing":
            lines.append(
                f"{name}: needs the {req.extra} extra (`pip install 'flow-opd[{req.extra}]'`)"
            )
    return lines


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
    "on. `harness ls scorers` shows which weights are on this machine (`--format json` names each one); `harness\n"
    "fetch NAME` downloads them where the Hugging Face hub is reachable. Scorers marked *separate worker env* or\n"
    "*OpenAI-compatible server* run out of process (`scorers/remote.py` documents the wire format). Generated by\n"
    "`python -m scorers.catalog`.\n"
)


def main() -> None:
    """``python -m scorers.catalog``: print the README ``## Scorers`` section."""
    sys.stdout.write("## Scorers\n\n" + SECTION_INTRO + "\n" + table_markdown())


if __name__ == "__main__":  # pragma: no cover
    main()
