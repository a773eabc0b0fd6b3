"""Errors that mean "the user gave us something wrong": the CLIs print them and exit with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class InputError(Exception):
    """Bad input: a config key or value, a data file, a frame. The message names it and the rule."""


class ConfigError(InputError):
    """A configuration key or value breaks a rule."""


class DataError(InputError):
    """A data source, list file or frame is missing, empty or unreadable."""


class BadFrames(DataError):
    """Every bad frame one pass over the data found (a check, a plan, a build that went on past
    them), as one list: a line per frame (or clip folder) naming the file and what is wrong.

    ``listing``: where the whole list was written when it is longer than the message shows."""

    SHOWN = 100  # lines in the message; the rest are in ``listing``

    def __init__(self, problems: Sequence[str], where: str = "the data",
                 listing: str | None = None) -> None:
        self.problems = tuple(problems)
        self.where, self.listing = where, listing
        n = len(self.problems)
        lines = [f"{where}: {n} bad frame{'s' if n != 1 else ''} (file: reason), found in one "
                 "pass; fix or remove them (and their list lines), then run again:"]
        lines += [f"  {p}" for p in self.problems[: self.SHOWN]]
        if n > self.SHOWN:
            lines.append(f"  ... and {n - self.SHOWN} more"
                         + (f"; the whole list is in {listing}" if listing else ""))
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[type[BadFrames], tuple[tuple[str, ...], str, str | None]]:
        # Pickled whole (a Ray task, a worker process), not rebuilt from the message alone.
        return BadFrames, (self.problems, self.where, self.listing)


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """`` (did you mean `x`?)`` for the valid name closest to a misspelt one, else ``""``.

    difflib's default cutoff (0.6): ``batchsize`` -> ``batch_size``, ``epoch`` -> ``epochs``,
    while a name unlike every valid one (``lr``) gets no guess.
    """
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""
