"""The ``UserError`` family: a user's mistake is one line ``error: ...`` with exit code 2 (the CLI) or a 4xx (the
service); anything else is a bug and keeps its traceback (a 500)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from flow_opd.cli import app
from flowbase.errors import (
    InputError,
    MissingError,
    MissingExtraError,
    UnknownNameError,
    UserError,
    one_line,
)

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


# ------------------------------------------------------------------------------------------------ the family


def _family() -> list[tuple[type[BaseException], type[BaseException]]]:
    """(class, the builtin error it must still be) for every member of the family."""
    from flowmodels.adapters import AdapterNotFoundError
    from flowmodels.models import ModelNotFoundError
    from harness.benchmarks import UnknownBenchmarkError
    from results.store import StoreError
    from scorers import UnknownScorerError, geneval, hub
    from scorers.clip import CheckpointFormatError
    from scorers.deqa import WorkerNotConfiguredError
    from scorers.fetch import HubUnavailableError
    from scorers.geneval_rules import MetadataError
    from scorers.ocr import NoQuotedTextError
    from scorers.remote import RemoteScorerError, RequestError
    from service.queries import Conflict, NotFound
    from service.wire import WireError
    from trainer.config import ConfigError

    return [
        (InputError, ValueError),
        (MissingError, FileNotFoundError),
        (MissingExtraError, ImportError),
        (UnknownNameError, KeyError),
        (ConfigError, ValueError),
        (ModelNotFoundError, FileNotFoundError),
        (AdapterNotFoundError, FileNotFoundError),
        (StoreError, Exception),
        (UnknownScorerError, KeyError),
        (UnknownBenchmarkError, KeyError),
        (HubUnavailableError, RuntimeError),
        (RemoteScorerError, RuntimeError),
        (geneval.WeightsNotFoundError, FileNotFoundError),
        (hub.WeightsNotFoundError, FileNotFoundError),
        (NoQuotedTextError, ValueError),
        (MetadataError, ValueError),
        (CheckpointFormatError, ValueError),
        (WorkerNotConfiguredError, ValueError),
        (RequestError, Exception),
        (WireError, Exception),
        (NotFound, LookupError),
        (Conflict, Exception),
    ]


@pytest.mark.parametrize("cls, builtin", _family(), ids=lambda c: c.__qualname__)
def test_every_member_is_a_user_error_and_keeps_its_builtin_base(
    cls: type[BaseException], builtin: type[BaseException]
) -> None:
    assert issubclass(cls, UserError) and issubclass(cls, builtin)
    args = (
        (400, "the message") if cls.__name__ in ("RequestError", "WireError") else ("the message",)
    )
    with pytest.raises(builtin):  # callers' old except clauses still catch it
        raise cls(*args)
    assert str(cls(*args)) == "the message"  # no quotes, even for the KeyError members


def test_one_line_joins_a_multi_line_message() -> None:
    assert one_line(InputError("config.yaml is not valid YAML: bad\n  in line 3\n\n")) == (
        "config.yaml is not valid YAML: bad; in line 3"
    )


# ------------------------------------------------------------------------------ the CLI: user errors, one line


def _one_line_exit_2(result: Any, message: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "{tmp}/no-such-model"], "/no-such-model' is not available here"),
        (["--model", "{tmp}"], "is not a diffusers model folder (no model_index.json)"),
        (["--device", "foo"], "unknown device 'foo'"),
        (["--dtype", "int8"], "unknown dtype 'int8'; use one of auto, float32"),
        (["--format", "xml"], "unknown format 'xml'; use one of text, markdown, csv, json"),
        (["-b", "mini_genevl"], "unknown benchmark 'mini_genevl' (did you mean mini_geneval"),
        (["--scorers", "mini_qualty"], "unknown scorer 'mini_qualty' (did you mean mini_quality"),
        (["--prompts", "{tmp}/prompts", "--scorers", "mini_quality"], "/prompts is a folder"),
        (["--prompts", "{tmp}/none.txt", "--scorers", "mini_quality"], "none.txt does not exist"),
        (
            ["--prompts", "{tmp}/bad.jsonl", "--scorers", "mini_quality"],
            "bad.jsonl:2: not valid JSON",
        ),
        (["--limit", "0"], "--limit must be >= 1, got 0"),
        (["--steps", "0"], "steps must be >= 1, got 0"),
    ],
)
def test_eval_user_errors_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a cat"}\n{"prompt": \n')
    store = tmp_path / "s.duckdb"
    base = ["eval", "--model", "mini", "-b", "mini_geneval", "--limit", "1", "--no-progress"]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    res = runner.invoke(app, [*base, *args, "--store", str(store)])
    _one_line_exit_2(res, message)
    assert not store.exists()  # refused before the store is created


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_one_line(tmp_path: Path) -> None:
    res = runner.invoke(app, ["eval", "--model", "mini", "-b", "mini_geneval", "--device", "cuda",
                              "--store", str(tmp_path / "s.duckdb")])  # fmt: skip
    _one_line_exit_2(res, "device 'cuda' is not available here")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompts", "{tmp}"], "is a folder; pass a .txt (one prompt per line) or .jsonl file"),
        (["--prompts", "{tmp}/none.txt"], "none.txt does not exist"),
        (["--prompts", "{tmp}/p.txt", "--device", "foo"], "unknown device 'foo'"),
        (["--prompts", "{tmp}/p.txt", "--dtype", "int8"], "unknown dtype 'int8'"),
        (["--benchmark", "nope"], "unknown benchmark 'nope'"),
        (["--prompts", "{tmp}/p.txt", "--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_generate_user_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "p.txt").write_text("a cat\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = tmp_path / "out"
    res = runner.invoke(app, ["generate", "--model", "mini", *args, "--out", str(out)])
    _one_line_exit_2(res, message)
    assert not out.exists()


def _images(folder: Path, n: int = 2) -> Path:
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scorer", "mini_qualty"], "unknown scorer 'mini_qualty' (did you mean mini_quality"),
        (
            ["--scorer", "mini_quality", "-o", "nope=1"],
            "scorer mini_quality takes no option 'nope'",
        ),
        (["--scorer", "mini_quality", "--prompts", "{tmp}"], "is a folder; pass a file"),
        (["--scorer", "mini_quality", "--manifest", "{tmp}/m.jsonl"], "m.jsonl does not exist"),
        (["--scorer", "mini_quality", "--images", "{tmp}/p.txt"], "p.txt is a file"),
        (["--scorer", "colour", "-o", "target=[2, 0, 0]"], "target colour must be 3 values"),
        (["--scorer", "mini_geneval"], "mini_geneval needs per-image metadata"),
    ],
)
def test_score_user_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "p.txt").write_text("a\nb\n")
    images = _images(tmp_path / "imgs")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--images" not in args:
        args += ["--images", str(images)]
    _one_line_exit_2(runner.invoke(app, ["score", *args]), message)


@pytest.mark.parametrize(
    "args, message",
    [
        (["runs", "--format", "xml"], "unknown format 'xml'"),
        (["leaderboard", "--format", "yaml"], "unknown format 'yaml'"),
        (["compare", "a", "b", "--format", "html"], "unknown format 'html'"),
        (["compare", "a", "b"], "no run 'a' in"),
        (["report", "nope"], "no run 'nope' in"),
        (["leaderboard"], "no scores in the store yet"),
    ],
)
def test_read_command_user_errors_are_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    from results.store import Store

    Store(tmp_path / "s.duckdb")
    _one_line_exit_2(runner.invoke(app, [*args, "--store", str(tmp_path / "s.duckdb")]), message)


def test_serve_without_its_extra_names_the_extra(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import importlib.abc
        import sys

        class NoFastapi(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] == "fastapi":
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

        sys.meta_path.insert(0, NoFastapi())
        from flow_opd.cli import app

        sys.argv = ["harness", "serve", "--store", {str(tmp_path / "s.duckdb")!r}]
        app()
        """
    )
    got = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert got.returncode == 2, got.stderr
    assert got.stderr == "error: harness serve needs fastapi: pip install 'flow-opd[serve]'\n"


