"""``python -m flow_opd ARGS``: the ``harness`` command (for ``accelerate launch -m flow_opd eval ...``)."""

from flow_opd.cli import app

app()
