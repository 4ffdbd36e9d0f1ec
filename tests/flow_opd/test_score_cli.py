"""`harness score` with a scorer that needs per-image metadata: free prompts are refused with one line naming the
file format that carries it, before any image is read; a .jsonl prompt file whose rows carry it scores."""

from __future__ import annotations

import json
import random
from pathlib import Path

from typer.testing import CliRunner

from flow_opd.cli import app
from tests.support.service_data import draw, mini_prompts


def _folder(tmp_path: Path, n: int = 3) -> tuple[Path, list[dict[str, object]]]:
    images = tmp_path / "images"
    images.mkdir()
    items = mini_prompts(n, seed=1)
    rng = random.Random(0)
    for i, m in enumerate(items):
        draw(m, True, rng).save(images / f"{i}.png")
    return images, items


def test_free_prompts_are_refused_in_one_line_naming_the_fix(tmp_path: Path) -> None:
    images, items = _folder(tmp_path)
    txt = tmp_path / "free.txt"
    txt.write_text("".join(f"{m['prompt']}\n" for m in items))
    bare = tmp_path / "free.jsonl"
    bare.write_text("".join(json.dumps({"prompt": m["prompt"]}) + "\n" for m in items))
    for prompts, says in ((txt, "needs per-image metadata with 'tag', 'include'"),
                          (bare, "meta 0: scorer mini_geneval needs 'tag' as a string")):  # fmt: skip
        res = CliRunner().invoke(
            app,
            [
                "score",
                "--scorer",
                "mini_geneval",
                "--images",
                str(images),
                "--prompts",
                str(prompts),
            ],
        )
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], res.output
        assert "harness/prompts/mini/geneval_test.jsonl" in lines[0] and "--manifest" in lines[0]
    assert not list(images.glob("scores_*"))


def test_a_jsonl_prompt_file_carries_the_metadata(tmp_path: Path) -> None:
    images, items = _folder(tmp_path)
    rows = tmp_path / "prompts.jsonl"
    rows.write_text("".join(json.dumps(m) + "\n" for m in items))
    res = CliRunner().invoke(
        app, ["score", "--scorer", "mini_geneval", "--images", str(images), "--prompts", str(rows)]
    )
    assert res.exit_code == 0, res.output
    assert "mean value 1.0000" in res.output  # every image drawn right passes
