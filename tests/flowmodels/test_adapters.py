"""``resolve_adapter_dir``: the one resolver behind every ``--lora`` and every recipe's adapter path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowmodels.adapters import AdapterNotFoundError, resolve_adapter_dir


def _lora_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    return path


def test_resolve_adapter_dir_accepts_run_folders_and_peft_folders(tmp_path: Path) -> None:
    lora = _lora_folder(tmp_path / "run" / "lora")
    (tmp_path / "run" / "manifest.json").write_text(
        json.dumps({"base_model": "tiny", "output": "lora"})
    )
    assert resolve_adapter_dir(tmp_path / "run") == lora
    assert resolve_adapter_dir(str(tmp_path / "run")) == lora
    assert resolve_adapter_dir(lora) == lora
    (tmp_path / "merged_run").mkdir()
    (tmp_path / "merged_run" / "manifest.json").write_text(json.dumps({"output": "merged"}))
    with pytest.raises(AdapterNotFoundError, match="output='merged'"):
        resolve_adapter_dir(tmp_path / "merged_run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterNotFoundError, match="no lora/"):
        resolve_adapter_dir(tmp_path / "empty")
