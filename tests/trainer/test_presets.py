"""docs/paper-presets.md: generated from the configs, current, and marking what departs from the references."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from trainer import presets

ROOT = Path(__file__).resolve().parents[2]


def test_the_page_is_current():
    got = subprocess.run(
        [sys.executable, "-m", "trainer.presets", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert got.returncode == 0, got.stderr


def _row(page: str, preset: str, key: str) -> list[str]:
    section = page.split(f"## `{preset}.yaml`")[1].split("\n## ")[0]
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| `{key}` |"))
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_a_drifted_preset_shows_on_the_page_and_is_marked(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    shutil.copytree(presets.CONFIGS, configs)
    preset = configs / "grpo_geneval.yaml"
    preset.write_text(preset.read_text().replace("kl_beta: 0.04", "kl_beta: 0.05"))
    monkeypatch.setattr(presets, "CONFIGS", configs)
    page = presets.render()
    key, ours, paper, flow_grpo, authors, mark = _row(page, "grpo_geneval", "kl_beta")
    assert (ours, flow_grpo, mark) == ("0.05", "0.04", "**!**")
    assert _row(page, "grpo_pickscore", "kl_beta")[1:4] == ["0.01", "", "0.01"]
    assert page != (ROOT / "docs" / "paper-presets.md").read_text()


def test_every_row_names_a_real_key_and_the_student_shape_is_the_papers():
    page = presets.render()
    for name in presets.PRESETS:
        cfg = presets.load_preset(name)
        for row in presets.ROWS[presets.PRESETS[name]]:
            presets.ours(cfg, row.key)  # raises on a key the config does not have
    assert _row(page, "merge_teachers", "rank")[1:3] == ["32", "32"]
    assert _row(page, "merge_teachers", "alpha")[1:3] == ["64", "64"]
    assert _row(page, "opd_paper", "mar_lambda")[1:] == ["0.02", "0.02", "", "0.04", ""]
