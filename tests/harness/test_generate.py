"""`harness generate`: manifest, seeds rule, resume after a crash, bad arguments, lazy CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from flow_opd.cli import app
from harness.benchmarks import load_benchmark_prompts, read_prompt_file
from harness.generate import GenerateSettings, generate_images, load_prompt_items, read_manifest

FAST = dict(steps=3, height=64, width=64, batch_size=3)


def test_geneval_prompts_ship_with_metadata() -> None:
    items = load_benchmark_prompts("geneval")
    assert len(items) == 553
    tags = {}
    for it in items:
        tags[it.meta["tag"]] = tags.get(it.meta["tag"], 0) + 1
    assert tags == {
        "position": 100,
        "color_attr": 100,
        "two_object": 99,
        "colors": 94,
        "single_object": 80,
        "counting": 80,
    }
    assert items[3].id == "geneval/00003" and items[3].meta["include"]


def test_generate_writes_images_manifest_and_resumes(tiny_model, tmp_path: Path) -> None:  # noqa: ANN001
    items = load_prompt_items(benchmark="geneval", limit=3)
    settings = GenerateSettings(model="tiny", images_per_prompt=2, seed=100, **FAST)
    out = tmp_path / "gen"
    first = generate_images(items, settings, out, model=tiny_model, progress=False)
    assert (first.generated, first.skipped) == (6, 0)
    recs = read_manifest(out / "manifest.jsonl")
    assert sorted((r.prompt_index, r.image_index) for r in recs) == [
        (i, j) for i in range(3) for j in range(2)
    ]
    assert {r.seed for r in recs} == {100 + i * 2 + j for i in range(3) for j in range(2)}
    assert all((out / r.file).exists() for r in recs)
    assert recs[0].meta["tag"] == "single_object"

    # crash simulation: one image lost, a torn last manifest line
    lost = recs[4]
    lost_px = np.asarray(Image.open(out / lost.file), dtype=int)
    (out / lost.file).unlink()
    with (out / "manifest.jsonl").open("a") as fh:
        fh.write('{"prompt_id": "geneval/00002", "prompt_ind')
    again = generate_images(items, settings, out, model=tiny_model, progress=False)
    assert (again.generated, again.skipped) == (1, 5)
    recs2 = read_manifest(out / "manifest.jsonl")
    keys = [(r.prompt_index, r.image_index) for r in recs2]
    assert len(keys) == len(set(keys)) == 6
    redone = next(
        r for r in recs2 if (r.prompt_index, r.image_index) == (lost.prompt_index, lost.image_index)
    )
    assert redone.seed == lost.seed
    # same seed, same pixels up to the float noise of another batch size (regenerated alone, first in a batch of 3)
    again_px = np.asarray(Image.open(out / redone.file), dtype=int)
    assert np.abs(again_px - lost_px).max() <= 1

    third = generate_images(items, settings, out, model=tiny_model, progress=False)
    assert third.generated == 0


def test_other_settings_in_the_same_folder_are_refused(tiny_model, tmp_path: Path) -> None:  # noqa: ANN001
    items = load_prompt_items(benchmark="geneval", limit=1)
    generate_images(
        items, GenerateSettings(model="tiny", **FAST), tmp_path, model=tiny_model, progress=False
    )
    with pytest.raises(ValueError, match=r"other settings \(cfg: 4.5 -> 2.0\)"):
        generate_images(
            items,
            GenerateSettings(model="tiny", cfg=2.0, **FAST),
            tmp_path,
            model=tiny_model,
            progress=False,
        )


def test_prompt_files_and_their_errors(tmp_path: Path) -> None:
    txt = tmp_path / "p.txt"
    txt.write_text("a cat\n\n  a dog  \n")
    assert [p for p, _ in read_prompt_file(txt)] == ["a cat", "a dog"]
    jl = tmp_path / "p.jsonl"
    jl.write_text('{"prompt": "a cat", "tag": "x"}\n{"prompt": "  "}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: .*non-empty"):
        read_prompt_file(jl)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        read_prompt_file(empty)
    with pytest.raises(ValueError, match="exactly one"):
        load_prompt_items()


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def test_cli_generate_end_to_end_and_bad_arguments(tiny_sd3_dir: Path, tmp_path: Path) -> None:
    base = [
        "generate",
        "--model",
        str(tiny_sd3_dir),
        "--benchmark",
        "geneval",
        "--limit",
        "2",
        "--size",
        "64",
    ]
    code, out = _cli(*base, "--steps", "2", "--out", str(tmp_path / "o"))
    assert code == 0, out
    assert "2 generated, 0 already there" in out
    assert len(list((tmp_path / "o" / "images").glob("*.png"))) == 2

    code, out = _cli(*base, "--steps", "0", "--out", str(tmp_path / "z"))
    assert code == 2 and "--steps must be >= 1" in out
    code, out = _cli(*base[:-1], "72", "--steps", "2", "--out", str(tmp_path / "s"))
    assert code == 2 and "multiple of 16" in out
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, out = _cli(
        "generate",
        "--model",
        str(tiny_sd3_dir),
        "--prompts",
        str(empty),
        "--out",
        str(tmp_path / "e"),
    )
    assert code == 2 and "holds no prompts" in out
    code, out = _cli("generate", "--benchmark", "genevall", "--out", str(tmp_path / "u"))
    assert code == 2 and "did you mean geneval" in out


def test_cli_missing_model_is_one_line(tmp_path: Path) -> None:
    code, out = _cli(
        "generate", "--benchmark", "geneval", "--limit", "1", "--out", str(tmp_path / "m")
    )
    assert code == 2
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "stabilityai/stable-diffusion-3.5-medium" in lines[0], out


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from flow_opd.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "r = CliRunner().invoke(app, ['generate', '--help']); assert 'resumes' in r.output; "
        "assert 'torch' not in sys.modules, 'torch imported by --help'"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2]
    )
    assert res.returncode == 0, res.stderr


def test_settings_record_is_json(tmp_path: Path, tiny_model) -> None:  # noqa: ANN001
    items = load_prompt_items(benchmark="ocr", limit=1)
    generate_images(
        items,
        GenerateSettings(model="m", lora=None, **FAST),
        tmp_path,
        model=tiny_model,
        progress=False,
    )
    saved = json.loads((tmp_path / "settings.json").read_text())
    assert saved["steps"] == 3 and saved["negative_prompt"] == "" and saved["t5_length"] == 128
    assert "batch_size" not in saved
