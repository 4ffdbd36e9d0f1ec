"""Gap-following routing: the shares' formula (by hand and as properties), its refusals, and a Flow-OPD run whose
epochs follow the shares the formula gives from the logged probe values."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.training import QUIET, synthetic_lora
from trainer import epoch, opd
from trainer.config import ConfigError, load
from trainer.data import mix_counts
from trainer.metrics import read_metrics
from trainer.routing import missing_share, shares


def test_missing_share_by_hand() -> None:
    assert missing_share(0.40, 0.50, 0.45) == pytest.approx(0.5)
    assert missing_share(0.40, 0.50, 0.40) == pytest.approx(1.0)
    assert missing_share(0.40, 0.50, 0.60) == 0.0  # above the teacher: nothing missing
    assert missing_share(0.40, 0.50, 0.30) == 1.0  # below the base: all of it, no more
    assert missing_share(0.50, 0.50, 0.10) == 0.0  # a teacher without a gain: nothing to chase
    assert missing_share(0.50, 0.45, 0.10) == 0.0


def test_shares_by_hand() -> None:
    prior = {"geneval": 7.0, "ocr": 1.0}
    # both tasks miss half: the prior's split of what the floors leave (0.8 * 7/8, 0.8 * 1/8)
    assert shares(prior, {"geneval": 0.5, "ocr": 0.5}, 0.1) == pytest.approx(
        {"geneval": 0.8, "ocr": 0.2}
    )
    # GenEval holds all of its teacher's gain: it keeps its floor, OCR takes the rest
    assert shares(prior, {"geneval": 0.0, "ocr": 0.4}, 0.1) == pytest.approx(
        {"geneval": 0.1, "ocr": 0.9}
    )
    # 7 x 0.2 against 1 x 0.6: 1.4 / 2.0 and 0.6 / 2.0 of the 0.8
    assert shares(prior, {"geneval": 0.2, "ocr": 0.6}, 0.1) == pytest.approx(
        {"geneval": 0.1 + 0.8 * 0.7, "ocr": 0.1 + 0.8 * 0.3}
    )
    # nothing missing anywhere: the prior's own shares, floors included
    assert shares(prior, {"geneval": 0.0, "ocr": 0.0}, 0.1) == pytest.approx(
        {"geneval": 0.8, "ocr": 0.2}
    )


def test_shares_refuse_what_cannot_be_split() -> None:
    with pytest.raises(ValueError, match="below 1/2"):
        shares({"a": 1.0, "b": 1.0}, {"a": 0.5, "b": 0.5}, 0.5)
    with pytest.raises(ValueError, match="tasks"):
        shares({"a": 1.0}, {"b": 0.5}, 0.1)
    with pytest.raises(ValueError, match="not all 0"):
        shares({"a": 0.0, "b": 0.0}, {"a": 0.5, "b": 0.5}, 0.1)


tasks = st.dictionaries(
    st.sampled_from(["geneval", "ocr", "quality", "pickscore"]),
    st.tuples(st.floats(0.01, 10.0), st.floats(0.0, 1.0)),
    min_size=1,
)


@given(tasks, st.floats(0.0, 0.24))
def test_shares_add_up_and_respect_the_floor(got: dict, floor: float) -> None:
    prior = {t: p for t, (p, _) in got.items()}
    missing = {t: m for t, (_, m) in got.items()}
    out = shares(prior, missing, floor)
    assert sum(out.values()) == pytest.approx(1.0)
    assert all(v >= floor - 1e-12 for v in out.values())


@given(tasks, st.floats(0.0, 0.24), st.floats(0.0, 1.0))
def test_a_task_that_misses_more_never_gets_less(got: dict, floor: float, more: float) -> None:
    prior = {t: p for t, (p, _) in got.items()}
    missing = {t: m for t, (_, m) in got.items()}
    task = sorted(got)[0]
    before = shares(prior, missing, floor)[task]
    raised = {**missing, task: max(missing[task], more)}
    assert shares(prior, raised, floor)[task] >= before - 1e-12


def test_gap_routing_needs_a_scorer_per_task_and_a_floor_that_fits() -> None:
    base = [
        "datasets={geneval: harness/prompts/geneval_train/train_metadata.jsonl, "
        "ocr: harness/prompts/ocr_train/train.txt}",
        "teachers={geneval: a, ocr: b}",
        "routing.mode=gap",
    ]
    with pytest.raises(ConfigError, match=r"routing.scorers a scorer for \['ocr'\]"):
        load(opd.Config, None, [*base, "routing.scorers={geneval: brightness}"])
    with pytest.raises(ConfigError, match="below 1/2"):
        load(
            opd.Config,
            None,
            [*base, "routing.scorers={geneval: brightness, ocr: brightness}", "routing.floor=0.5"],
        )
    with pytest.raises(ConfigError, match="routing.mode=.greedy. must be one of"):
        load(opd.Config, None, [*base[:2], "routing.mode=greedy"])


def test_flow_opd_epochs_follow_the_shares_of_the_logged_probe(
    tiny_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teachers = {
        "geneval": synthetic_lora(tmp_path / "t_geneval", seed=1, scale=0.5),
        "ocr": synthetic_lora(tmp_path / "t_ocr", seed=2, scale=0.5),
    }
    planned: list[dict[str, int]] = []
    real = epoch.sample_epoch

    def recorded(*args, **kw):  # type: ignore[no-untyped-def]
        planned.append(mix_counts(kw["task_mix"], 8))
        return real(*args, **kw)

    monkeypatch.setattr(epoch, "sample_epoch", recorded)
    out = tmp_path / "opd"
    opd.main(
        load(
            opd.Config,
            None,
            [
                *QUIET,
                "model=tiny",
                "datasets={geneval: harness/prompts/geneval_train/train_metadata.jsonl, "
                "ocr: harness/prompts/ocr_train/train.txt}",
                "teachers={" + ", ".join(f"{k}: {v}" for k, v in teachers.items()) + "}",
                "task_mix={geneval: 3, ocr: 1}",
                "routing.mode=gap",
                "routing.scorers={geneval: brightness, ocr: brightness}",
                "routing.probe_prompts=2",
                "routing.floor=0.1",
                "sample.steps=3",
                "sample.size=32",
                "sample.group_size=2",
                "sample.groups_per_epoch=8",
                "sample.batch_size=8",
                "sample.steps_per_epoch=1",
                "lora.rank=4",
                "lora.alpha=8",
                "run.max_steps=2",
                "run.ema=false",
                "run.mixed_precision=no",
                f"run.out={out}",
            ],
        )
    )
    rows = read_metrics(out)
    assert len(rows) == 2 == len(planned)
    prior = {"geneval": 3.0, "ocr": 1.0}
    for row, plan in zip(rows, planned, strict=True):
        missing = {
            t: missing_share(
                row[f"routing/base_{t}"], row[f"routing/teacher_{t}"], row[f"routing/probe_{t}"]
            )
            for t in prior
        }
        for t in prior:
            assert row[f"routing/missing_{t}"] == pytest.approx(missing[t])
        want = shares(prior, missing, 0.1)
        for t in prior:
            assert row[f"routing/share_{t}"] == pytest.approx(want[t])
        assert plan == mix_counts(want, 8)
    # the base and the teachers are probed once: the same values on every epoch; the teachers differ from the base
    for t in prior:
        assert rows[0][f"routing/base_{t}"] == rows[1][f"routing/base_{t}"]
        assert rows[0][f"routing/teacher_{t}"] != rows[0][f"routing/base_{t}"]
    # the student moved between the epochs, so its probe was taken again
    assert rows[0]["routing/probe_geneval"] != rows[1]["routing/probe_geneval"]
