"""Benchmark data fetched at use time rather than shipped: where it lives, its pinned source and checksum.

Some prompt sets have licences that keep them out of this package (GenEval 2: CC BY-NC 4.0). ``harness fetch
NAME`` downloads such a file from its pinned commit, checks its sha256 and stores it under the data folder:
``$FLOW_OPD_DATA`` if set, else ``$FLOW_OPD_HOME/data`` (default ``~/.cache/flow-opd/data``). A benchmark reading
a missing file fails with one line saying to run ``harness fetch NAME``.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from flowbase.errors import InputError, MissingError, UserError


@dataclass(frozen=True)
class FetchedData:
    """One downloadable data file: its name under the data folder, pinned URL, checksum and licence."""

    name: str  # the benchmark it belongs to, and `harness fetch NAME`
    relpath: str  # under the data folder
    url: str  # pinned to a commit
    sha256: str
    licence: str
    prompts: int  # lines in the file (shown by `harness ls benchmarks` before it is fetched)


GENEVAL2_COMMIT = "a6e82d2289e8d418f27f0adee77908b07060eea3"
DATASETS: dict[str, FetchedData] = {
    "geneval2": FetchedData(
        "geneval2",
        "geneval2/geneval2_data.jsonl",
        "https://raw.githubusercontent.com/facebookresearch/GenEval2/"
        f"{GENEVAL2_COMMIT}/geneval2_data.jsonl",
        "09233adbc9f877fba205f1a20efa4a8640e7e62a91dfd55893562bed8a928e43",
        "CC BY-NC 4.0 (Meta Platforms, Inc.): non-commercial use, with attribution",
        800,
    ),
}


class DataUnavailableError(UserError, RuntimeError):
    """A data file could not be downloaded or does not match its checksum."""


def data_dir() -> Path:
    """The folder fetched benchmark data lives in (``$FLOW_OPD_DATA``, else ``$FLOW_OPD_HOME/data``)."""
    if os.environ.get("FLOW_OPD_DATA"):
        return Path(os.environ["FLOW_OPD_DATA"]).expanduser()
    home = Path(os.environ.get("FLOW_OPD_HOME", Path.home() / ".cache" / "flow-opd")).expanduser()
    return home / "data"


def data_path(name: str) -> Path:
    """Where dataset ``name``'s file is (or will be once fetched)."""
    return data_dir() / DATASETS[name].relpath


def require(name: str) -> Path:
    """Dataset ``name``'s file, or one line saying how to get it."""
    path = data_path(name)
    if not path.is_file():
        raise MissingError(
            f"{name} data is not on this machine ({path}); run `harness fetch {name}` "
            f"(licence: {DATASETS[name].licence})"
        )
    return path


def fetch_data(name: str, *, timeout: float = 60.0) -> Path:
    """Download dataset ``name`` from its pinned URL, check its sha256 and store it (atomically); a file already
    there with the right checksum is kept."""
    spec = DATASETS[name]
    path = data_path(name)
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256:
        return path
    try:
        with urllib.request.urlopen(spec.url, timeout=timeout) as answer:  # noqa: S310 - pinned https URL
            data = answer.read()
    except (urllib.error.URLError, OSError) as e:
        raise DataUnavailableError(
            f"cannot download {name} from {spec.url} ({e}); run `harness fetch {name}` where GitHub is "
            f"reachable and copy {path} here"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise InputError(f"{name}: downloaded file has sha256 {digest}, expected {spec.sha256}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path
