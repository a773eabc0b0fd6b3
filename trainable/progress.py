"""How far a long step has got (a cache build, a check of every frame, test scoring, upscaling).

On a terminal a tqdm bar (log lines printed meanwhile go above it, not through it). Anywhere else,
a Ray trial's log, CI, a file, a bar would be thousands of carriage-return updates, so the step
logs one line every 30 seconds instead, and none at all when it ends sooner.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

LOG_EVERY_S = 30.0


class Progress:
    """``with Progress(total, "decoding train") as bar: ... bar.update(n)``."""

    def __init__(self, total: int | None, what: str, *, unit: str = "clip",
                 terminal: bool | None = None) -> None:
        self.total, self.what, self.unit = total, what, unit
        self.done = 0
        self._start = self._said = time.perf_counter()
        self._bar: Any = None
        self._redirect: contextlib.ExitStack | None = None
        if sys.stderr.isatty() if terminal is None else terminal:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=total, desc=what, unit=unit, dynamic_ncols=True,
                             smoothing=0.1, leave=True)
            self._redirect = contextlib.ExitStack()
            self._redirect.enter_context(logging_redirect_tqdm())

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._said < LOG_EVERY_S:
            return
        self._said = now
        rate = self.done / max(now - self._start, 1e-9)
        if self.total is None:
            log.info("%s: %d %ss, %.0f/s", self.what, self.done, self.unit, rate)
            return
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        log.info("%s: %d / %d %ss (%.0f%%), %.0f/s, about %.0f s left", self.what, self.done,
                 self.total, self.unit, 100 * self.done / max(self.total, 1), rate, left)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._redirect is not None:
            self._redirect.close()
            self._redirect = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
