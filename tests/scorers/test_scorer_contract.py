"""Contract over SCORERS (the sqlite-utils ``test_docs`` idea): every registered scorer module imports without
heavy or extra-only dependencies, declares name/version/requires on its class, and appears in README's table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scorers import SCORERS
from scorers.catalog import table_markdown

ROOT = Path(__file__).resolve().parents[2]

# model libraries and per-extra dependencies: a scorer may import them in __init__, never at module import.
# torch, numpy and PIL are allowed at module top.
HEAVY = (
    "transformers", "diffusers", "open_clip", "timm", "onnxruntime", "rapidocr_onnxruntime", "paddleocr",
    "paddle", "cv2", "mmdet", "mmcv", "mmengine", "openai", "qwen_vl_utils", "scipy", "sglang", "vllm",
)  # fmt: skip

PROBE = r"""
import importlib, importlib.abc, json, sys
HEAVY = set(json.loads(sys.argv[1]))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"blocked heavy import {name!r} at module import time")
        return None

sys.meta_path.insert(0, Block())
from scorers import SCORERS
from scorers.base import Requirements
out = {}
for key, target in SCORERS.items():
    module, cls_name = target.split(":")
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except Exception as e:
        out[key] = {"error": f"{type(e).__name__}: {e}"}
        continue
    req = getattr(cls, "requires", None)
    out[key] = {
        "name": getattr(cls, "name", None),
        "version": getattr(cls, "version", None),
        "requires_ok": isinstance(req, Requirements),
        "weights": list(getattr(req, "weights", ())),
        "gpu_gb": getattr(req, "gpu_gb", None),
        "callable": callable(getattr(cls, "__call__", None)),
        "doc": bool((cls.__doc__ or "").strip()),
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def declared() -> dict[str, dict]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("key", sorted(SCORERS))
def test_scorer_declares_its_contract_without_heavy_imports(
    declared: dict[str, dict], key: str
) -> None:
    info = declared[key]
    assert "error" not in info, info.get("error")
    assert info["name"] == key, "a scorer's name must equal its registry key"
    assert isinstance(info["version"], str) and info["version"], (
        "version must be a non-empty string"
    )
    assert info["requires_ok"], "requires must be a scorers.base.Requirements"
    assert all(isinstance(w, str) and w for w in info["weights"])
    assert isinstance(info["gpu_gb"], (int, float)) and info["gpu_gb"] >= 0
    assert info["callable"] and info["doc"], (
        "scorers are callable and say in one docstring line what they measure"
    )


def test_registry_names_are_stable_lowercase_ids() -> None:
    for key, target in SCORERS.items():
        assert key == key.lower() and key.replace("_", "").isalnum(), key
        assert target.count(":") == 1 and target.startswith("scorers."), target


def test_readme_has_the_generated_scorer_table() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if "## Scorers" not in text:
        pytest.xfail("README.md has no '## Scorers' section yet (splice in docs/scorers_table.md)")
    assert table_markdown() in text, (
        "README's scorer table is stale: regenerate it with `python -m scorers.catalog` and paste it under ## Scorers"
    )