def test_a_recipe_config_error_is_one_line_and_exit_2() -> None:
    got = subprocess.run(
        [sys.executable, "-m", "trainer.grpo", "trainer/configs/grpo_tiny.yaml", "nope=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert got.returncode == 2, got.stderr
    assert got.stderr.startswith("error: unknown config key 'nope'") and got.stderr.count("\n") == 1
    assert "Traceback" not in got.stderr


def test_the_recipes_excepthook_prints_the_family_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowmodels.models import ModelNotFoundError
    from scorers.fetch import HubUnavailableError
    from trainer.config import _install_user_error_hook

    seen: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: seen.append(value))
    _install_user_error_hook()
    for err in (
        ModelNotFoundError("model 'x' is not available here"),
        MissingExtraError("needs rapidocr: pip install 'flow-opd[ocr]'"),
        HubUnavailableError("cannot download x\n(offline)"),
    ):
        sys.excepthook(type(err), err, None)
    assert capsys.readouterr().err.splitlines() == [
        "error: model 'x' is not available here",
        "error: needs rapidocr: pip install 'flow-opd[ocr]'",
        "error: cannot download x; (offline)",
    ]
    assert seen == []
    bug = ValueError("internal")
    sys.excepthook(ValueError, bug, None)  # a bug goes to the previous hook: the traceback
    assert seen == [bug] and capsys.readouterr().err == ""


# --------------------------------------------------------------------------------- the CLI: bugs keep their traceback


@pytest.mark.parametrize("bug", [ValueError("internal"), KeyError("internal")])
def test_a_bug_in_eval_is_not_reported_as_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bug: Exception
) -> None:
    import harness.evaluation

    def broken(*args: Any, **kwargs: Any) -> None:
        raise bug

    monkeypatch.setattr(harness.evaluation, "evaluate", broken)
    res = runner.invoke(app, ["eval", "--model", "mini", "-b", "mini_geneval",
                              "--store", str(tmp_path / "s.duckdb")])  # fmt: skip
    assert res.exit_code == 1 and res.exception is bug  # propagated, not turned into exit 2
    assert "error:" not in res.output


