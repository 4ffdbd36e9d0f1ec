"""`harness report`: images first, paginated, marked pass/fail; the protocol JSON last and collapsed."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from flow_opd.cli import app
from results.store import Store
from tests.support.service_data import add_mini_run


def test_report_puts_images_first_paginates_and_ends_with_the_json(tmp_path: Path) -> None:
    path = tmp_path / "results.duckdb"
    # 30 prompts x 2 images on geneval (binary mini_geneval) and drawbench (mini_quality): 60 prompts
    add_mini_run(Store(path), "r", model="mini", skill=0.6, prompts=30)
    out = tmp_path / "rep" / "r.html"
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "r-p9.html").write_text("a page of an older, longer report")
    args = ["report", "r", "--store", str(path), "--out", str(out), "--per-page", "25"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert Path(res.output.strip()) == out
    pages = sorted(p.name for p in out.parent.iterdir())
    assert pages == [
        "r-p2.html",
        "r-p3.html",
        "r.html",
    ]  # 25 + 25 + 10 prompts; the stale page gone
    first = out.read_text()
    tables, images, protocol = (first.index(s) for s in ("<h2>Tables", "<figure", "<h2>Protocol"))
    assert tables < images < protocol  # the JSON used to come before the images
    assert "<details><summary>Protocol (JSON)</summary>\n<pre>" in first  # collapsed
    assert first.count("<figure") == 25 * 2
    assert "page 1 of 3" in first and "href='r-p2.html'" in first
    last = (out.parent / "r-p3.html").read_text()
    assert last.count("<figure") == 10 * 2 and "Protocol" not in last
    assert "Images: prompts 51-60 of 60" in last
    # geneval images carry the binary scorer's verdict; drawbench's continuous scores do not
    marks = re.findall(r"<figure( class='(pass|fail)')?>", "".join(
        p.read_text() for p in out.parent.iterdir()))  # fmt: skip
    geneval = [m[1] for m in marks if m[1]]
    assert len(geneval) == 30 * 2 and {"pass", "fail"} == set(geneval)
    assert len(marks) - len(geneval) == 30 * 2
    bad = CliRunner().invoke(app, [*args[:-1], "0"])
    assert bad.exit_code == 2 and "--per-page must be >= 1" in bad.output
