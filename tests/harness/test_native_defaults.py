"""Every entry point samples a model at its own native settings (the mini model: 32 px, 10 steps) unless the
user says otherwise."""

from __future__ import annotations

from pathlib import Path

import harness
from results.store import Store


def test_python_evaluate_mini_uses_the_model_native_settings(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\n")
    store = tmp_path / "s.duckdb"
    result = harness.evaluate(
        "mini", [], prompts=prompts, scorers=["mini_quality"], store=store, progress=False
    )
    assert result.images_generated == 2
    run = Store(store, read_only=True).get_run(result.run_id)
    assert run is not None
    gen = run.protocol["generation"]
    assert (gen["height"], gen["width"], gen["steps"]) == (32, 32, 10)


def test_python_evaluate_mini_on_a_benchmark_with_a_limit_and_an_override(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    result = harness.evaluate(
        "mini", "mini_ocr", limit=2, store=store, protocol={"steps": 2}, progress=False
    )
    assert result.images_generated == 2
    run = Store(store, read_only=True).get_run(result.run_id)
    assert run is not None
    gen = run.protocol["generation"]
    assert (gen["height"], gen["steps"]) == (32, 2)
