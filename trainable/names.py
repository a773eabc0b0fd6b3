"""Names that become path components (run names, trial ids): one rule, checked in one place.

A name read from the command line or from a file in a run folder is untrusted: ``../x`` or
``a/b`` would put a run or an export outside the folder the user named.
"""

from __future__ import annotations

import re
from pathlib import Path

from trainable.errors import InputError

_SAFE = re.compile(r"[A-Za-z0-9._-]+")
RULE = "must be letters, digits, '.', '_' or '-' only, and not '.' or '..'"


def safe_name(value: object, what: str) -> str:
    """``value`` as a single path component, or InputError naming ``what``, the value and the
    rule."""
    text = value if isinstance(value, str) else None
    if text is None or not _SAFE.fullmatch(text) or text in (".", ".."):
        raise InputError(f"The value of {what} is {value!r}, but {RULE}.")
    return text


def inside(path: Path, root: Path, what: str) -> Path:
    """``path`` resolved, or InputError when it lies outside ``root`` (resolved too: symbolic
    links count where they lead)."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if not resolved.is_relative_to(base):
        raise InputError(f"{what} {path}: resolves to {resolved}, outside {base}")
    return resolved
