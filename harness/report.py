"""``harness report RUN``: one static HTML page per run: its tables, protocol, provenance and an image grid.

The page has no scripts and no external assets. Images are either linked relative to the page (the store's
content-addressed files; keep the page next to the store, the default ``results/reports/<run>.html``) or, with
``inline=True``, embedded as small JPEG thumbnails so the page is a single portable file. A run whose model was
trained on evaluation prompts says so in a banner under the title, with the reasons, and its id carries the
``†`` badge in every table.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowbase.errors import UnknownNameError
from harness.tables import CONTAMINATED_LEGEND, CONTAMINATED_MARK, Table, benchmark_tables
from results.store import Store

CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1400px}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table.t{border-collapse:collapse;margin:.5rem 0 1rem}table.t td,table.t th{border:1px solid #ccc;padding:3px 8px}
table.t td.n{text-align:right;font-variant-numeric:tabular-nums}caption{text-align:left;font-weight:600}
.notes{color:#666;font-size:.85rem}.prompt{margin:1rem 0;padding:.5rem;border:1px solid #eee}
.prompt p{margin:.2rem 0}.grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:168px}figure img{width:160px;height:160px;object-fit:contain;background:#f4f4f4;
image-rendering:pixelated}figcaption{font-size:.75rem;font-family:monospace}
pre{background:#f7f7f7;padding:.5rem;overflow:auto;font-size:.8rem}
"""
CONTAMINATED_CSS = """
.contaminated{color:#fff;background:#b3261e;border-radius:3px;padding:0 .3rem;font-size:.8rem;cursor:help}
.banner{border:2px solid #b3261e;background:#fdecea;padding:.5rem .8rem;margin:.8rem 0}.banner ul{margin:.3rem 0}
"""


def _badge(reasons: Sequence[str]) -> str:
    """The mark of a contaminated run: a red badge whose tooltip lists the reasons."""
    why = html.escape("trained on evaluation prompts: " + "; ".join(reasons), quote=True)
    return f" <span class='contaminated' title='{why}'>{CONTAMINATED_MARK} eval prompts</span>"


def _banner(reasons: Sequence[str]) -> str:
    """The run page's warning: this model's numbers are not held-out results, and why."""
    items = "".join(f"<li>{html.escape(r)}</li>" for r in reasons)
    return (
        f"<div class='banner contaminated-run'><b>{CONTAMINATED_MARK} This model was trained on evaluation "
        "prompts</b>: its numbers are not held-out results (the run's manifest: contaminated).<ul>"
        f"{items}</ul></div>"
    )


