"""A damaged store file (cut short, random bytes in a table) is refused with one line at open (a read-only open
checks the size, an open for writing reads every block) or at the read that meets the damage, and left untouched; `Store.check` also finds changed and missing image files."""

from __future__ import annotations

from pathlib import Path

import pytest

from results.store import Store, StoreError
from tests.support.damage import digest, scribble, truncate_half
from tests.support.service_data import add_mini_run


@pytest.fixture()
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "s.duckdb"
    add_mini_run(Store(path), "a", prompts=60, images_per_prompt=2)
    add_mini_run(Store(path), "b", prompts=60, images_per_prompt=2, skill=0.5)
    return path


@pytest.mark.parametrize("damage", [truncate_half, scribble], ids=["truncated", "random-bytes"])
@pytest.mark.parametrize("read_only", [True, False], ids=["read", "write"])
def test_a_damaged_store_is_refused_in_one_line_and_left_as_it_is(
    store_path: Path, damage: object, read_only: bool
) -> None:
    damage(store_path)  # type: ignore[operator]
    before = digest(store_path)
    with pytest.raises(StoreError) as e:
        store = Store(store_path, read_only=read_only)
        # a read-only open checks the size only: random bytes in a table are met by the read that needs them
        assert read_only and damage is scribble
        store.sample_scores("a")
    msg = str(e.value)
    assert "\n" not in msg and f"store {store_path} is damaged" in msg
    assert "Restore s.duckdb from a backup" in msg and "harness store check" in msg
    assert digest(store_path) == before
    assert not Path(f"{store_path}.wal").exists()


def test_check_reads_every_table_and_hashes_every_image(store_path: Path) -> None:
    store = Store(store_path, read_only=True)
    found = store.check()
    assert found["problems"] == []
    assert found["rows"]["runs"] == 2 and found["rows"]["samples"] == found["rows"]["scores"] == 480
    assert found["images"] == len(list((store_path.parent / "images").glob("*/*.png")))
    files = sorted((store_path.parent / "images").glob("*/*.png"))
    files[0].write_bytes(files[0].read_bytes()[:-1] + b"\x00")
    files[1].unlink()
    problems = store.check()["problems"]
    assert len(problems) == 2
    assert any("changed" in p and files[0].name in p for p in problems)
    assert any("missing" in p and files[1].name in p for p in problems)
    assert store.check(images=False)["problems"] == []
