"""Logging set-up for the command line: our messages at INFO, third-party chatter (progress bars, deprecations)
silenced unless FLOW_OPD_VERBOSE=1."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_third_party() -> None:
    """Silence diffusers/transformers progress bars and advisory warnings."""
    if os.environ.get("FLOW_OPD_VERBOSE") == "1":
        logging.basicConfig(level=logging.DEBUG)
        return
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    try:
        import diffusers.utils.logging as dlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    try:
        import transformers.utils.logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
