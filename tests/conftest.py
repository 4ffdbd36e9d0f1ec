"""Test set-up: offline hub, no network beyond loopback, `--slow` opt-in, and a tiny SD3 model built once."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests check behaviour, not speed: no per-example deadline (hypothesis's 200 ms default failed
# test_relations_are_antisymmetric once on a loaded 2-core box). Speed is measured under bench/.
settings.register_profile("flow-opd", deadline=None)
settings.load_profile("flow-opd")

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# one thread per test process: several threads on 2 shared cores made tiny-model tests ~10x slower
os.environ.setdefault("OMP_NUM_THREADS", "1")

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _loopback_only(address: object) -> None:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        if host == "localhost":
            return
        try:
            if ipaddress.ip_address(host.split("%")[0]).is_loopback:
                return
        except ValueError:
            pass
        raise RuntimeError(f"tests may not open network connections (to {host}); loopback only")


def _guarded_connect(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _loopback_only(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _loopback_only(address)
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: run with --slow")
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--slow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SD3 pipeline saved to disk once per session (no T5)."""
    from flowmodels.tiny import save_tiny_sd3

    return save_tiny_sd3(tmp_path_factory.mktemp("models") / "tiny-sd3", seed=0)


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random FLUX.1-dev-shaped pipeline (guidance embedding) saved to disk once per session."""
    from flowmodels.tiny import save_tiny_flux

    return save_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux", seed=0)


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SDXL pipeline saved to disk once per session (evaluation only)."""
    from flowmodels.tiny_pipelines import save_tiny_pipeline

    return save_tiny_pipeline("sdxl", tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_sana_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SANA pipeline saved to disk once per session (evaluation only)."""
    from flowmodels.tiny_pipelines import save_tiny_pipeline

    return save_tiny_pipeline("sana", tmp_path_factory.mktemp("models") / "tiny-sana")


@pytest.fixture()
def tiny_model(tiny_sd3_dir: Path):  # noqa: ANN201
    """The tiny SD3 loaded through the real loader (fresh per test, so adapters never leak)."""
    from flowmodels.models import load_model

    return load_model(str(tiny_sd3_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory) -> Iterator[Path]:
    """FLOW_OPD_HOME in a temp folder, with the tiny SD3 built once (what `model: tiny` resolves to)."""
    home = tmp_path_factory.mktemp("flow_opd_home")
    old = os.environ.get("FLOW_OPD_HOME")
    os.environ["FLOW_OPD_HOME"] = str(home)
    from flowmodels.tiny import default_tiny_dir, save_tiny_sd3

    save_tiny_sd3(default_tiny_dir())
    yield home
    if old is None:
        os.environ.pop("FLOW_OPD_HOME", None)
    else:
        os.environ["FLOW_OPD_HOME"] = old
