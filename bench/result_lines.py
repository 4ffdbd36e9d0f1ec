"""The figures a bench script ends with: one ``RESULT name=value`` line each, printed last.

Scripts run as ``PYTHONPATH=. python bench/<script>.py`` import this module from their own folder. Nested
mappings flatten to dotted names; names lose their spaces so that ``grep '^RESULT '`` and ``split('=', 1)`` read
every line back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def result_lines(figures: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``RESULT name=value`` lines for ``figures`` (floats to 6 significant digits)."""
    lines = []
    for key, value in figures.items():
        name = prefix + re.sub(r"[^A-Za-z0-9_.\-]+", "_", str(key)).strip("_")
        if isinstance(value, Mapping):
            lines += result_lines(value, name + ".")
        elif isinstance(value, float):
            lines.append(f"RESULT {name}={value:.6g}")
        else:
            lines.append(f"RESULT {name}={value}")
    return lines


def emit(figures: Mapping[str, Any]) -> None:
    """Print the figures as the script's last lines."""
    for line in result_lines(figures):
        print(line, flush=True)
