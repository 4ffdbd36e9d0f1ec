"""``python -m tests.support.harness_with_fakes ARGS``: the real ``harness`` CLI with the test fakes registered.

Subprocess tests (SIGKILL-and-resume, 2-process sharding under torchrun) run the CLI exactly as users do, but
score with ``tests.support.fakes.FakeScorer`` because no scorer weights exist offline.
"""

from tests.support.fakes import register

register()

from flow_opd.cli import app  # noqa: E402

if __name__ == "__main__":
    app(prog_name="harness")
