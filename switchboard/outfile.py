"""Where the command line writes a file: a path, or ``-`` for standard output."""

from __future__ import annotations

import sys
from pathlib import Path

STDOUT = "-"


def is_stdout(path: str | Path | None) -> bool:
    """True when ``path`` is ``-``: the output goes to standard output."""
    return path is not None and str(path) == STDOUT


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to the file at ``path``, or to standard output for ``-``."""
    if is_stdout(path):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    Path(path).write_text(text, encoding="utf-8")
