"""Writes that fail leave nothing: a run record written with its rows goes in their transaction, and run ids the
service could not address are refused."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from flowbase.errors import InputError
from results.store import RunRecord, SampleRow, Store


def _row(step: int) -> SampleRow:
    return SampleRow("r", step, "b", "1", "b/0", 0, "p", {}, None, 0, 1, "0" * 64, "00/x.png")


def test_a_failed_write_leaves_no_run_record(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    run = RunRecord("r", "m", None, {}, {})
    with pytest.raises(duckdb.Error):  # step past the INTEGER column
        store.add_samples([_row(2**31)], [], run=run)
    assert store.get_run("r") is None and store.count_rows() == {
        "runs": 0,
        "samples": 0,
        "scores": 0,
    }
    store.add_samples([_row(3)], [], run=run)
    assert store.get_run("r") is not None and store.count_rows()["samples"] == 1


@pytest.mark.parametrize("run_id", ["x/samples", "paper/seed0/samples", "a/samples/", " "])
def test_run_ids_the_service_cannot_address_are_refused(tmp_path: Path, run_id: str) -> None:
    store = Store(tmp_path / "s.duckdb")
    with pytest.raises(InputError):
        store.add_run(RunRecord(run_id, "m", None, {}, {}))
    assert store.run_ids() == []


def test_numbers_of_any_python_or_numpy_type_are_stored_as_numbers() -> None:
    import numpy as np

    from tests.support.runs import put

    store = Store(":memory:")  # one batch goes in as typed columns: mixed types must not break it
    put(store, "a", "ocr", "ocr", [1, 0.5, True, np.float32(0.25), np.int64(2)])
    (row,) = store.benchmark_scores()
    assert row["n_images"] == 5 and row["image_mean"] == (1 + 0.5 + 1 + 0.25 + 2) / 5
