"""trainer.jobs: real processes side by side, in dependency order, one at a time on a shared resource."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from trainer.jobs import Job, run_jobs


def _py(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def _record(out: Path, name: str, *, wait_for: str | None = None, sleep: float = 0.0) -> str:
    """Code that writes NAME.start, optionally waits (up to 30 s) for another job's start file, sleeps, and writes
    NAME.end with its thread settings; each file holds a monotonic-clock time."""
    wait = (
        f"deadline = time.monotonic() + 30\n"
        f"while not (out / '{wait_for}.start').exists():\n"
        f"    if time.monotonic() > deadline: sys.exit('{name} never saw {wait_for} start')\n"
        f"    time.sleep(0.02)\n"
        if wait_for
        else ""
    )
    return (
        "import json, os, sys, time, pathlib\n"
        f"out = pathlib.Path({str(out)!r})\n"
        f"(out / '{name}.start').write_text(str(time.monotonic()))\n"
        f"{wait}"
        f"time.sleep({sleep})\n"
        f"(out / '{name}.end').write_text(json.dumps([time.monotonic(), "
        "os.environ['OMP_NUM_THREADS'], os.environ['MKL_NUM_THREADS']]))\n"
    )


def _times(out: Path, name: str) -> tuple[float, float]:
    return float((out / f"{name}.start").read_text()), json.loads(
        (out / f"{name}.end").read_text()
    )[0]


def _threads(out: Path, name: str) -> str:
    return json.loads((out / f"{name}.end").read_text())[1]


def test_independent_jobs_run_at_once_and_a_dependent_one_after_both(tmp_path) -> None:
    # a and b each wait until the other has started: run one after the other, the first would exit 1
    jobs = [
        Job("a", _py(_record(tmp_path, "a", wait_for="b")), tmp_path / "a.log"),
        Job("b", _py(_record(tmp_path, "b", wait_for="a")), tmp_path / "b.log"),
        Job("c", _py(_record(tmp_path, "c")), tmp_path / "c.log", after=("a", "b")),
    ]
    ran = run_jobs(jobs, slots=2, threads=4, poll=0.01)
    assert set(ran) == {"a", "b", "c"}
    c_start = _times(tmp_path, "c")[0]
    assert c_start >= max(_times(tmp_path, "a")[1], _times(tmp_path, "b")[1])
    # two at once share the threads; c starts alone and gets them all
    assert (_threads(tmp_path, "a"), _threads(tmp_path, "b"), _threads(tmp_path, "c")) == (
        "2",
        "2",
        "4",
    )
    assert ran["c"].threads == 4 and ran["a"].threads == 2
    assert ran["c"].start >= ran["a"].start + ran["a"].seconds - 0.05


def test_never_more_than_the_slots_and_an_exclusive_resource_in_turn(tmp_path) -> None:
    jobs = [
        Job(
            f"s{i}",
            _py(_record(tmp_path, f"s{i}", sleep=0.3)),
            tmp_path / f"s{i}.log",
            exclusive="store",
        )
        for i in range(3)
    ] + [
        Job(f"t{i}", _py(_record(tmp_path, f"t{i}", sleep=0.3)), tmp_path / f"t{i}.log")
        for i in range(3)
    ]
    run_jobs(jobs, slots=2, threads=2, poll=0.01)
    spans = {j.name: _times(tmp_path, j.name) for j in jobs}

    def overlap(a: str, b: str) -> bool:
        return spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]

    for a in spans:
        at_once = [b for b in spans if b != a and overlap(a, b)]
        # with two slots a job shares its time with other jobs, but never with two at the same moment
        assert all(not overlap(b, c) for b in at_once for c in at_once if b < c), (a, at_once)
    stores = ["s0", "s1", "s2"]
    assert not any(overlap(a, b) for a in stores for b in stores if a < b)


def test_priority_picks_among_ready_jobs(tmp_path) -> None:
    jobs = [
        Job("low", _py(_record(tmp_path, "low")), tmp_path / "low.log"),
        Job("high", _py(_record(tmp_path, "high")), tmp_path / "high.log", priority=5),
    ]
    ran = run_jobs(jobs, slots=1, threads=1, poll=0.01)
    assert list(ran) == ["high", "low"]
    assert _times(tmp_path, "high")[1] <= _times(tmp_path, "low")[0]


def test_before_runs_in_this_process_just_before_the_launch(tmp_path) -> None:
    seen: list[bool] = []
    jobs = [
        Job("a", _py(_record(tmp_path, "a")), tmp_path / "a.log"),
        Job(
            "b",
            _py(_record(tmp_path, "b")),
            tmp_path / "b.log",
            after=("a",),
            before=lambda: seen.append((tmp_path / "a.end").exists()),
        ),
    ]
    run_jobs(jobs, slots=2, threads=2, poll=0.01)
    assert seen == [True]


def test_a_failed_job_stops_what_waits_for_it_and_keeps_what_runs(tmp_path) -> None:
    fail = _py("import sys, time; time.sleep(0.2); print('bad config: no such key'); sys.exit(3)")
    jobs = [
        Job("broken", fail, tmp_path / "logs" / "broken.log"),
        Job("busy", _py(_record(tmp_path, "busy", sleep=1.0)), tmp_path / "busy.log"),
        Job("after", _py(_record(tmp_path, "after")), tmp_path / "after.log", after=("broken",)),
        Job("later", _py(_record(tmp_path, "later")), tmp_path / "later.log"),
    ]
    with pytest.raises(RuntimeError) as err:
        run_jobs(jobs, slots=2, threads=2, poll=0.01)
    msg = str(err.value)
    assert "1 job(s) failed: broken" in msg and "bad config: no such key" in msg
    assert "not started: after, later" in msg
    assert str(tmp_path / "logs" / "broken.log") in msg
    assert (tmp_path / "busy.end").exists()  # the running job finished its work
    assert not (tmp_path / "after.start").exists() and not (tmp_path / "later.start").exists()


def test_bad_job_lists_are_refused_before_anything_runs(tmp_path) -> None:
    a = Job("a", _py(_record(tmp_path, "a")), tmp_path / "a.log")
    with pytest.raises(ValueError, match=r"job a waits for unknown jobs \['nope'\]"):
        run_jobs([Job("a", a.cmd, a.log, after=("nope",))])
    with pytest.raises(ValueError, match=r"unique: \['a'\]"):
        run_jobs([a, a])
    with pytest.raises(ValueError, match=r"wait for each other"):
        run_jobs(
            [
                Job("x", a.cmd, a.log, after=("y",)),
                Job("y", a.cmd, a.log, after=("x",)),
            ]
        )
    with pytest.raises(ValueError, match="--jobs must be >= 1"):
        run_jobs([a], slots=0)
    with pytest.raises(ValueError, match="--threads must be >= 1"):
        run_jobs([a], threads=0)
    assert not (tmp_path / "a.start").exists()
