"""Training curves as inline SVG, drawn on the server: no script, no CDN, the page works offline.

``curves`` turns a run's history (``Store.history``: one row per evaluated step, benchmark and scorer) into one
small chart per (benchmark, scorer) that has at least two steps: its headline score against the step, each
point with a tooltip. Each chart has its own y range (scorers have different scales).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

W, H = 340, 170
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 22, 30


@dataclass(frozen=True)
class Curve:
    """One chart: its title, its points (step, score) and the SVG markup."""

    benchmark: str
    scorer: str
    points: list[tuple[int, float]]
    svg: str


def curves(history: Sequence[dict[str, Any]]) -> list[Curve]:
    """One curve per (benchmark, scorer) evaluated at two steps or more, in name order."""
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in history:
        if r.get("score") is not None:
            series.setdefault((r["benchmark"], r["scorer"]), []).append(
                (int(r["step"]), float(r["score"]))
            )
    out = []
    for (bench, scorer), pts in sorted(series.items()):
        pts = sorted(set(pts))
        if len({s for s, _ in pts}) >= 2:
            out.append(Curve(bench, scorer, pts, _svg(f"{bench} · {scorer}", pts)))
    return out


def _svg(title: str, pts: list[tuple[int, float]]) -> str:
    steps = [s for s, _ in pts]
    vals = [v for _, v in pts]
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(vals), max(vals)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.08
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(s: float) -> float:
        return LEFT + (s - x0) / (x1 - x0) * pw

    def y(v: float) -> float:
        return TOP + (1 - (v - y0) / (y1 - y0)) * ph

    line = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in pts)
    dots = "".join(
        f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="3"><title>step {s}: {v:.4f}</title></circle>'
        for s, v in pts
    )
    ticks = "".join(
        f'<text x="{LEFT - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>'
        f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
        for v in (y0 + pad, (y0 + y1) / 2, y1 - pad)
    )
    xt = "".join(
        f'<text x="{x(s):.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">{s}</text>'
        for s in sorted({x0, x1, steps[len(steps) // 2]})
    )
    label = escape(title)
    return (
        f'<svg class="curve" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{label} by training step" xmlns="http://www.w3.org/2000/svg">'
        f'<text x="{LEFT}" y="14" class="title">{label}</text>{ticks}'
        f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{TOP + ph}" y2="{TOP + ph}" class="axis"/>{xt}'
        f'<text x="{W - RIGHT}" y="{H - 2}" text-anchor="end">step</text>'
        f'<polyline points="{line}" class="line"/>{dots}</svg>'
    )
