"""The ``harness ls`` tables: scorers, benchmarks and models as ``harness.tables.Table``s, rendered like every other
table (``--format text|markdown|csv|json``). Text fits 100 columns (long cells wrap onto rows of their own, the
scorers' weights show as a count); the other formats carry the full record."""

from __future__ import annotations

import textwrap
from typing import Any

from harness.benchmarks import benchmark_listing, sampling_settings, suite_listing
from harness.tables import Table, check_format, render
from scorers.catalog import scorer_infos

WIDTH = 100


def wrapped_rows(row: list[Any]) -> list[list[Any]]:
    """A row whose list cells are wrapped text: the first line in the row, the rest on rows of their own (the
    other cells empty)."""
    n = max(len(c) if isinstance(c, list) else 1 for c in row)
    return [
        [
            (c[k] if k < len(c) else "") if isinstance(c, list) else (c if k == 0 else "")
            for c in row
        ]
        for k in range(n)
    ]


def scorers_table(fmt: str = "text", *, check: bool = True) -> Table:
    """Every registered scorer; ``check`` looks for its weights and extra on this machine."""
    check_format(fmt)
    text = fmt == "text"
    cols = ["scorer", "version", "weights", "extra", "runs on"]
    if not text:  # the full record: what it is, every weight by name and whether it is here
        cols = ["scorer", "version", "what", "weights", "weights here", "extra", "runs on"]
    table = Table("Scorers", cols, [], [None] * len(cols))
    for i in scorer_infos(check_local=check):
        extra = (i.extra or "-") + (f" ({i.extra_status})" if i.extra and i.extra_status else "")
        if not text:
            names = ", ".join(i.weights) or "-"
            here = i.weights_status or None
            table.rows.append([i.name, i.version, i.summary, names, here, extra, i.device])
            continue
        if not i.weights:
            weights = "-"
        elif not check:
            weights = f"{len(i.weights)} needed"
        elif i.weights_status == "present":
            weights = "present"
        else:
            n_missing = len(i.weights_status.removeprefix("missing: ").split(", "))
            weights = f"missing {n_missing}/{len(i.weights)}"
        where = i.device.split(", ")  # "GPU >= 16 GB, separate worker env" on two lines
        device = [w + "," for w in where[:-1]] + where[-1:]
        table.rows += wrapped_rows([i.name, i.version, weights, extra, device])
    if text:
        table.notes.append(
            "weights by name: harness ls scorers --format json; get them: harness fetch NAME"
        )
    return table


def benchmarks_table(fmt: str = "text") -> Table:
    """Every benchmark: prompts, images per prompt, scorers and primary metric; suites and validation sets as
    notes (text and Markdown)."""
    check_format(fmt)
    listing = benchmark_listing()
    table = Table(
        "Benchmarks (harness eval -b NAME)",
        ["benchmark", "prompts", "images/prompt", "scorers", "primary metric"],
        [],
        [None, 0, 0, None, None],
    )
    for b in listing:
        scorers = ", ".join(b.scorers)
        cell = textwrap.wrap(scorers, 36) if fmt == "text" else scorers
        table.rows += wrapped_rows([b.name, b.prompts, b.images_per_prompt, cell, b.primary])
    if fmt in ("text", "markdown"):
        val = [b.name for b in listing if b.split == "validation"]
        suites = "; ".join(f"{k} = {' + '.join(v)}" for k, v in suite_listing().items())
        table.notes += textwrap.wrap(f"suites: {suites}", WIDTH)
        table.notes.append(
            f"validation sets (for choosing a checkpoint, never reported): {', '.join(val)}"
        )
    return table


def _guidance(settings: dict[str, Any]) -> str:
    kind = str(settings.get("guidance", "cfg"))
    return "none" if kind == "none" else f"{kind} {float(settings['cfg']):g}"


def models_table(fmt: str = "text") -> Table:
    """Every supported pipeline class (``model_index.json``'s ``_class_name``): whether it trains (a
    ``FlowModel`` backend) or is evaluated only (through its own diffusers pipeline), and its default steps,
    guidance and size (``own``: read from each model's folder)."""
    from flowmodels.models import model_infos  # deferred: torch (the other listings stay light)

    check_format(fmt)
    text = fmt == "text"
    cols = ["family", "pipeline class", "use", "steps", "guidance", "size"]
    if not text:
        cols.append("loader")
    table = Table("Models (harness eval --model ORG/NAME or FOLDER)", cols, [], [None] * len(cols))
    for m in model_infos():
        use = "train + evaluate" if m.trains else "evaluate"
        if m.settings is None:
            steps, guidance, size = "own", "own", "own"
        else:
            filled = {**sampling_settings([], native=m.settings), **m.settings}
            steps, guidance = filled["steps"], _guidance(filled)
            size = "own" if m.size_own else f"{filled['height']}"
        row = [m.family, m.pipeline, use, steps, guidance, size]
        table.rows.append(row if text else [*row, m.loader])
    if fmt in ("text", "markdown"):
        table.notes += textwrap.wrap(
            "train + evaluate: a FlowModel backend (trainer recipes, LoRA, SDE rollouts); evaluate: "
            "the pipeline's own sampler, no LoRA. own: read from each model's folder (size: its "
            "denoiser's sample_size x the VAE's scale). guidance: cfg (classifier-free), distilled "
            "(an embedded scale) or none. Any other pipeline class is refused with this list.",
            WIDTH,
        )
    return table


def listing_text(name: str, fmt: str = "text") -> str:
    """``harness ls benchmarks`` or ``harness ls models`` rendered in ``fmt``."""
    table = {"benchmarks": benchmarks_table, "models": models_table}[name](fmt)
    return render(table, fmt)