def _table_html(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = []
    run = t.columns.index("run") if "run" in t.columns else None
    for i, row in enumerate(t.rows):
        marks = t.partial[i] if i < len(t.partial) else set()
        tds = []
        for j, (v, d) in enumerate(zip(row, t.decimals, strict=True)):
            if v is None:
                text = "-"
            elif d is not None and isinstance(v, (int, float)):
                text = f"{v:.{d}f}"
            else:
                text = str(v)
            star = "*" if j in marks else ""
            if j == run and str(v) in t.contaminated:
                star += _badge(t.contaminated[str(v)])
            cls = ' class="n"' if d is not None else ""
            tds.append(f"<td{cls}>{html.escape(text)}{star}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    legend = [CONTAMINATED_LEGEND] if t.contaminated else []
    notes = "".join(f"<div class='notes'>{html.escape(n)}</div>" for n in [*t.notes, *legend])
    return (
        f"<table class='t'><caption>{html.escape(t.title)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>{notes}"
    )


def _thumbnail(path: Path, size: int = 160) -> str:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def write_report(
    store: Store,
    run_id: str,
    out: str | Path | None = None,
    *,
    step: int | None = None,
    inline: bool = False,
    max_prompts: int | None = None,
) -> Path:
    """Write the HTML report of ``run_id`` (its last step unless given); returns the page's path."""
    run = store.get_run(run_id)
    if run is None:
        import difflib

        hint = difflib.get_close_matches(run_id, store.run_ids(), n=3)
        maybe = f" (did you mean {', '.join(hint)}?)" if hint else ""
        raise UnknownNameError(f"no run {run_id!r} in {store.path}{maybe}; see `harness runs`")
    step = store.last_step(run_id) if step is None else step
    if out is None:
        base = store.path.parent if not store.memory else Path(".")
        out = base / "reports" / f"{run_id}.html"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = store.sample_scores(run_id, step) if step is not None else []
    tables = benchmark_tables(store, run_ids=[run_id])
    # the badge's styles only where a badge is shown: a clean run's page is as it always was
    css = CSS + CONTAMINATED_CSS if run.contaminated else CSS

    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(run_id)}: flow-opd report</title><style>{css}</style></head><body>",
        f"<h1>Run {html.escape(run_id)}{_badge(run.contamination) if run.contaminated else ''}</h1>",
        *([_banner(run.contamination)] if run.contaminated else []),
        f"<p>model <code>{html.escape(run.model)}</code>"
        + (f", LoRA <code>{html.escape(run.lora)}</code>" if run.lora else "")
        + f", step {step}, created {html.escape(str(run.created_at))}, git "
        f"<code>{html.escape(str(run.provenance.get('git_sha')))}</code></p>",
        "<h2>Tables</h2>",
        *[_table_html(t) for t in tables],
        "<h2>Protocol</h2>",
        f"<pre>{html.escape(json.dumps(run.protocol, indent=2, sort_keys=True))}</pre>",
        "<details><summary>Provenance</summary>",
        f"<pre>{html.escape(json.dumps(run.provenance, indent=2, sort_keys=True, default=str))}</pre></details>",
    ]
    parts += _grids(store, rows, out, inline=inline, max_prompts=max_prompts)
    parts.append("</body></html>")
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def _grids(
    store: Store,
    rows: Sequence[dict[str, Any]],
    out: Path,
    *,
    inline: bool,
    max_prompts: int | None,
) -> list[str]:
    """Per benchmark, per prompt: the prompt, its metadata and its images with every scorer's value."""
    bench: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        p = bench.setdefault(r["benchmark"], {}).setdefault(
            r["prompt_id"],
            {"prompt": r["prompt"], "grp": r["grp"], "index": r["prompt_index"], "images": {}},
        )
        img = p["images"].setdefault(
            r["image_index"], {"path": r["image_path"], "seed": r["seed"], "scores": {}}
        )
        img["scores"][r["scorer"]] = r["value"]
    parts = []
    for name in sorted(bench):
        prompts = sorted(bench[name].items(), key=lambda kv: kv[1]["index"])
        shown = prompts[:max_prompts] if max_prompts else prompts
        parts.append(
            f"<h2>{html.escape(name)}: images ({len(shown)} of {len(prompts)} prompts)</h2>"
        )
        for pid, p in shown:
            figs = []
            for j, img in sorted(p["images"].items()):
                file = store.image_file(img["path"])
                src = (
                    _thumbnail(file)
                    if inline
                    else Path(os.path.relpath(file, out.parent)).as_posix()
                )
                caption = "<br>".join(
                    f"{html.escape(s)} {_fmt(v)}" for s, v in sorted(img["scores"].items())
                )
                figs.append(
                    f"<figure><img src='{html.escape(src)}' alt='{html.escape(pid)} image {j}' "
                    f"loading='lazy'><figcaption>#{j} seed {img['seed']}<br>{caption}</figcaption></figure>"
                )
            grp = f" <small>[{html.escape(str(p['grp']))}]</small>" if p["grp"] else ""
            parts.append(
                f"<div class='prompt'><p><b>{html.escape(pid)}</b>{grp} {html.escape(p['prompt'])}</p>"
                f"<div class='grid'>{''.join(figs)}</div></div>"
            )
    return parts
