"""``harness report RUN``: static HTML pages of a run: its tables, its images per prompt, then its protocol.

The first page (``results/reports/<run>.html`` by default) shows the run's readable name, its tables and the
first ``per_page`` prompts' images, each marked pass or fail where the scorer is binary (GenEval's 0/1); the
next prompts follow on ``<run>-p2.html``, ``<run>-p3.html``, ... linked by a pager. The protocol and provenance
JSON close the first page, collapsed. The pages have no scripts and no external assets. Images are either
linked relative to the page (the store's content-addressed files; keep the pages next to the store) or, with
``inline=True``, embedded as small JPEG thumbnails so each page is portable. A run whose model was trained on
evaluation prompts says so in a banner under the title, with the reasons, and its id carries the ``†`` badge
in every table.
"""

from __future__ import annotations

import base64
import glob
import html
import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowbase.errors import InputError, UnknownNameError
from harness.standing import PASS_FAIL, minute, run_name
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
figure.pass img{outline:2px solid #2e7d32}figure.fail img{outline:2px solid #c62828}
.pass b{color:#2e7d32}.fail b{color:#c62828}.pager{margin:1rem 0;display:flex;gap:1rem}
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
    per_page: int = 25,
) -> Path:
    """Write the HTML report of ``run_id`` (its last step unless given), ``per_page`` prompts a page; returns
    the first page's path."""
    if per_page < 1:
        raise InputError(f"--per-page must be >= 1, got {per_page}")
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
    name = run_name(run.model, run.lora, run.created_at)
    prompts = _prompts(rows, max_prompts)
    n_pages = max(1, -(-len(prompts) // per_page))
    files = [out] + [out.with_name(f"{out.stem}-p{i}{out.suffix}") for i in range(2, n_pages + 1)]
    for i, path in enumerate(files):
        head = [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{html.escape(name)}: flow-opd report</title><style>{css}</style></head><body>",
            f"<h1>{html.escape(name)}{_badge(run.contamination) if run.contaminated else ''}</h1>",
            *([_banner(run.contamination)] if run.contaminated else []),
            f"<p>run <code>{html.escape(run_id)}</code>, model <code>{html.escape(run.model)}</code>"
            + (f", LoRA <code>{html.escape(run.lora)}</code>" if run.lora else "")
            + f", step {step}, created {html.escape(minute(run.created_at))}, git "
            f"<code>{html.escape(str(run.provenance.get('git_sha')))}</code></p>",
        ]
        body = ["<h2>Tables</h2>", *[_table_html(t) for t in tables]] if i == 0 else []
        pager = _pager(files, i, path)
        body += [pager, *_grids(store, prompts[i * per_page : (i + 1) * per_page], path,
                                inline=inline, total=len(prompts), first=i * per_page), pager]  # fmt: skip
        if i == 0:
            body += [
                "<h2>Protocol</h2>",
                "<details><summary>Protocol (JSON)</summary>",
                f"<pre>{html.escape(json.dumps(run.protocol, indent=2, sort_keys=True))}</pre></details>",
                "<details><summary>Provenance (JSON)</summary>",
                f"<pre>{html.escape(json.dumps(run.provenance, indent=2, sort_keys=True, default=str))}"
                "</pre></details>",
            ]
        path.write_text("\n".join([*head, *body, "</body></html>"]), encoding="utf-8")
    # pages of an earlier, longer report of this run would link to nothing: remove them
    for old in out.parent.glob(f"{glob.escape(out.stem)}-p*{out.suffix}"):
        m = re.fullmatch(rf"{re.escape(out.stem)}-p(\d+){re.escape(out.suffix)}", old.name)
        if m and int(m.group(1)) > n_pages:
            old.unlink()
    return out


def _pager(files: Sequence[Path], i: int, here: Path) -> str:
    """Links to the previous and next page, and where this one is."""
    if len(files) < 2:
        return ""
    prev = f"<a href='{html.escape(files[i - 1].name)}'>&larr; previous</a>" if i > 0 else ""
    nxt = (
        f"<a href='{html.escape(files[i + 1].name)}'>next &rarr;</a>" if i + 1 < len(files) else ""
    )
    return f"<nav class='pager'>{prev}<span>page {i + 1} of {len(files)}</span>{nxt}</nav>"


def _prompts(rows: Sequence[dict[str, Any]], max_prompts: int | None) -> list[dict[str, Any]]:
    """Per benchmark (by name), per prompt (in order): the prompt and its images with every scorer's value."""
    bench: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        p = bench.setdefault(r["benchmark"], {}).setdefault(
            r["prompt_id"],
            {"benchmark": r["benchmark"], "id": r["prompt_id"], "prompt": r["prompt"],
             "grp": r["grp"], "index": r["prompt_index"], "images": {}},
        )  # fmt: skip
        img = p["images"].setdefault(
            r["image_index"], {"path": r["image_path"], "seed": r["seed"], "scores": {}}
        )
        img["scores"][r["scorer"]] = r["value"]
    out: list[dict[str, Any]] = []
    for name in sorted(bench):
        ps = sorted(bench[name].values(), key=lambda p: p["index"])
        out += ps[:max_prompts] if max_prompts else ps
    return out


def _grids(
    store: Store,
    prompts: Sequence[dict[str, Any]],
    out: Path,
    *,
    inline: bool,
    total: int,
    first: int,
) -> list[str]:
    """The images of ``prompts`` (prompts ``first`` + 1 ... of ``total``), under a heading per benchmark."""
    parts = []
    if prompts:
        parts.append(f"<h2>Images: prompts {first + 1}-{first + len(prompts)} of {total}</h2>")
    shown = None
    for p in prompts:
        if p["benchmark"] != shown:
            shown = p["benchmark"]
            parts.append(f"<h3>{html.escape(shown)}</h3>")
        figs = []
        for j, img in sorted(p["images"].items()):
            file = store.image_file(img["path"])
            src = _thumbnail(file) if inline else Path(os.path.relpath(file, out.parent)).as_posix()
            caption = "<br>".join(
                f"{html.escape(s)} {_fmt(v)}" for s, v in sorted(img["scores"].items())
            )
            verdicts = [v for s, v in img["scores"].items() if s in PASS_FAIL]
            cls, mark = "", ""
            if verdicts:
                ok = min(verdicts) >= 1
                cls = " class='pass'" if ok else " class='fail'"
                mark = "<b>&#10003; pass</b> " if ok else "<b>&#10007; fail</b> "
            figs.append(
                f"<figure{cls}><img src='{html.escape(src)}' alt='{html.escape(p['id'])} image {j}' "
                f"loading='lazy'><figcaption>{mark}#{j} seed {img['seed']}<br>{caption}</figcaption>"
                "</figure>"
            )
        grp = f" <small>[{html.escape(str(p['grp']))}]</small>" if p["grp"] else ""
        parts.append(
            f"<div class='prompt'><p><b>{html.escape(p['id'])}</b>{grp} {html.escape(p['prompt'])}</p>"
            f"<div class='grid'>{''.join(figs)}</div></div>"
        )
    return parts
