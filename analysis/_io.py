"""Small shared helpers of the analysis commands: atomic file writes (a reader never sees half a
file, a crash never leaves one behind) and the command lines' argument types and error handling."""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainable.errors import InputError


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary name in ``path``'s folder, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name that `write` creates itself, so the file gets the usual permissions (umask),
    # not mkstemp's 0600.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return n


def guarded(action: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``action()``: bad input is exit 2 and a failed write exit 1, each one line on stderr."""
    try:
        return action(), 0
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return None, 2
    except OSError as e:
        print(f"error: cannot write {e.filename or 'an output'}: {e.strerror or e}",
              file=sys.stderr)
        return None, 1
