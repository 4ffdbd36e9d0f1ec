"""The top layer: the ``harness`` command (``flow_opd.cli``), which reaches every layer below it.

``python -m flow_opd ARGS`` is the same command (``accelerate launch -m flow_opd eval ...`` shards an evaluation).
"""
