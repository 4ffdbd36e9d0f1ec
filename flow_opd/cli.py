"""The ``harness`` command line: thin commands that parse arguments and call one library function each.

Imports of modules that pull in a heavy library (torch, duckdb, PIL, fastapi) are lazy, inside the commands, each
marked ``# deferred: <library>``, so ``harness --help`` stays fast and does not import torch; light first-party
modules are imported at the top. Errors a user can fix (the ``flowbase.errors.UserError`` family: bad input,
missing weights or files, bad config, a missing extra) are printed as one line on stderr with exit code 2, never
as a stack trace; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from flowbase.errors import MissingExtraError, UserError, one_line
from harness.benchmarks import sampling_settings
from harness.datasets import DATASETS, fetch_data
from harness.dist import shutdown_distributed
from harness.logs import quiet_third_party

app = typer.Typer(
    name="harness",
    help="Flow-OPD: benchmark tables for text-to-image flow-matching models, and the trainer behind them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ls_app = typer.Typer(help="List scorers, benchmarks, models or runs.", no_args_is_help=True)
app.add_typer(ls_app, name="ls")


StoreOpt = Annotated[
    Path | None,
    typer.Option(
        help="Results store (DuckDB file); default results/flow-opd.duckdb or $FLOW_OPD_STORE."
    ),
]
FormatOpt = Annotated[str, typer.Option("--format", help="text, markdown, csv or json.")]
# sampling options that `generate` and `eval` share
StepsOpt = Annotated[
    int | None, typer.Option(help="Euler ODE steps (default: the model's own, else 40).")
]
CfgOpt = Annotated[
    float | None,
    typer.Option(help="Classifier-free guidance scale (default: the model's own, else 4.5)."),
]
SizeOpt = Annotated[
    int | None,
    typer.Option(help="Image height and width in pixels (default: the model's own, else 512)."),
]
SeedOpt = Annotated[int, typer.Option(help="Base seed; image j of prompt i uses seed + i*K + j.")]
NegativeOpt = Annotated[str, typer.Option(help="Negative prompt for CFG.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")]
DtypeOpt = Annotated[str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), fp32, fp16, bf16.")]


def _report(error: UserError) -> NoReturn:
    typer.echo(f"error: {one_line(error)}", err=True)
    raise typer.Exit(2)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn the ``UserError`` family (bad input, missing weights or files, bad config, a missing extra) into one
    line on stderr and exit code 2. Anything else is a bug and keeps its traceback; typer's and click's own
    exceptions (``typer.Exit``, usage errors) pass through to click, which handles them."""
    try:
        yield
    except UserError as e:
        _report(e)


