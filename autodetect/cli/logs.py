"""Keep TensorFlow's, absl's and LiteRT's log lines (and the in-process worker's) off the terminal.

They are written to file descriptor 2 from C++ as well as from Python, so the descriptor itself is
pointed at a log file while a command trains; the command's own output goes to stdout. ``--verbose``
leaves stderr alone and lets TensorFlow say everything."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def native_logs(log_file: Path, verbose: bool) -> Iterator[Path | None]:
    """While the block runs, stderr (fd 2) goes to ``log_file`` (truncated), unless ``verbose``.
    Yields the log file, or None when verbose."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # before TensorFlow loads: its INFO lines too
        yield None
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield log_file
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
