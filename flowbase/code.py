"""Which code ran: the project's git commit and whether its tracked files were changed.

Evaluations (``harness.evaluate``) and training manifests (``trainer.runs``) both record ``git_sha()``, asked of the
project's own checkout wherever the command was started, so a trainer and its in-loop evaluations agree.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = (
    Path(__file__).resolve().parent.parent
)  # the project checkout (or site-packages when installed)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_sha() -> str | None:
    """The project's current commit (None outside a git checkout)."""
    return _git("rev-parse", "HEAD") or None


def git_dirty() -> bool:
    """Whether tracked files differ from that commit."""
    return bool(_git("status", "--porcelain", "--untracked-files=no"))
