"""A damaged store (cut to half its size, or random bytes in a table) is refused with one line by `harness runs`,
`harness leaderboard`, `harness eval` (which leaves the file as it was) and `harness store check`, which also
finds changed images."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flow_opd.cli import app
from results.store import Store
from tests.support.damage import digest, scribble, truncate_half
from tests.support.fakes import register
from tests.support.service_data import add_mini_run

DAMAGE = pytest.mark.parametrize(
    "damage", [truncate_half, scribble], ids=["truncated", "random-bytes"]
)


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    import scorers

    monkeypatch.setattr(scorers, "SCORERS", dict(scorers.SCORERS))
    register()


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    path = tmp_path / "s.duckdb"
    add_mini_run(Store(path), "a", prompts=60, images_per_prompt=2)
    add_mini_run(Store(path), "b", prompts=60, images_per_prompt=2, skill=0.5)
    return path


def _one_line_refusal(output: str, store: Path) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith(f"error: store {store} is damaged"), output
    assert "Restore s.duckdb from a backup" in lines[0]


@DAMAGE
@pytest.mark.parametrize("command", [["runs"], ["leaderboard"], ["store", "check"]])
def test_read_commands_refuse_a_damaged_store_in_one_line(
    store: Path, damage: object, command: list[str]
) -> None:
    assert CliRunner().invoke(app, [*command, "--store", str(store)]).exit_code == 0
    if damage is scribble and command != ["store", "check"]:
        # a read-only command checks the file's size at open and meets changed bytes where it reads them:
        # `runs` and `leaderboard` read the summaries, not the samples
        scribble(store, table="score_sums")
    else:
        damage(store)  # type: ignore[operator]
    res = CliRunner().invoke(app, [*command, "--store", str(store)])
    assert res.exit_code == 2
    _one_line_refusal(res.output, store)


@DAMAGE
def test_eval_refuses_a_damaged_store_and_leaves_it_unchanged(
    store: Path, tiny_sd3_dir: Path, damage: object
) -> None:
    damage(store)  # type: ignore[operator]
    before = digest(store)
    res = CliRunner().invoke(
        app,
        ["eval", "--model", str(tiny_sd3_dir), "-b", "geneval", "--scorers", "fake", "--limit", "2",
         "--steps", "2", "--size", "32", "--no-progress", "--store", str(store), "--run", "new"],
    )  # fmt: skip
    assert res.exit_code == 2
    _one_line_refusal(res.output, store)
    assert digest(store) == before
    assert not Path(f"{store}.wal").exists()


def test_store_check_verifies_every_image(store: Path) -> None:
    res = CliRunner().invoke(app, ["store", "check", "--store", str(store)])
    assert res.exit_code == 0, res.output
    assert "ok (2 runs, 480 samples, 480 scores" in res.output and "images (sha256)" in res.output
    image = sorted((store.parent / "images").glob("*/*.png"))[3]
    image.write_bytes(image.read_bytes() + b"extra")
    res = CliRunner().invoke(app, ["store", "check", "--store", str(store)])
    assert res.exit_code == 2
    assert f"{image}: its bytes do not match its sha256" in res.output
    assert "1 of" in res.output and "restore them from a backup" in res.output
    res = CliRunner().invoke(app, ["store", "check", "--store", str(store), "--no-images"])
    assert res.exit_code == 0, res.output
