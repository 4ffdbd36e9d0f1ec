"""The hub's command line is ``hf`` (huggingface_hub no longer ships ``huggingface-cli``): product code and the
manuals must not tell users to run a command that does not exist."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("flowbase", "results", "mini_world", "flowmodels", "scorers", "harness", "trainer", "service",
           "flow_opd", "bench", "docs")  # fmt: skip


def test_no_huggingface_cli_in_product_code_or_docs() -> None:
    files = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "Makefile"]
    for top in PRODUCT:
        files += [
            p for p in (ROOT / top).rglob("*") if p.suffix in (".py", ".md", ".yaml", ".html")
        ]
    old = "huggingface" + "-cli"
    hits = [str(p.relative_to(ROOT)) for p in files if p.is_file() and old in p.read_text("utf-8")]
    assert hits == []


def test_hf_download_takes_the_arguments_the_messages_give() -> None:
    from flowmodels.models import ModelNotFoundError, resolve_model_dir

    try:
        resolve_model_dir("nobody/nothing-here")
    except ModelNotFoundError as e:
        assert "`hf download nobody/nothing-here`" in str(e)
    else:  # pragma: no cover
        raise AssertionError("no error")
    hf = shutil.which("hf")
    if hf is None:  # the hub's CLI is a console script of huggingface_hub
        return
    usage = subprocess.run([hf, "download", "--help"], capture_output=True, text=True).stdout
    assert "REPO_ID" in usage and "--revision" in usage
