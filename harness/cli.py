"""The ``harness`` command line: thin commands that parse arguments and call one library function each.

Imports are lazy (inside the commands), so ``harness --help`` does not import torch. Errors a user can fix are
printed as one line on stderr with exit code 2, never as a stack trace.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="harness",
    help="Flow-OPD: benchmark tables for text-to-image flow-matching models, and the trainer behind them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ls_app = typer.Typer(help="List scorers, benchmarks or runs.", no_args_is_help=True)
app.add_typer(ls_app, name="ls")


class UserError(Exception):
    """An error the user can fix; printed as one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "bad input or missing files", not "bug"."""
    from trainer.adapters import AdapterNotFoundError
    from trainer.models import ModelNotFoundError

    errs: list[type[BaseException]] = [
        UserError,
        ModelNotFoundError,
        AdapterNotFoundError,
        ValueError,
    ]
    errs += [FileNotFoundError, KeyError, ImportError]
    return tuple(errs)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn user-fixable exceptions into one line on stderr and exit code 2."""
    try:
        yield
    except _user_errors() as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        typer.echo(f"error: {msg}", err=True)
        raise typer.Exit(2) from None


def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a library function with friendly errors and quiet third-party logging."""
    from harness.logs import quiet_third_party

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
            help="PEFT LoRA folder or hub id to apply (Flow-GRPO checkpoints load as-is)."
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
    steps: Annotated[int, typer.Option(help="Euler ODE steps.")] = 40,
    cfg: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 4.5,
    size: Annotated[int, typer.Option(help="Image height and width in pixels.")] = 512,
    seed: Annotated[
        int, typer.Option(help="Base seed; image j of prompt i uses seed + i*K + j.")
    ] = 42,
    images_per_prompt: Annotated[int, typer.Option(help="Images per prompt (K).")] = 1,
    negative_prompt: Annotated[str, typer.Option(help="Negative prompt for CFG.")] = "",
    t5_length: Annotated[int, typer.Option(help="T5 token length (Flow-GRPO uses 128).")] = 128,
    limit: Annotated[int | None, typer.Option(help="Only the first N prompts.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), fp32, fp16, bf16.")
    ] = "auto",
    out: Annotated[Path, typer.Option(help="Output folder: images/ and manifest.jsonl.")] = Path(
        "out/generate"
    ),
) -> None:
    """Generate images for a prompt file or a benchmark, with a JSONL manifest of every setting.

    Re-running the same command resumes: images already in the manifest are not generated again.
    """
    from harness.generate import GenerateSettings, generate_images, load_prompt_items

    def go() -> None:
        items = load_prompt_items(prompts=prompts, benchmark=benchmark, limit=limit)
        settings = GenerateSettings(
            model=model,
            lora=lora,
            steps=steps,
            cfg=cfg,
            height=size,
            width=size,
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
        from trainer.tiny import default_tiny_dir, save_tiny_sd3

        typer.echo(str(save_tiny_sd3(out or default_tiny_dir(), seed, with_t5=t5)))

    run(go)


@ls_app.command("scorers")
def ls_scorers(
    check: Annotated[
        bool, typer.Option(help="Look for each scorer's weights and extra on this machine.")
    ] = True,
) -> None:
    """Registered scorers: name, version, weights here or not, pip extra, and what they run on."""
    # no run(): its error set imports torch, and listing must stay light (it only reads scorer classes)
    from scorers.catalog import scorer_infos

    infos = scorer_infos(check_local=check)
    header = ("scorer", "version", "weights", "extra", "runs on")
    rows = [
        (
            i.name,
            i.version,
            i.weights_status or ", ".join(i.weights) or "-",
            f"{i.extra} ({i.extra_status})" if i.extra and i.extra_status else (i.extra or "-"),
            i.device,
        )
        for i in infos
    ]
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    for r in [header, *rows]:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@app.command()
def score(
    scorer: Annotated[str, typer.Option(help="Scorer name (see `harness ls scorers`).")],
    images: Annotated[
        Path | None, typer.Option(help="Folder of images (natural file-name order).")
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(help="Prompt file paired by order: .txt lines or .jsonl 'prompt'."),
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
        from harness.score import score_folder
        from scorers.fetch import HubUnavailableError
        from scorers.remote import RemoteScorerError

        try:
            report = score_folder(scorer, images, prompts, manifest, out, batch_size, url, option)
        except (RemoteScorerError, HubUnavailableError) as e:
            raise UserError(str(e)) from None
        typer.echo(f"{'value':>10}  {'reward':>8}  image")
        for row in report.rows:
            typer.echo(f"{row['value']:10.4f}  {row['reward']:8.4f}  {Path(row['image']).name}")
        typer.echo(
            f"{report.scorer} {report.version}: mean value {report.mean_value:.4f}, mean reward "
            f"{report.mean_reward:.4f} over {len(report.rows)} images -> {report.out}"
        )

    run(go)


@app.command()
def fetch(
    names: Annotated[list[str], typer.Argument(help="Scorer names (see `harness ls scorers`).")],
) -> None:
    """Download scorers' weights into the Hugging Face cache (needs the hub)."""

    def go() -> None:
        from scorers.fetch import HubUnavailableError
        from scorers.fetch import fetch as fetch_weights

        try:
            done = fetch_weights(names)
        except HubUnavailableError as e:
            raise UserError(str(e)) from None
        for item in done:
            typer.echo(f"{item.scorer}: {item.note or ', '.join(str(p) for p in item.paths)}")

    run(go)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
