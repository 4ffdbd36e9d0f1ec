"""Prompt datasets with task tags and the per-epoch plan shared by every rank."""

from __future__ import annotations

import json

import pytest

from harness.benchmarks import load_prompt_file
from trainer.config import ConfigError
from trainer.data import load_datasets, partition_cycle, plan_epoch, shard


def test_txt_and_jsonl_prompt_files(tmp_path):
    (tmp_path / "a.txt").write_text("first prompt\n\n  second prompt  \n")
    rec = {
        "tag": "counting",
        "include": [{"class": "cat", "count": 2}],
        "prompt": "a photo of two cats",
    }
    (tmp_path / "b.jsonl").write_text(json.dumps(rec) + "\n")
    txt = load_prompt_file(tmp_path / "a.txt", task="ocr")
    assert [(i.prompt, i.task, i.index, i.id) for i in txt] == [
        ("first prompt", "ocr", 0, "a/00000"),
        ("second prompt", "ocr", 1, "a/00001"),  # blank lines are skipped, not counted
    ]
    (item,) = load_prompt_file(tmp_path / "b.jsonl", task="geneval")
    assert item.prompt == "a photo of two cats" and item.meta["tag"] == "counting"


def test_bad_prompt_files_are_clear(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "no prompt field"}\n')
    with pytest.raises(
        ConfigError, match='datasets.x: .*bad.jsonl:1: every line needs a non-empty "prompt"'
    ):
        load_datasets({"x": str(tmp_path / "bad.jsonl")})
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ConfigError, match="holds no prompts"):
        load_datasets({"x": str(tmp_path / "empty.txt")})
    with pytest.raises(ConfigError, match="datasets.x: .*shipped sets are under harness/prompts"):
        load_datasets({"x": str(tmp_path / "missing.txt")})


def test_shipped_prompt_sets_resolve_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pools = load_datasets(
        {
            "geneval": "harness/prompts/flow_grpo_geneval/test_metadata.jsonl",
            "ocr": "harness/prompts/flow_grpo_ocr/test.txt",
        },
        limit=5,
    )
    assert len(pools["geneval"]) == 5 and pools["geneval"][0].meta["tag"]
    assert all(it.task == "ocr" and '"' in it.prompt for it in pools["ocr"])
    generated = load_datasets({"pickscore": "harness/prompts/pickscore_train/train.txt"}, limit=3)
    assert len(generated["pickscore"]) == 3  # a generated training set, built on first use


def _pools():
    return {
        "geneval": [_item(f"g{i}", "geneval", i) for i in range(10)],
        "ocr": [_item(f"o{i}", "ocr", i) for i in range(10)],
        "pickscore": [_item(f"p{i}", "pickscore", i) for i in range(10)],
    }


def _item(prompt, task, i):
    from harness.benchmarks import PromptItem

    return PromptItem(f"{task}/{i}", i, prompt, task=task)


def test_epoch_plan_is_grouped_deterministic_and_seeded_per_image():
    pools = _pools()
    plan = plan_epoch(pools, 3, groups=4, group_size=3, seed=42)
    assert plan == plan_epoch(pools, 3, groups=4, group_size=3, seed=42)
    assert plan.items != plan_epoch(pools, 4, groups=4, group_size=3, seed=42).items
    groups = [plan.items[i : i + 3] for i in range(0, 12, 3)]
    assert all(len({it.prompt for it in g}) == 1 for g in groups)  # each group is one prompt
    assert len({g[0].prompt for g in groups}) == 4  # without replacement
    assert len(set(plan.seeds)) == 12  # every image its own seed


def test_grpo_mix_partitions_alternate_3_1_1():
    assert partition_cycle({"geneval": 3, "ocr": 1, "pickscore": 1}) == ["geneval"] * 3 + [
        "ocr",
        "pickscore",
    ]
    pools = _pools()
    tasks = [
        plan_epoch(
            pools,
            e,
            groups=2,
            group_size=2,
            seed=0,
            partitions={"geneval": 3, "ocr": 1, "pickscore": 1},
        )
        for e in range(10)
    ]
    assert [p.task for p in tasks] == (["geneval"] * 3 + ["ocr", "pickscore"]) * 2
    assert all({it.task for it in p.items} == {p.task} for p in tasks)


def test_shard_is_contiguous_and_even():
    assert [shard(12, r, 3) for r in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 12)]
    with pytest.raises(ValueError, match="do not split evenly"):
        shard(10, 0, 3)


def test_mix_counts_split_groups_by_largest_remainder():
    from trainer.data import mix_counts

    assert mix_counts({"geneval": 3, "ocr": 1}, 32) == {"geneval": 24, "ocr": 8}
    # 10 * 2/3 = 6.67, 10 * 1/3 = 3.33: the larger remainder takes the leftover group
    assert mix_counts({"geneval": 2, "ocr": 1}, 10) == {"geneval": 7, "ocr": 3}
    # equal remainders (1.5 each): the task named first takes it, and the counts still add up
    assert mix_counts({"a": 1, "b": 1}, 3) == {"a": 2, "b": 1}
    assert mix_counts({"a": 1, "b": 0}, 5) == {"a": 5, "b": 0}
    for groups in range(1, 40):
        assert sum(mix_counts({"a": 5, "b": 3, "c": 1}, groups).values()) == groups
    with pytest.raises(ValueError, match="0 groups"):
        mix_counts({"a": 0}, 4)
    with pytest.raises(ValueError, match=">= 0"):
        mix_counts({"a": 2, "b": -1}, 4)


def test_task_mix_gives_every_epoch_each_tasks_share_mixed_together():
    pools = _pools()
    for e in range(5):
        plan = plan_epoch(
            pools, e, groups=4, group_size=2, seed=7, task_mix={"geneval": 3, "ocr": 1}
        )
        tasks = [plan.items[i].task for i in range(0, 8, 2)]
        assert sorted(tasks) == ["geneval"] * 3 + ["ocr"]
        assert all(plan.items[i] == plan.items[i + 1] for i in range(0, 8, 2))  # groups stay whole
        assert plan == plan_epoch(
            pools, e, groups=4, group_size=2, seed=7, task_mix={"geneval": 3, "ocr": 1}
        )
    # the OCR group is not always last: groups are shuffled together, so batches mix tasks
    positions = {
        [
            it.task
            for it in plan_epoch(
                pools, e, groups=4, group_size=1, seed=7, task_mix={"geneval": 3, "ocr": 1}
            ).items
        ].index("ocr")
        for e in range(20)
    }
    assert len(positions) > 1
    with pytest.raises(KeyError, match="no dataset"):
        plan_epoch(pools, 0, groups=4, group_size=1, seed=0, task_mix={"geneval": 1, "t2i": 1})
    with pytest.raises(ValueError, match="not both"):
        plan_epoch(
            pools, 0, groups=4, group_size=1, seed=0, task_mix={"geneval": 1}, partitions={"ocr": 1}
        )
