"""Scorer weights: presence checks against a hand-built HF cache, offline fetch errors, the scorer catalog."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest

from scorers import UnknownScorerError
from scorers.base import Requirements
from scorers.catalog import (
    device_needs,
    extra_status,
    missing_requirements,
    scorer_class,
    scorer_infos,
)
from scorers.fetch import (
    HubUnavailableError,
    download,
    fetch,
    hf_download_command,
    local_snapshot,
    missing_weights_message,
    parse_spec,
    weights_status,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An HF hub cache holding one snapshot of org/present (refs/main -> COMMIT)."""
    repo = tmp_path / "models--org--present"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "snapshots" / COMMIT / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def test_parse_spec() -> None:
    assert parse_spec("org/name@abc123") == parse_spec("org/name@abc123")
    spec = parse_spec("org/name@abc123")
    assert (spec.repo, spec.revision, spec.is_local_path) == ("org/name", "abc123", False)
    assert parse_spec("org/name").revision is None
    assert parse_spec("/models/deqa").is_local_path and parse_spec("./w@1").repo == "./w@1"


def test_presence_is_read_from_the_cache_without_network(hf_cache: Path) -> None:
    assert local_snapshot("org/present") == hf_cache / "models--org--present" / "snapshots" / COMMIT
    assert local_snapshot(f"org/present@{COMMIT}") is not None
    assert local_snapshot("org/present@ffffffffffffffffffffffffffffffffffffffff") is None
    assert local_snapshot("org/absent") is None
    assert weights_status(Requirements()) == "-"
    assert weights_status(Requirements(weights=("org/present",))) == "present"
    assert (
        weights_status(Requirements(weights=("org/present", "org/absent"))) == "missing: org/absent"
    )
    assert weights_status(Requirements(weights=(str(hf_cache),))) == "present"  # a local folder


def test_offline_download_is_one_clear_line(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download("org/present") == local_snapshot("org/present")  # already here: fine offline
    with pytest.raises(HubUnavailableError) as info:
        download("org/absent")
    assert "\n" not in str(info.value)
    assert "cannot download org/absent: HF_HUB_OFFLINE is set" in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        download(str(hf_cache / "nope"))


def test_fetch_by_scorer_name(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (done,) = fetch(["jpeg"])
    assert done.scorer == "jpeg" and done.paths == () and done.note == "needs no weights"
    with pytest.raises(HubUnavailableError, match="zhiyuanyou/DeQA-Score-Mix3"):
        fetch(["deqa"])
    with pytest.raises(UnknownScorerError, match=r"unknown scorer 'dqa' \(did you mean deqa\?\)"):
        fetch(["jpeg", "dqa"])  # names are checked before anything is downloaded


def test_missing_weights_message() -> None:
    message = missing_weights_message(
        "judge", "Qwen/Qwen2.5-VL-7B-Instruct", OSError("no route\nsecond line")
    )
    assert message.startswith(
        "judge: weights 'Qwen/Qwen2.5-VL-7B-Instruct' are not on this machine (no route)"
    )
    assert "harness fetch judge" in message and "\n" not in message


def test_catalog_reads_classes() -> None:
    assert scorer_class("ocr").name == "ocr"
    with pytest.raises(UnknownScorerError, match="did you mean ocr"):
        scorer_class("ocrr")
    infos = {i.name: i for i in scorer_infos(check_local=True)}
    assert infos["jpeg"].device == "CPU" and infos["jpeg"].weights_status == "-"
    assert infos["deqa"].device == "GPU >= 16 GB, separate worker env"
    assert (
        infos["deqa"].weights_status == "missing: zhiyuanyou/DeQA-Score-Mix3"
    )  # no hub weights on this box
    assert infos["ocr"].extra == "ocr" and infos["ocr"].extra_status == "installed"
    assert extra_status(None) == "-" and extra_status("no-such-extra") == "?"
    assert extra_status("paddleocr") in ("installed", "missing")

    class Gpu:
        requires = Requirements(gpu_gb=8)

    assert device_needs(Gpu) == "GPU >= 8 GB"


def test_hub_failure_is_one_clear_line(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the env var is unset, but huggingface_hub itself is in offline mode (conftest): snapshot_download fails
    # the way it does on a machine with no route to the hub
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailableError) as info:
        download("org/absent")
    assert str(info.value).startswith("cannot download org/absent (") and "\n" not in str(
        info.value
    )
    assert "run `harness fetch` on a machine with hub access" in str(info.value)
    assert download("org/present") == local_snapshot(
        "org/present"
    )  # cached copy is used, with a warning


def test_specs_naming_files_are_found_in_the_cache(hf_cache: Path) -> None:
    # `org/repo@rev:file` and `org/repo@rev:glob,glob` (scorers.hub) name files of a snapshot
    assert parse_spec(f"org/present@{COMMIT}:*.json,*.txt").files == ("*.json", "*.txt")
    assert local_snapshot(f"org/present@{COMMIT}:config.json") is not None
    assert local_snapshot(f"org/present@{COMMIT}:*.json,*.txt") is not None
    assert local_snapshot(f"org/present@{COMMIT}:weights.pt") is None  # that file is not cached
    assert weights_status(Requirements(weights=(f"org/present@{COMMIT}:config.json",))) == "present"
    assert hf_download_command("org/a@r1:w.pt") == "hf download org/a w.pt --revision r1"
    assert hf_download_command("org/a@r1:*.json,*.txt") == (
        "hf download org/a --include '*.json' '*.txt' --revision r1"
    )
    assert hf_download_command("org/a") == "hf download org/a"


def test_missing_requirements_lists_every_scorer_at_once(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FLOW_OPD_DEQA_URL", raising=False)
    assert missing_requirements(["jpeg", "ocr", "unifiedreward"]) == []  # nothing to check here
    pick, deqa = missing_requirements(["pickscore", "jpeg", "deqa", "pickscore"])
    assert pick.startswith(
        "pickscore: weights not here (`harness fetch pickscore`, or `hf download "
    )
    assert pick.count("`hf download ") == 2 and "huggingface-cli" not in pick
    assert "deqa: runs as a worker" in deqa and "FLOW_OPD_DEQA_URL" in deqa
    monkeypatch.setenv("FLOW_OPD_DEQA_URL", "http://127.0.0.1:1")
    assert missing_requirements(["deqa"]) == []  # its weights live in the worker's environment