def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a library function with friendly errors and quiet third-party logging."""
    quiet_third_party()
    with friendly_errors():
        return fn(*args, **kwargs)


@app.command()
def generate(
    model: Annotated[str, typer.Option(help="Hub id or local diffusers folder.")] = (
        "stabilityai/stable-diffusion-3.5-medium"
    ),
    lora: Annotated[
        str | None,
        typer.Option(
            help="Trainer run folder, PEFT LoRA folder or hub id to apply (Flow-GRPO checkpoints load "
            "as-is)."
        ),
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(help="Prompt file: .txt (one per line) or .jsonl with a 'prompt' field."),
    ] = None,
    benchmark: Annotated[
        str | None,
        typer.Option(help="Use a benchmark's prompts instead (see `harness ls benchmarks`)."),
    ] = None,
    steps: StepsOpt = None,
    cfg: CfgOpt = None,
    size: SizeOpt = None,
    seed: SeedOpt = 42,
    images_per_prompt: Annotated[int, typer.Option(help="Images per prompt (K).")] = 1,
    negative_prompt: NegativeOpt = "",
    t5_length: Annotated[int, typer.Option(help="T5 token length (Flow-GRPO uses 128).")] = 128,
    limit: Annotated[int | None, typer.Option(help="Only the first N prompts.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    out: Annotated[Path, typer.Option(help="Output folder: images/ and manifest.jsonl.")] = Path(
        "out/generate"
    ),
) -> None:
    """Generate images for a prompt file or a benchmark, with a JSONL manifest of every setting.

    Re-running the same command resumes: images already in the manifest are not generated again.
    """
    from flowmodels.models import native_settings  # deferred: torch
    from harness.generate import (  # deferred: torch
        GenerateSettings,
        generate_images,
        load_prompt_items,
    )

    def go() -> None:
        items = load_prompt_items(prompts=prompts, benchmark=benchmark, limit=limit)
        sizes = sampling_settings(
            [benchmark] if benchmark else [],
            native=native_settings(model),  # a missing model fails here, before any file is written
            steps=steps,
            size=size,
            cfg=cfg,
        )
        settings = GenerateSettings(
            model=model,
            lora=lora,
            steps=sizes["steps"],
            cfg=sizes["cfg"],
            height=sizes["height"],
            width=sizes["width"],
            seed=seed,
            images_per_prompt=images_per_prompt,
            negative_prompt=negative_prompt,
            t5_length=t5_length,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
        )
        result = generate_images(items, settings, out)
        typer.echo(
            f"{result.generated} generated, {result.skipped} already there -> {result.manifest}"
        )

    run(go)


@app.command("tiny-model")
def tiny_model(
    out: Annotated[
        Path | None, typer.Option(help="Folder to save it in (default ~/.cache/flow-opd/tiny-sd3).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Initialisation seed.")] = 0,
    t5: Annotated[bool, typer.Option(help="Include a tiny T5 encoder.")] = False,
) -> None:
    """Build the offline tiny SD3 model (random weights, for plumbing tests) and print its folder."""

    def go() -> None:
        from flowmodels.tiny import default_tiny_dir, save_tiny_sd3  # deferred: torch

        typer.echo(str(save_tiny_sd3(out or default_tiny_dir(), seed, with_t5=t5)))

    run(go)


@ls_app.command("scorers")
def ls_scorers(
    check: Annotated[
        bool, typer.Option(help="Look for each scorer's weights and extra on this machine.")
    ] = True,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="text (fits 100 columns: weights as a count), markdown, csv or json (every weight).",
        ),
    ] = "text",
) -> None:
    """Registered scorers: name, version, weights here or not, pip extra, and what they run on."""
    # run_light, not run(): run's quiet_third_party() imports torch, and listing must stay light (it only reads
    # scorer classes)
    from harness.listing import scorers_table  # deferred: duckdb, PIL
    from harness.tables import render  # deferred: duckdb

    run_light(lambda: typer.echo(render(scorers_table(fmt, check=check), fmt), nl=False))


@ls_app.command("benchmarks")
def ls_benchmarks(fmt: FormatOpt = "text") -> None:
    """Benchmarks: prompts, images per prompt, scorers and the metric their tables rank by."""
    from harness.listing import listing_text  # deferred: duckdb

    run_light(lambda: typer.echo(listing_text("benchmarks", fmt), nl=False))


@ls_app.command("models")
def ls_models(fmt: FormatOpt = "text") -> None:
    """Model families: which train (a FlowModel backend), which only evaluate, and their defaults."""
    from harness.listing import listing_text  # deferred: duckdb, torch (models only)

    run_light(lambda: typer.echo(listing_text("models", fmt), nl=False))


@ls_app.command("runs")
def ls_runs(store: StoreOpt = None, fmt: FormatOpt = "text") -> None:
    """Runs in the store: id, created, model, adapter, benchmarks, last step, images and score rows
    (the same as `harness runs`)."""
    runs_(store, fmt)


@app.command()
def score(
    scorer: Annotated[str, typer.Option(help="Scorer name (see `harness ls scorers`).")],
    images: Annotated[
        Path | None, typer.Option(help="Folder of images (natural file-name order).")
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            help="Prompt file paired by order: .txt lines, or .jsonl rows ('prompt' and metadata)."
        ),
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="JSONL manifest naming each image, prompt and metadata.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output JSONL (default <images>/scores_<scorer>.jsonl).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per scorer call.")] = 16,
    url: Annotated[
        str | None,
        typer.Option(help="Score on a remote service (POST <url>/v1/score) instead of here."),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Scorer argument KEY=VALUE (repeatable)."),
    ] = None,
) -> None:
    """Score images with one scorer; print and save per-image values and rewards."""

    def go() -> None:
        from harness.score import score_folder  # deferred: PIL, numpy

        report = score_folder(scorer, images, prompts, manifest, out, batch_size, url, option)
        typer.echo(f"{'value':>10}  {'reward':>8}  image")
        for row in report.rows:
            typer.echo(f"{row['value']:10.4f}  {row['reward']:8.4f}  {Path(row['image']).name}")
        typer.echo(
            f"{report.scorer} {report.version}: mean value {report.mean_value:.4f}, mean reward "
            f"{report.mean_reward:.4f} over {len(report.rows)} images -> {report.out}"
        )

    run(go)


# --- evaluation and results (harness.evaluate, results.store) ---------------------------------------


def run_light(fn: Callable[[], Any]) -> Any:
    """``run`` for commands that only read the store: no ``quiet_third_party()``, which imports torch, diffusers
    and transformers (~10 s on a small CPU); the same one-line errors."""
    with friendly_errors():
        return fn()


def _store_path(store: Path | None) -> Path:
    from results.store import default_store  # deferred: duckdb

    return store or default_store()


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


@app.command("eval")
def eval_(
    model: Annotated[str, typer.Option(help="Hub id or local diffusers folder.")] = (
        "stabilityai/stable-diffusion-3.5-medium"
    ),
    lora: Annotated[
        str | None, typer.Option(help="Trainer run folder, PEFT LoRA folder or hub id to apply.")
    ] = None,
    benchmark: Annotated[
        list[str] | None,
        typer.Option(
            "--benchmark",
            "-b",
            help="Benchmark or suite (repeat or comma-separate): main (GenEval, OCR, DeQA, PickScore), "
            "quality, geneval, ocr, pickscore, drawbench, compbench. Default: main.",
        ),
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(help="Also evaluate a prompt file (.txt or .jsonl); needs --scorers."),
    ] = None,
    scorers: Annotated[
        list[str] | None,
        typer.Option(
            help="Score with these scorers instead of each benchmark's own (comma-separated)."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Only the first N prompts of each benchmark.")
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run",
            "--run-id",
            help="Run id (default: derived from model, LoRA and protocol). Under torchrun use --run-id.",
        ),
    ] = None,
    step: Annotated[int, typer.Option(help="Training step these weights come from.")] = 0,
    steps: StepsOpt = None,
    cfg: CfgOpt = None,
    size: SizeOpt = None,
    seed: SeedOpt = 42,
    images_per_prompt: Annotated[
        int | None, typer.Option(help="Override every benchmark's images per prompt (K).")
    ] = None,
    negative_prompt: NegativeOpt = "",
    t5_length: Annotated[int, typer.Option(help="T5 token length.")] = 128,
    image_encoding: Annotated[
        str,
        typer.Option(help="How scorers receive images: png (lossless) or jpeg75 (Flow-GRPO's)."),
    ] = "png",
    batch_size: Annotated[
        int | None, typer.Option(help="Images per forward pass (default 8, the mini world's 64).")
    ] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    store: StoreOpt = None,
    fmt: FormatOpt = "text",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Generate, score and store a benchmark run, then print its tables.

    Re-running the same command resumes: only missing images and scores are computed. Launch with
    `accelerate launch --num_processes N -m flow_opd eval ...` (or torchrun) to shard over processes.
    """

    def go() -> None:
        from harness.evaluation import evaluate  # deferred: torch
        from harness.tables import benchmark_tables, check_format, render  # deferred: duckdb
        from results.store import Store  # deferred: duckdb

        check_format(fmt)  # before generating anything: a typo in --format fails at once
        names = _split(benchmark) or ([] if prompts else ["main"])
        # what is left None comes from the benchmarks and the model (harness.evaluation.resolve_protocol)
        protocol = {
            "steps": steps,
            "cfg": cfg,
            "height": size,
            "width": size,
            "negative_prompt": negative_prompt,
            "t5_length": t5_length,
            "seed": seed,
            "images_per_prompt": images_per_prompt,
            "image_encoding": image_encoding,
        }
        result = evaluate(
            model,
            names,
            store=_store_path(store),
            protocol=protocol,
            run_id=run_id,
            step=step,
            lora=lora,
            prompts=prompts,
            scorers=_split(scorers) or None,
            limit=limit,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            progress=progress,
        )
        import os

        shutdown_distributed()  # every rank has written its rows; rank 0 prints
        if int(os.environ.get("RANK", "0")) != 0:
            return
        with Store(result.store, read_only=True, keep_open=True) as st:
            typer.echo(render(benchmark_tables(st, run_ids=[result.run_id]), fmt), nl=False)
            typer.echo(
                f"run {result.run_id} step {result.step}: {result.images_generated} images generated, "
                f"{result.images_rescored} re-scored, {result.images_skipped} already complete, "
                f"{result.scores_added} scores added (world size {result.world_size}) -> {result.store}",
                err=True,
            )

    run(go)


