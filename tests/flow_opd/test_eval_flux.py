"""`harness eval --model <a FLUX folder>` end to end on the tiny FLUX: its own settings (64 px, 4 steps, distilled
guidance 3.5) fill the protocol, and the stored protocol says the guidance is distilled."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flow_opd.cli import app
from results.store import Store
from service.queries import protocol_summary
from tests.support.fakes import register


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    import scorers

    monkeypatch.setattr(scorers, "SCORERS", dict(scorers.SCORERS))
    register()


def test_eval_on_a_flux_folder_records_its_distilled_guidance(
    tiny_flux_dir: Path, tmp_path: Path
) -> None:
    store = tmp_path / "s.duckdb"
    args = ["eval", "--model", str(tiny_flux_dir), "--benchmark", "geneval", "--scorers", "fake",
            "--limit", "2", "--run", "flux", "--store", str(store), "--no-progress"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "geneval" in res.output and "8 images generated" in res.output
    with Store(store, read_only=True) as st:
        run = st.get_run("flux")
        protocol = st.protocols(["flux"])["flux"]
    assert run is not None and run.model == str(tiny_flux_dir)
    gen = protocol["generation"]
    assert (gen["steps"], gen["cfg"], gen["height"], gen["width"]) == (4, 3.5, 64, 64)
    assert gen["guidance"] == "distilled"
    assert "distilled guidance 3.5" in protocol_summary(protocol)
    assert len(list((tmp_path / "images").glob("*/*.png"))) == 8
    # the same command again finds the run complete: the recorded protocol is the one it asks for
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 images generated" in again.output, again.output


def test_a_size_flux_cannot_pack_is_one_line_before_any_work(
    tiny_flux_dir: Path, tmp_path: Path
) -> None:
    store = tmp_path / "s.duckdb"
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            str(tiny_flux_dir),
            "-b",
            "geneval",
            "--scorers",
            "fake",
            "--limit",
            "1",
            "--size",
            "72",
            "--store",
            str(store),
            "--no-progress",
        ],  # fmt: skip
    )
    assert res.exit_code == 2, res.output
    assert "multiple of 16" in res.output
