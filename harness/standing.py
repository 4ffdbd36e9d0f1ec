"""Whether a run's number on a benchmark can be ranked: complete, under the benchmark's standard protocol.

A run is *partial* on a benchmark when it holds fewer images than the benchmark's full set as its recorded
protocol states it (``prompts`` x ``images_per_prompt``: a ``--limit`` run, or one still running). It is of
*another protocol* when a setting that changes what the number measures differs from the benchmark's standard
protocol: the paper's ``EvalProtocol`` with the benchmark's own settings (the mini world's 32 px and 10 steps),
its images per prompt and its version. The seed is not such a setting (it draws other images of the same
distribution); ``protocol_diff`` still lists it when two runs are compared. A benchmark outside the registry (a
prompt file) has no standard protocol, so only completeness applies to it.

The tables rank the other runs apart, below the ranked ones (``harness.tables``), and the service and pages
show the same verdicts; ``run_name`` is the readable name the pages give a run.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import PurePath
from typing import Any

from harness.benchmarks import BENCHMARKS
from harness.protocol import EvalProtocol
from results.store import Store

# the generation settings that change what a benchmark number measures (seed and batch size do not)
RANKED_FIELDS = (
    "steps",
    "cfg",
    "height",
    "width",
    "negative_prompt",
    "t5_length",
    "noise_level",
    "image_encoding",
    "version",
)
# fields of a stored protocol that are derived from others or are bookkeeping, never compared
_DERIVED = {"seeds_rule", "sampler", "images_per_prompt"}
_SPEC_FIELDS = ("version", "images_per_prompt", "prompts")
# scorers whose value per image is 1 (pass) or 0 (fail): the pages mark their images
PASS_FAIL = frozenset({"geneval", "mini_geneval"})

PARTIAL = "partial"
OTHER = "other protocol"


@dataclass
class Standing:
    """A run's verdict on one benchmark: why it is not ranked, if it is not."""

    partial: str | None = None  # "24 of 576 images"
    other: list[str] = field(default_factory=list)  # "steps 5 (standard 10)", ...

    @property
    def ranked(self) -> bool:
        return self.partial is None and not self.other

    def merge(self, other: Standing) -> Standing:
        """The verdict of a row that spans several benchmarks (the main table)."""
        parts = [p for p in (self.partial, other.partial) if p]
        return Standing("; ".join(parts) or None, [*self.other, *other.other])


def status(s: Standing) -> str:
    """'' (ranked), 'partial', 'other protocol' or 'partial, other protocol'."""
    return ", ".join(w for w, on in ((PARTIAL, s.partial), (OTHER, s.other)) if on)


def standard_generation(benchmark: str) -> dict[str, Any] | None:
    """The standard generation settings of a registry benchmark (None for a prompt file)."""
    bench = BENCHMARKS.get(benchmark)
    if bench is None:
        return None
    return dict(_generation(tuple(bench.protocol)))


@functools.cache
def _generation(settings: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    # a table asks once per (run, benchmark): hundreds of times for the same few benchmarks
    names = {f.name for f in fields(EvalProtocol)}
    return tuple(EvalProtocol(**{k: v for k, v in settings if k in names}).to_dict().items())


def deviations(protocol: dict[str, Any], benchmark: str) -> list[str]:
    """How a run's stored protocol departs from ``benchmark``'s standard, one ``"steps 5 (standard 10)"`` each."""
    want = standard_generation(benchmark)
    if want is None:
        return []
    gen = protocol.get("generation")
    gen = gen if isinstance(gen, dict) else {}
    out = [
        f"{k.replace('_', ' ')} {_show(gen[k])} (standard {_show(want[k])})"
        for k in RANKED_FIELDS
        if k in gen and gen[k] != want[k]
    ]
    spec = (protocol.get("benchmarks") or {}).get(benchmark)
    bench = BENCHMARKS[benchmark]
    if isinstance(spec, dict):
        k = spec.get("images_per_prompt")
        if k is not None and k != bench.images_per_prompt:
            out.append(f"images per prompt {k} (standard {bench.images_per_prompt})")
        v = spec.get("version")
        if v is not None and str(v) != bench.version:
            out.append(f"benchmark version {v} (now {bench.version})")
    return out


def _show(v: Any) -> str:
    return repr(v) if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v)


def standings(
    store: Store, run_ids: Sequence[str] | None = None
) -> dict[tuple[str, str], Standing]:
    """(run, benchmark) -> its standing at the run's last evaluated step, for every run and benchmark scored."""
    protocols = store.protocols(run_ids)
    have: dict[tuple[str, str], int] = {}
    for r in store.benchmark_scores(run_ids=run_ids):
        key = (r["run_id"], r["benchmark"])
        have[key] = max(have.get(key, 0), int(r["n_images"]))
    out = {}
    for (rid, bench), n in have.items():
        protocol = protocols.get(rid, {})
        spec = (protocol.get("benchmarks") or {}).get(bench) or {}
        s = Standing(other=deviations(protocol, bench))
        try:
            want = int(spec["prompts"]) * int(spec["images_per_prompt"])
        except (KeyError, TypeError, ValueError):
            want = None
        if want is not None and n < want:
            s.partial = f"{n} of {want} {bench} images"
        out[(rid, bench)] = s
    return out


def protocol_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, A's value, B's value) for every protocol setting that differs between two stored protocols:
    generation settings (the seed included), then per benchmark both hold its version, prompts and images per
    prompt (``geneval.images_per_prompt``)."""
    ga, gb = a.get("generation") or {}, b.get("generation") or {}
    out = [
        (k, ga.get(k), gb.get(k))
        for k in sorted(set(ga) | set(gb))
        if k not in _DERIVED and ga.get(k) != gb.get(k)
    ]
    ba, bb = a.get("benchmarks") or {}, b.get("benchmarks") or {}
    for name in sorted(set(ba) & set(bb)):
        for k in _SPEC_FIELDS:
            va, vb = (ba[name] or {}).get(k), (bb[name] or {}).get(k)
            if va != vb:
                out.append((f"{name}.{k}", va, vb))
    return out


def run_name(model: str | None, lora: str | None, created_at: Any = None) -> str:
    """A readable name for a run: its model, its adapter and the date, e.g. ``mini-base + grpo_geneval ·
    2026-12-07 22:03`` (a path shows as its last folder; an adapter's ``lora`` folder as its run folder)."""
    name = _short(model) or "?"
    if lora:
        name += f" + {_short(lora)}"
    when = minute(created_at)
    return f"{name} · {when}" if when else name


def _short(path: str | None) -> str:
    if not path:
        return ""
    parts = [p for p in PurePath(path.rstrip("/")).parts if p not in ("", "/")]
    if not parts:
        return path
    if parts[-1] in ("lora", "merged", "final") and len(parts) > 1:
        return f"{parts[-2]}/{parts[-1]}"
    return parts[-1] if len(parts[-1]) <= 60 else parts[-1][:57] + "..."


def minute(t: Any) -> str:
    """A timestamp to the minute (``2026-12-07 22:03``); '' for none."""
    if isinstance(t, datetime):
        return t.strftime("%Y-%m-%d %H:%M")
    if isinstance(t, str) and len(t) >= 16:
        return t[:16].replace("T", " ")
    return "" if t is None else str(t)