@app.command()
def fetch(
    names: Annotated[
        list[str],
        typer.Argument(
            help="Scorer names (see `harness ls scorers`) or fetched benchmark data (geneval2)."
        ),
    ],
) -> None:
    """Download scorers' weights into the Hugging Face cache, or a benchmark's data from its pinned commit
    (checksum checked; needs the network)."""

    def go() -> None:
        from scorers.fetch import fetch as fetch_weights  # deferred: PIL

        data = [n for n in names if n in DATASETS]
        done = fetch_weights([n for n in names if n not in DATASETS])
        for name in data:
            typer.echo(f"{name}: {fetch_data(name)} ({DATASETS[name].licence})")
        for item in done:
            typer.echo(f"{item.scorer}: {item.note or ', '.join(str(p) for p in item.paths)}")

    run(go)


@app.command("runs")
def runs_(store: StoreOpt = None, fmt: FormatOpt = "text") -> None:
    """List the runs in the store: model, benchmarks, images, score rows, git sha."""

    def go() -> None:
        from harness.standing import minute  # deferred: duckdb
        from harness.tables import Table, check_format, marked, render  # deferred: duckdb
        from results.store import Store  # deferred: duckdb

        check_format(fmt)
        with Store(_store_path(store), read_only=True, keep_open=True) as st:
            rows = st.runs()
        readable = fmt in ("text", "markdown")  # csv and json keep the full timestamp
        t = Table(
            "Runs",
            [
                "run",
                "created",
                "model",
                "lora",
                "benchmarks",
                "last step",
                "images",
                "scores",
                "git",
            ],
            [
                [
                    r["run_id"],
                    minute(r["created_at"]) if readable else str(r["created_at"]),
                    r["model"],
                    r["lora"],
                    r["benchmarks"],
                    r["last_step"],
                    r["images"],
                    r["scores"],
                    (r["git_sha"] or "")[:10],
                ]
                for r in rows
            ],
            [None] * 9,
        )
        t.contaminated = {r["run_id"]: r["contamination"] for r in rows if r["contaminated"]}
        if fmt in ("text", "markdown"):  # csv and json carry the reasons in their own fields
            t.notes += [
                f"{marked(rid, t.contaminated)}: {why}"
                for rid, rs in t.contaminated.items()
                for why in rs
            ]
        typer.echo(render(t, fmt), nl=False)

    run_light(go)


