"""``harness ls scorers``, ``harness score`` and ``harness fetch`` through the real Typer app."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from flow_opd.cli import app
from harness.score import collect_items, parse_options, read_manifest
from scorers.jpeg import JpegCompressibility
from scorers.remote import ScoreServer
from tests.support.textimages import render_text

runner = CliRunner()


def make_folder(folder: Path, n: int = 3) -> list[Image.Image]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)) for _ in range(n)]
    for i, image in enumerate(images):
        image.save(folder / f"{i * 5}.png")  # 0, 5, 10: natural order differs from string order
    return images


def test_ls_scorers_lists_everything_without_heavy_imports() -> None:
    # scorer modules may import torch at top; model libraries load only when a scorer is built
    code = (
        "import sys; from typer.testing import CliRunner; from flow_opd.cli import app; "
        "r = CliRunner().invoke(app, ['ls', 'scorers']); print(r.output); "
        "print('HEAVY', sorted(m for m in ('diffusers', 'transformers', 'rapidocr_onnxruntime', 'cv2') "
        "if m in sys.modules)); sys.exit(r.exit_code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["scorer", "version", "weights", "extra", "runs", "on"]
    rows = {line.split()[0]: n for n, line in enumerate(lines) if line and line[0] != " "}
    assert {"ocr", "jpeg", "deqa", "judge", "unifiedreward"} <= set(rows)
    assert "ocr (installed)" in lines[rows["ocr"]] and "CPU" in lines[rows["ocr"]]
    deqa = rows["deqa"]
    assert "missing 1/1" in lines[deqa] and lines[deqa + 1].strip() == "separate worker env"
    assert "HEAVY []" in result.stdout


def test_score_prints_and_saves_per_image_scores(tmp_path: Path) -> None:
    images = make_folder(tmp_path / "imgs")
    (tmp_path / "prompts.txt").write_text("a\nb\n\nc\n")  # blank lines are skipped
    out = tmp_path / "out" / "jpeg.jsonl"
    result = runner.invoke(
        app,
        [
            "score",
            "--scorer",
            "jpeg",
            "--images",
            str(tmp_path / "imgs"),
            "--prompts",
            str(tmp_path / "prompts.txt"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    want = JpegCompressibility()(images, ["a", "b", "c"])
    assert [Path(r["image"]).name for r in rows] == ["0.png", "5.png", "10.png"]
    assert [r["prompt"] for r in rows] == ["a", "b", "c"]
    assert [r["value"] for r in rows] == want.values and [r["reward"] for r in rows] == want.rewards
    assert {(r["scorer"], r["version"]) for r in rows} == {("jpeg", "1")}
    printed = [line.split() for line in result.output.splitlines()[1:4]]
    assert [p[2] for p in printed] == ["0.png", "5.png", "10.png"]
    assert float(printed[0][0]) == pytest.approx(want.values[0], abs=1e-4)
    assert f"mean value {sum(want.values) / 3:.4f}" in result.output


def test_score_ocr_on_rendered_text_with_default_output(tmp_path: Path) -> None:
    folder = tmp_path / "ocr"
    folder.mkdir()
    render_text("HELLO").save(folder / "1.png")
    render_text("WORLD").convert("L").save(folder / "2.png")  # grayscale file
    (tmp_path / "p.jsonl").write_text(
        '{"prompt": "a sign \\"hello\\""}\n{"prompt": "a sign \\"world\\""}\n'
    )
    result = runner.invoke(
        app,
        [
            "score",
            "--scorer",
            "ocr",
            "--images",
            str(folder),
            "--prompts",
            str(tmp_path / "p.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (folder / "scores_ocr.jsonl").read_text().splitlines()]
    assert [r["reward"] for r in rows] == [1.0, 1.0]
    assert rows[0]["details"]["target"] == "hello" and rows[0]["version"] == "1-rapidocr"


def test_score_odd_image_files(tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.new("RGBA", (16, 16), (255, 0, 0, 100)).save(folder / "a.png")
    Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(folder / "b.png")  # 16-bit PNG
    Image.new("RGB", (1, 1)).save(folder / "c.png")  # tiny
    result = runner.invoke(app, ["score", "--scorer", "jpeg", "--images", str(folder)])
    assert result.exit_code == 0, result.output
    assert len((folder / "scores_jpeg.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scorer", "jepg"], "unknown scorer 'jepg' (did you mean jpeg?)"),
        (["--scorer", "jpeg", "--prompts", "{two}"], "3 images in"),
        (["--scorer", "deqa"], "deqa runs out of process"),
        (["--scorer", "ocr"], "prompt has no double-quoted text"),
        (["--scorer", "ocr", "-o", "engine=tesseract"], "unknown OCR engine 'tesseract'"),
        (["--scorer", "jpeg", "-o", "noequals"], "scorer option 'noequals' is not KEY=VALUE"),
        (["--scorer", "jpeg", "--prompts", "{two}", "--manifest", "{two}"], "not both"),
    ],
)
def test_score_user_errors_are_one_line(
    tmp_path: Path, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOW_OPD_DEQA_URL", raising=False)
    make_folder(tmp_path / "imgs")
    (tmp_path / "two.txt").write_text("a\nb\n")
    args = [a.replace("{two}", str(tmp_path / "two.txt")) for a in args]
    result = runner.invoke(app, ["score", "--images", str(tmp_path / "imgs"), *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output


def test_score_corrupt_file_names_it(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs", n=1)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = runner.invoke(app, ["score", "--scorer", "jpeg", "--images", str(tmp_path / "imgs")])
    assert (
        result.exit_code == 2
        and "error: cannot read image" in result.output
        and "broken.png" in result.output
    )


@pytest.fixture
def jpeg_service() -> Iterator[ScoreServer]:
    server = ScoreServer({"jpeg": JpegCompressibility()})
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_score_remotely_matches_local(tmp_path: Path, jpeg_service: ScoreServer) -> None:
    images = make_folder(tmp_path / "imgs")
    result = runner.invoke(
        app,
        [
            "score",
            "--scorer",
            "jpeg",
            "--images",
            str(tmp_path / "imgs"),
            "--url",
            jpeg_service.url,
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [
        json.loads(line)
        for line in (tmp_path / "imgs" / "scores_jpeg.jsonl").read_text().splitlines()
    ]
    assert [r["value"] for r in rows] == JpegCompressibility()(images, [""] * 3).values
    bad = runner.invoke(
        app,
        [
            "score",
            "--scorer",
            "jpeg",
            "--images",
            str(tmp_path / "imgs"),
            "--url",
            jpeg_service.url,
            "-o",
            "retries=9",
        ],
    )
    assert bad.exit_code == 2 and "retries=9" in bad.output


def test_fetch_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ok = runner.invoke(app, ["fetch", "jpeg", "ocr"])
    assert (
        ok.exit_code == 0
        and "jpeg: needs no weights" in ok.output
        and "ocr: needs no weights" in ok.output
    )
    offline = runner.invoke(app, ["fetch", "deqa"])
    assert offline.exit_code == 2
    assert (
        "error: cannot download zhiyuanyou/DeQA-Score-Mix3: HF_HUB_OFFLINE is set" in offline.output
    )
    unknown = runner.invoke(app, ["fetch", "imagereword"])
    assert unknown.exit_code == 2 and "unknown scorer 'imagereword'" in unknown.output


# ------------------------------------------------------------------------------------------ library pieces


def test_manifest_items_carry_metadata(tmp_path: Path) -> None:
    make_folder(tmp_path / "run" / "images", n=2)
    rows = [
        {
            "image": "images/0.png",
            "prompt": "a photo of a cat",
            "metadata": {"tag": "single_object"},
            "seed": 1,
        },
        {"path": "images/5.png", "prompt": "two dogs", "tag": "counting"},
    ]
    manifest = tmp_path / "run" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = read_manifest(manifest)
    assert [i.image.name for i in items] == ["0.png", "5.png"]
    assert items[0].meta == {"tag": "single_object"} and items[1].meta == rows[1]
    manifest.write_text(json.dumps({"image": "images/404.png", "prompt": "x"}) + "\n")
    with pytest.raises(FileNotFoundError, match="image 'images/404.png' not found"):
        read_manifest(manifest)
    manifest.write_text('{"prompt": "x"}\n')
    with pytest.raises(ValueError, match="manifest.jsonl:1: no image path field"):
        read_manifest(manifest)
    with pytest.raises(ValueError, match="give --images"):
        collect_items(None)


def test_parse_options() -> None:
    assert parse_options(
        ["url=http://x:1", "timeout=2.5", "retries=1", "flag=true", "name=ocr"]
    ) == {
        "url": "http://x:1",
        "timeout": 2.5,
        "retries": 1,
        "flag": True,
        "name": "ocr",
    }
