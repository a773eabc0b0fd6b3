"""Errors that mean "the user gave us something wrong": the CLIs print them and exit with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InputError(Exception):
    """Bad input: a config key or value, a data file, a frame. The message names it and the rule."""


class ConfigError(InputError):
    """A configuration key or value breaks a rule."""


class DataError(InputError):
    """A data source, list file or frame is missing, empty or unreadable."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """`` (did you mean `x`?)`` for the valid name closest to a misspelt one, else ``""``.

    difflib's default cutoff (0.6): ``batchsize`` -> ``batch_size``, ``epoch`` -> ``epochs``,
    while a name unlike every valid one (``lr``) gets no guess.
    """
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""
