"""Run folders: resolving adapters and checking the base model they belong to."""

from __future__ import annotations

import json

import pytest

from trainer.config import ConfigError
from trainer.folders import check_adapter_base, same_base


def _lora_folder(path, base=None):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    if base:
        (path / "manifest.json").write_text(json.dumps({"base_model": base}))
    return path


def test_adapter_base_check(tmp_path):
    ok = _lora_folder(tmp_path / "ok", base="org/model")
    assert check_adapter_base("teachers.x", str(ok), "org/model") == ok
    with pytest.raises(ConfigError, match="is a LoRA for base model 'org/model'"):
        check_adapter_base("teachers.x", str(ok), "org/other")
    unknown = _lora_folder(
        tmp_path / "foreign"
    )  # no manifest: nothing recorded, the load checks shapes
    assert check_adapter_base("teachers.y", str(unknown), "org/other") == unknown
    assert same_base(str(tmp_path), str(tmp_path / ".")) and not same_base("a/b", "a/c")
