"""`harness eval` on pipelines without a FlowModel backend (tiny SDXL and SANA through their own diffusers
pipelines), the one line for an unsupported pipeline, and `harness ls models`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flow_opd.cli import app
from results.store import Store
from tests.support.fakes import register


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    import scorers

    monkeypatch.setattr(scorers, "SCORERS", dict(scorers.SCORERS))
    register()


def eval_args(model: Path, store: Path, *extra: str) -> list[str]:
    return ["eval", "--model", str(model), "--benchmark", "geneval", "--scorers", "fake",
            "--limit", "2", "--images-per-prompt", "2", "--batch-size", "3", "--steps", "2",
            "--store", str(store), "--run", "r", "--no-progress", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("fixture", "family", "scheduler", "lengths", "cfg"),
    [
        ("tiny_sdxl_dir", "SDXL", "EulerDiscreteScheduler", {"text_encoder": 77, "text_encoder_2": 77}, 5.0),
        ("tiny_sana_dir", "SANA", "DPMSolverMultistepScheduler", {"text_encoder": 300}, 4.5),
    ],
)  # fmt: skip
def test_eval_runs_end_to_end_and_records_the_family(
    fixture: str,
    family: str,
    scheduler: str,
    lengths: dict[str, int],
    cfg: float,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    model: Path = request.getfixturevalue(fixture)
    store = tmp_path / "s.duckdb"
    out = CliRunner().invoke(app, eval_args(model, store))
    assert out.exit_code == 0, out.output
    assert "4 images generated" in out.output and "GenEval prompts scored by fake" in out.output
    with Store(store, read_only=True) as st:
        run = st.get_run("r")
        assert run is not None
        gen, rec = run.protocol["generation"], run.protocol["model"]
        with st.session() as con:
            seeds = con.execute("SELECT seed FROM samples ORDER BY seed").fetchall()
    # the protocol: the user's steps, the family's own guidance and the folder's own size (64 px)
    assert (gen["steps"], gen["cfg"], gen["height"], gen["width"]) == (2, cfg, 64, 64)
    assert rec["family"] == family and rec["guidance"] == "cfg"
    assert rec["sampler"] == "pipeline __call__" and rec["scheduler"]["class"] == scheduler
    assert rec["text_lengths"] == lengths
    assert [s for (s,) in seeds] == [42, 43, 44, 45]  # seed + i*K + j

    again = CliRunner().invoke(
        app, eval_args(model, store)
    )  # the same command resumes: nothing to do
    assert (
        again.exit_code == 0
        and "0 images generated, 0 re-scored, 4 already complete" in again.output
    )


def test_an_unsupported_pipeline_is_one_line_before_any_work(tmp_path: Path) -> None:
    folder = tmp_path / "wan"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    store = tmp_path / "s.duckdb"
    out = CliRunner().invoke(app, eval_args(folder, store))
    assert out.exit_code == 2
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and "'WanPipeline' is not supported" in lines[0]
    assert "SanaPipeline" in lines[0] and "StableDiffusion3Pipeline" in lines[0]
    assert not store.exists() and not (tmp_path / "images").exists()


def test_a_lora_on_an_evaluation_only_pipeline_is_refused(
    tiny_sdxl_dir: Path, tmp_path: Path
) -> None:
    store = tmp_path / "s.duckdb"
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text("{}")
    out = CliRunner().invoke(app, eval_args(tiny_sdxl_dir, store, "--lora", str(lora)))
    assert out.exit_code == 2 and "no LoRA" in out.output, out.output
    assert not store.exists()


def test_ls_models_lists_what_trains_and_what_only_evaluates() -> None:
    out = CliRunner().invoke(app, ["ls", "models"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert max(len(line) for line in lines) <= 100
    rows = {
        p[1]: line for line in lines if len(p := line.split()) > 1 and p[1].endswith("Pipeline")
    }
    assert "train + evaluate" in rows["StableDiffusion3Pipeline"]
    assert "train + evaluate" in rows["MiniFlowPipeline"]
    for cls_name in ("StableDiffusionXLPipeline", "SanaPipeline", "PixArtSigmaPipeline"):
        assert "train" not in rows[cls_name] and "evaluate" in rows[cls_name]
    assert rows["StableDiffusionXLPipeline"].split()[3:6] == ["50", "cfg", "5"]
    assert rows["StableDiffusion3Pipeline"].split()[-4:] == ["40", "cfg", "4.5", "512"]

    js = CliRunner().invoke(app, ["ls", "models", "--format", "json"])
    assert js.exit_code == 0
    records = {r["pipeline class"]: r for r in json.loads(js.output)[0]["rows"]}
    assert records["SanaPipeline"]["loader"] == "diffusers SanaPipeline"
    assert records["StableDiffusion3Pipeline"]["loader"] == "flowmodels.sd3:SD3"
    for fmt in ("markdown", "csv"):
        assert "SanaPipeline" in CliRunner().invoke(app, ["ls", "models", "--format", fmt]).output
    bad = CliRunner().invoke(app, ["ls", "models", "--format", "xml"])
    assert bad.exit_code == 2


def test_generate_makes_images_through_the_pipeline(tiny_sana_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\ntwo dogs\n")
    out = tmp_path / "gen"
    args = ["generate", "--model", str(tiny_sana_dir), "--prompts", str(prompts), "--steps", "2",
            "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "2 generated" in res.output
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in lines] == [42, 43]
    assert Image.open(out / lines[0]["file"]).size == (64, 64)  # the folder's own size
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["steps"], settings["cfg"]) == (2, 4.5)