@app.command()
def leaderboard(
    benchmark: Annotated[
        str | None,
        typer.Option(
            "--benchmark",
            "-b",
            help="One benchmark's table (geneval, drawbench, compbench, ...); default: all.",
        ),
    ] = None,
    rank_all: Annotated[
        bool,
        typer.Option(
            "--rank-all",
            help="Rank partial runs and runs of another protocol together with the others "
            "(default: listed apart, below).",
        ),
    ] = False,
    store: StoreOpt = None,
    fmt: FormatOpt = "text",
) -> None:
    """Every run's last step, best first by the benchmark's primary metric: the main table and the
    per-benchmark tables. Partial runs (fewer images than the benchmark) and runs of another protocol (steps,
    cfg, size, ... not the benchmark's standard) are listed apart, below the ranked ones."""

    def go() -> None:
        from harness.tables import benchmark_tables, check_format, render  # deferred: duckdb
        from results.store import Store  # deferred: duckdb

        check_format(fmt)
        with Store(_store_path(store), read_only=True, keep_open=True) as st:
            tables = benchmark_tables(st, benchmark, rank_all=rank_all)
        if not tables:
            raise UserError(f"no scores{' for ' + benchmark if benchmark else ''} in the store yet")
        typer.echo(render(tables, fmt), nl=False)

    run_light(go)


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(help="Run A.")],
    run_b: Annotated[str, typer.Argument(help="Run B.")],
    benchmark: Annotated[str | None, typer.Option(help="Only this benchmark.")] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    store: StoreOpt = None,
    fmt: FormatOpt = "text",
) -> None:
    """Per-metric A - B with 95% paired bootstrap intervals over prompts, and the protocol settings (steps,
    cfg, size, seed, ...) in which the two runs differ."""

    def go() -> None:
        from harness.compare import compare_runs, deltas_table  # deferred: duckdb, numpy
        from harness.tables import check_format, render  # deferred: duckdb
        from results.store import Store  # deferred: duckdb

        check_format(fmt)
        with Store(_store_path(store), read_only=True, keep_open=True) as st:
            deltas = compare_runs(
                st, run_a, run_b, benchmark=benchmark, resamples=resamples, seed=seed
            )
            prot = st.protocols([run_a, run_b])
            table = deltas_table(
                deltas,
                run_a,
                run_b,
                st.contaminated_runs([run_a, run_b]),
                (prot.get(run_a, {}), prot.get(run_b, {})),
            )
        typer.echo(render(table, fmt), nl=False)

    run_light(go)


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id (see `harness runs`).")],
    out: Annotated[
        Path | None, typer.Option(help="HTML file (default: reports/<run>.html next to the store).")
    ] = None,
    inline: Annotated[
        bool, typer.Option(help="Embed image thumbnails (one portable file) instead of linking.")
    ] = False,
    max_prompts: Annotated[
        int | None, typer.Option(help="Show at most N prompts per benchmark.")
    ] = None,
    per_page: Annotated[
        int, typer.Option(help="Prompts per page (pages 2, 3, ... are <run>-p2.html, ...).")
    ] = 25,
    store: StoreOpt = None,
) -> None:
    """Write static HTML pages: the run's tables and its images per prompt (marked pass/fail where the
    scorer is binary), paginated, then its protocol and provenance (collapsed); prints the first page."""

    def go() -> None:
        from harness.report import write_report  # deferred: duckdb
        from results.store import Store  # deferred: duckdb

        with Store(_store_path(store), read_only=True, keep_open=True) as st:
            page = write_report(
                st, run_id, out, inline=inline, max_prompts=max_prompts, per_page=per_page
            )
        typer.echo(str(page))

    run_light(go)


