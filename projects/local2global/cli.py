"""What the command lines share: how bad-file errors are reported.

A bad file given at the command line (a checkpoint, an input video, a config) ends the command with one line that
names the file and what is wrong, and a non-zero exit status, unless ``--debug`` or ``$L2G_DEBUG`` asks for the
traceback.
"""

from __future__ import annotations

import os
import sys

__all__ = ["DEBUG_ENV", "BAD_FILE_EXIT_STATUS", "debug_requested", "prog_name"]

#: Environment variable that, set to a non-empty value other than "0", shows tracebacks of bad-file errors.
DEBUG_ENV = "L2G_DEBUG"
#: Exit status of a bad-file error (argparse's status for usage errors).
BAD_FILE_EXIT_STATUS = 2


def debug_requested(flag: bool = False) -> bool:
    """Whether a bad-file error should show its traceback: ``flag`` (``--debug``) or ``$L2G_DEBUG`` (not "" / "0")."""
    return bool(flag) or os.environ.get(DEBUG_ENV, "0") not in ("", "0")


def prog_name(default: str) -> str:
    """The running command's name (``train_net.py``, ``l2g-train``, ...) for error lines, else ``default``."""
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] and sys.argv[0] != "-c" else default
