"""`harness.evaluate` on the tiny SD3 model with weight-free fake scorers: rows, seeds, resume, errors."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

import harness
from harness.evaluation import evaluate
from harness.plan import make_batches, plan_benchmarks
from harness.protocol import EvalProtocol, scorer_input
from harness.worker import ScorerOutputError
from results.store import Store
from scorers.base import Scores
from tests.support.fakes import FakeScorer, pixel_value, register

TINY = EvalProtocol(steps=3, height=64, width=64)


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    import scorers

    monkeypatch.setattr(scorers, "SCORERS", dict(scorers.SCORERS))
    register()


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # on 2 shared cores, torch's 2 OpenMP threads spin against other processes: 1 thread is ~10x faster here
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def keys(store: Store) -> list[tuple[Any, ...]]:
    with store.session() as con:
        return con.execute(
            "SELECT benchmark, prompt_id, image_index, seed, scorer FROM sample_scores ORDER BY ALL"
        ).fetchall()


def test_evaluate_writes_every_row_once_with_the_seeds_rule_and_resumes(
    tiny_model: Any, tmp_path: Path
) -> None:
    store = Store(tmp_path / "s.duckdb")
    prompts = tmp_path / "mine.txt"
    prompts.write_text("a red cube\na blue ball\n")
    first = evaluate(
        tiny_model, ["geneval"], run_id="r", store=store, protocol=TINY, scorers=["fake"],
        prompts=prompts, limit=3, batch_size=4, progress=False,
    )  # fmt: skip
    # geneval: 3 prompts x 4 images; mine: 2 prompts x 1 image (--scorers applies to both)
    assert (first.images_generated, first.scores_added, first.images_skipped) == (14, 14, 0)
    want = [
        ("geneval", f"geneval/{i:05d}", j, 42 + i * 4 + j, "fake")
        for i in range(3)
        for j in range(4)
    ]
    want += [("mine", f"mine/{i:05d}", 0, 42 + i, "fake") for i in range(2)]
    assert keys(store) == sorted(want)

    rows = store.sample_scores("r", 0, "geneval")
    for r in rows:  # the value is the fake metric of exactly the stored pixels
        png = store.read_image(r["image_path"], r["image_sha256"])
        assert r["value"] == pixel_value(Image.open(io.BytesIO(png)))
        assert r["grp"] == "single_object" and r["reward"] == pytest.approx(r["value"] / 2)
    assert len({r["image_sha256"] for r in rows}) == 12  # 12 seeds, 12 different images
    run = store.get_run("r")
    assert run is not None and run.protocol["generation"]["steps"] == 3
    assert run.protocol["benchmarks"]["geneval"]["images_per_prompt"] == 4
    assert run.protocol["benchmarks"]["mine"]["version"].startswith("file-")
    assert run.provenance["world_size"] == 1 and run.provenance["scorer_versions"] == {"fake": "1"}

    again = evaluate(
        tiny_model, ["geneval"], run_id="r", store=store, protocol=TINY, scorers=["fake"],
        prompts=prompts, limit=3, progress=False,
    )  # fmt: skip
    assert (again.images_generated, again.scores_added, again.images_skipped) == (0, 0, 14)

    # a new scorer on an existing run: only scores are computed, from the stored images
    more = evaluate(
        tiny_model, ["geneval"], run_id="r", store=store, protocol=TINY, scorers=["fake", "fake2"],
        limit=4, progress=False,
    )  # fmt: skip
    assert (more.images_generated, more.images_rescored, more.scores_added) == (4, 12, 20)
    assert store.count_rows() == {"runs": 1, "samples": 18, "scores": 34}
    assert len(store.get_run("r").provenance["sessions"]) == 3  # type: ignore[union-attr]


class DiesOnSecondBatch(FakeScorer):
    def __call__(self, images, prompts, meta=None):  # type: ignore[no-untyped-def]
        if self.calls == 1:
            raise RuntimeError("simulated crash")
        return super().__call__(images, prompts, meta)


def test_a_crash_mid_run_leaves_whole_batches_and_the_rerun_completes_exactly(
    tiny_model: Any, tmp_path: Path
) -> None:
    store = Store(tmp_path / "s.duckdb")
    kw: dict[str, Any] = dict(
        run_id="r", store=store, protocol=TINY, limit=5, batch_size=2, progress=False
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(
            tiny_model,
            ["ocr"],
            scorers=["fake"],
            scorer_objects={"fake": DiesOnSecondBatch()},
            **kw,
        )
    assert store.count_rows()["samples"] == 2  # the first batch committed, the second never did
    done = evaluate(tiny_model, ["ocr"], scorers=["fake"], **kw)
    assert (done.images_generated, done.images_skipped) == (3, 2)
    assert keys(store) == [("ocr", f"ocr/{i:05d}", 0, 42 + i, "fake") for i in range(5)]


def test_bad_scorer_output_is_refused(tiny_model: Any, tmp_path: Path) -> None:
    class NaNScorer(FakeScorer):
        def __call__(self, images, prompts, meta=None):  # type: ignore[no-untyped-def]
            return Scores([float("nan")] * len(images), [0.0] * len(images))

    class ShortScorer(FakeScorer):
        def __call__(self, images, prompts, meta=None):  # type: ignore[no-untyped-def]
            return Scores([0.5], [0.5])

    store = Store(tmp_path / "s.duckdb")
    kw: dict[str, Any] = dict(
        run_id="r", store=store, protocol=TINY, limit=2, progress=False, scorers=["fake"]
    )
    with pytest.raises(ScorerOutputError, match="non-finite"):
        evaluate(tiny_model, ["ocr"], scorer_objects={"fake": NaNScorer()}, **kw)
    with pytest.raises(ScorerOutputError, match="1 values for 2 images"):
        evaluate(tiny_model, ["ocr"], scorer_objects={"fake": ShortScorer()}, **kw)
    assert store.count_rows()["scores"] == 0


def test_in_loop_evaluation_of_a_loaded_model_records_the_step(
    tiny_model: Any, tmp_path: Path
) -> None:
    store = Store(tmp_path / "s.duckdb")
    res = harness.evaluate(
        tiny_model, "ocr", run_id="grpo-ocr", step=50, store=store, protocol=TINY, scorers=["fake"],
        limit=2, progress=False,
    )  # fmt: skip
    assert res.step == 50 and {r["step"] for r in store.sample_scores("grpo-ocr")} == {50}
    assert store.history("grpo-ocr")[0]["step"] == 50
    with pytest.raises(ValueError, match="needs run_id"):
        evaluate(tiny_model, "ocr", store=store, protocol=TINY, scorers=["fake"], limit=1)


def test_a_run_is_only_resumed_under_its_own_protocol(tiny_model: Any, tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    kw: dict[str, Any] = dict(run_id="r", store=store, scorers=["fake"], limit=1, progress=False)
    evaluate(tiny_model, "ocr", protocol=TINY, **kw)
    with pytest.raises(ValueError, match=r"another protocol \(cfg: 4.5 -> 2.0\)"):
        evaluate(tiny_model, "ocr", protocol=TINY.with_overrides(cfg=2.0), **kw)
    with pytest.raises(ValueError, match=r"images_per_prompt: None -> 2"):
        evaluate(tiny_model, "ocr", protocol=TINY.with_overrides(images_per_prompt=2), run_id="r",
                 store=store, scorers=["fake"], limit=1, progress=False)  # fmt: skip


def test_unknown_names_fail_before_any_work_with_suggestions(tmp_path: Path) -> None:
    from harness.benchmarks import UnknownBenchmarkError
    from scorers import UnknownScorerError

    with pytest.raises(UnknownBenchmarkError, match=r"'genevel' \(did you mean geneval\b"):
        evaluate("no/such-model", ["genevel"], store=tmp_path / "s.duckdb")
    with pytest.raises(UnknownScorerError, match=r"'fak' \(did you mean fake"):
        evaluate("no/such-model", ["ocr"], scorers=["fak"], store=tmp_path / "s.duckdb")
    from flowmodels.models import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="not available here"):
        evaluate(str(tmp_path / "nope"), ["ocr"], scorers=["fake"], store=tmp_path / "s.duckdb")
    assert not (tmp_path / "s.duckdb").exists()  # nothing was created
    with pytest.raises(ValueError, match="needs --scorers"):
        plan_benchmarks([], prompts=tmp_path / "p.txt")


def test_plans_and_batches() -> None:
    plans = plan_benchmarks(["main", "drawbench"], limit=2)
    assert [(p.name, p.scorers, p.images_per_prompt, p.group_by) for p in plans] == [
        ("geneval", ("geneval",), 4, "tag"),
        ("ocr", ("ocr",), 1, None),
        (
            "drawbench",
            ("deqa", "imagereward", "aesthetic", "unifiedreward", "hps", "pickscore", "judge"),
            1,
            None,
        ),
        ("pickscore", ("pickscore",), 1, None),
    ]
    assert all(len(p.items) == 2 for p in plans) and plans[0].total_prompts == 553
    from harness.plan import Job

    item = plans[0].items[0]
    jobs = [Job("a", item, j, j, ("x",)) for j in range(5)] + [
        Job("a", item, 9, 9, ("x",), ("s", "p"))
    ]
    jobs += [Job("b", item, j, j, ("x",)) for j in range(2)]
    assert [len(b) for b in make_batches(jobs, 2)] == [2, 2, 1, 1, 2]


def test_scorer_input_encodings() -> None:
    import numpy as np

    from harness.protocol import encode_png

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    png = encode_png(img)
    assert np.array_equal(np.asarray(scorer_input(png, "png")), np.asarray(img))
    jpeg = np.asarray(scorer_input(png, "jpeg75")).astype(int)
    assert jpeg.shape == (32, 32, 3) and 0 < np.abs(jpeg - np.asarray(img)).mean() < 80
    with pytest.raises(ValueError, match="unknown image encoding"):
        EvalProtocol(image_encoding="webp")


def test_an_evaluation_opens_the_store_once_for_all_its_batches(
    tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import duckdb

    from results import connections

    store = Store(tmp_path / "s.duckdb")
    opened: list[object] = []
    real = duckdb.connect

    def counting(*args: object, **kw: object) -> duckdb.DuckDBPyConnection:
        opened.append(args[0])
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(connections.duckdb, "connect", counting)
    res = evaluate(
        tiny_model, ["ocr"], run_id="r", store=store, protocol=TINY, scorers=["fake"], limit=6,
        batch_size=1, progress=False,
    )  # fmt: skip
    assert res.images_generated == 6 and store.count_rows()["samples"] == 6
    assert len(opened) == 2  # planning and six batches on one connection, then count_rows' own