store_app = typer.Typer(help="Check the results store.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("check")
def store_check(
    store: StoreOpt = None,
    images: Annotated[bool, typer.Option(help="Also verify every image file's sha256.")] = True,
) -> None:
    """Read every table fully (DuckDB's block checksums) and verify the images; exit 2 on any damage."""

    def go() -> None:
        import time

        from results.store import Store, StoreDamaged  # deferred: duckdb

        t0 = time.perf_counter()
        path = _store_path(store)
        found = Store(path, read_only=True).check(images=images)
        rows = ", ".join(f"{n} {t}" for t, n in found["rows"].items() if not t.startswith("_"))
        for line in found["problems"][:20]:
            typer.echo(line, err=True)
        if found["problems"]:
            raise StoreDamaged(
                f"store {path}: {len(found['problems'])} of {found['images']} images are missing or "
                "changed (listed above); restore them from a backup of the images folder"
            )
        checked = f", {found['images']} images (sha256)" if images else ""
        typer.echo(f"store {path}: ok ({rows}{checked}; {time.perf_counter() - t0:.2f} s)")

    run_light(go)


# the modules of the `serve` extra (pyproject), as imported
_SERVE_EXTRA = {
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "multipart",
    "python_multipart",
    "pydantic_settings",
    "jinja2",
}


@app.command()
def serve(
    scorers: Annotated[
        list[str] | None,
        typer.Option(help="Scorers to serve (repeat or comma-separate); see `harness ls scorers`."),
    ] = None,
    store: StoreOpt = None,
    host: Annotated[
        str | None, typer.Option(help="Address to bind; default 127.0.0.1 (this machine only).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port; default 8000, 0 picks a free one.")
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the write token; else $FLOW_OPD_TOKEN; none: read-only."),
    ] = None,
    batching: Annotated[
        bool | None, typer.Option(help="Gather concurrent score requests per scorer.")
    ] = None,
) -> None:
    """Serve scorers (a reward server) and the results store's leaderboard over HTTP.

    Other limits and defaults come from FLOW_OPD_* environment variables (see docs/service.md).
    """

    def go() -> None:
        try:
            from service.app import serve as serve_app  # deferred: fastapi
            from service.settings import load_settings  # deferred: pydantic, duckdb
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] not in _SERVE_EXTRA:
                raise
            raise MissingExtraError(
                f"harness serve needs {e.name}: pip install 'flow-opd[serve]'"
            ) from None

        given = {
            "scorers": _split(scorers) or None,
            "store": store,
            "host": host,
            "port": port,
            "token_file": token_file,
            "batching": batching,
        }
        serve_app(load_settings(**{k: v for k, v in given.items() if v is not None}))

    # not run(go): its quiet_third_party() imports diffusers and transformers, seconds a server without
    # model scorers does not need; the scorers that use them are imported when the server loads them
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with friendly_errors():
        go()


def main() -> None:  # pragma: no cover - console entry point
    app()
