"""``harness serve``: the real command in a subprocess (loopback by default, token from a file, scoring works,
Ctrl-C stops it cleanly), and one-line errors for what a user gets wrong."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from flow_opd.cli import app
from tests.support.service_data import b64, draw, mini_prompts

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "cli-token-0123456789abcdef"


def test_harness_serve_runs_on_loopback_with_a_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_OPD_")}
    env.update(PYTHONPATH=str(ROOT), FLOW_OPD_TOKEN_FILE=str(token_file), FLOW_OPD_MAX_IMAGES="4")
    cmd = [sys.executable, "-m", "flow_opd", "serve", "--scorers", "mini_quality,mini_geneval",
           "--port", "0", "--store", str(tmp_path / "results.duckdb")]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
            m = re.search(r"Uvicorn running on (http://[\d.]+:\d+)", line)
            url = m.group(1) if m else None
        assert url is not None, "".join(lines)
        assert url.startswith("http://127.0.0.1:")  # loopback unless --host says otherwise
        assert any("writes enabled" in x for x in lines), "".join(lines)
        health = httpx.get(f"{url}/health").json()
        assert health["writes"] is True and health["scorers"] == ["mini_quality", "mini_geneval"]
        meta = mini_prompts(2, seed=4)
        rng = __import__("random").Random(0)
        body = {"scorer": "mini_geneval", "images": [b64(draw(m, True, rng)) for m in meta],
                "prompts": [m["prompt"] for m in meta], "meta": meta}  # fmt: skip
        r = httpx.post(f"{url}/v1/score", json=body, timeout=30)
        assert r.status_code == 200 and r.json()["values"] == [1.0, 1.0]
        too_many = {
            **body,
            "images": body["images"] * 3,
            "prompts": body["prompts"] * 3,
            "meta": None,
        }
        assert httpx.post(f"{url}/v1/score", json=too_many).status_code == 413  # env limit applied
        wrong = httpx.delete(f"{url}/v1/runs/x", headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 403
        right = httpx.delete(f"{url}/v1/runs/x", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 404  # authorised; there is no run x
        assert TOKEN not in " ".join(proc.args)  # type: ignore[arg-type]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        rest = proc.stderr.read()  # type: ignore[union-attr]
    assert code == 0, rest
    assert TOKEN not in rest and not any(TOKEN in x for x in lines)


def test_serve_errors_are_one_line(tmp_path: Path, monkeypatch: object) -> None:
    runner = CliRunner()
    store = str(tmp_path / "s.duckdb")
    r = runner.invoke(app, ["serve", "--scorers", "mini_qualty", "--store", store])
    assert r.exit_code == 2 and "did you mean mini_quality" in r.output
    not_db = tmp_path / "notes.duckdb"
    not_db.write_text("hello, I am not a database")
    r = runner.invoke(app, ["serve", "--store", str(not_db)])
    assert r.exit_code == 2 and "not a DuckDB database" in r.output
    r = runner.invoke(app, ["serve", "--store", store, "--token-file", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "cannot read token file" in r.output
    r = runner.invoke(app, ["serve", "--store", store, "--port", "70000"])
    assert r.exit_code == 2 and "FLOW_OPD_PORT" in r.output