@pytest.mark.parametrize("bug", ["ValueError('internal')", "KeyError('internal')"])
def test_a_bug_prints_its_traceback(tmp_path: Path, bug: str) -> None:
    from results.store import Store

    Store(tmp_path / "s.duckdb")
    script = textwrap.dedent(
        f"""
        import sys
        import harness.tables

        def broken(*args, **kwargs):
            raise {bug}

        harness.tables.benchmark_tables = broken
        from flow_opd.cli import app

        sys.argv = ["harness", "leaderboard", "--store", {str(tmp_path / "s.duckdb")!r}]
        app()
        """
    )
    got = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert got.returncode == 1, got.stderr
    assert "Traceback (most recent call last)" in got.stderr and "in broken" in got.stderr
    assert f"{bug.split('(')[0]}: " in got.stderr.splitlines()[-1]
    assert "error: internal" not in got.stderr


# ------------------------------------------------------------------------------------------------- the service


class _Raiser:
    """A scorer that raises what its prompt names."""

    name = "raiser"
    version = "1"

    def __init__(self) -> None:
        from scorers.base import Requirements

        self.requires = Requirements()

    def __call__(self, images: list[Any], prompts: list[str], meta: Any = None) -> Any:
        errors: dict[str, Exception] = {
            "input": InputError("prompt 'input' cannot be scored"),
            "extra": MissingExtraError("needs rapidocr: pip install 'flow-opd[ocr]'"),
            "plain": ValueError("a plain ValueError from an outside scorer"),
            "bug": RuntimeError("internal"),
        }
        raise errors[prompts[0]]


def test_the_service_maps_user_errors_to_4xx_and_bugs_to_500() -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from tests.support.service_data import b64

    app = create_app(Settings(store=Path(":memory:")), {"raiser": _Raiser()})
    raised = {
        "input": InputError("bad value"),
        "unknown": UnknownNameError("no run 'x'"),
        "missing": MissingError("weights missing on this server"),
        "bug": RuntimeError("secret internals"),
    }

    @app.get("/raise/{what}")
    def raise_it(what: str) -> None:
        raise raised[what]

    with TestClient(app, raise_server_exceptions=False) as client:
        got = {w: client.get(f"/raise/{w}") for w in raised}
        assert {w: r.status_code for w, r in got.items()} == {
            "input": 400,
            "unknown": 404,
            "missing": 500,
            "bug": 500,
        }
        assert got["unknown"].json() == {"detail": "no run 'x'"}
        assert "secret internals" not in got["bug"].text  # a bug's message is not the client's

        def score(prompt: str) -> Any:
            image = b64(Image.new("RGB", (8, 8)))
            body = {"scorer": "raiser", "images": [image], "prompts": [prompt]}
            return client.post("/v1/score", json=body)

        assert score("input").status_code == 400
        assert "cannot be scored" in score("input").json()["detail"]
        assert (
            score("plain").status_code == 400
        )  # kept: scorers outside the package raise ValueError
        assert score("extra").status_code == 500
        assert "pip install" in score("extra").json()["detail"]
        assert score("bug").status_code == 500
        assert client.get("/v1/leaderboard/main", params={"sort": "nope"}).status_code == 400
