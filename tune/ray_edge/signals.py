"""Ctrl-C under Ray's Tuner: telling an interrupted ``fit()`` from a finished one."""

from __future__ import annotations

import os
import signal
import threading


class SigintWatch:
    """Tell a Ctrl-C'd ``Tuner.fit()`` from a finished one, and put SIGINT back afterwards.

    Ray 2.60's Tuner installs its own SIGINT (and SIGUSR1) handler when run in the main thread:
    the first Ctrl-C saves the experiment state, stops the trials, marks them all TERMINATED and
    fit() returns a ResultGrid that looks finished. The one trace it leaves is that its handler
    has put back the one it replaced; otherwise it stays installed. A second Ctrl-C raises
    KeyboardInterrupt wherever the driver is.
    """

    def __init__(self) -> None:
        self.main = threading.current_thread() is threading.main_thread()
        self.before = signal.getsignal(signal.SIGINT)
        self.ray_handles = (self.main and
                            not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0")))

    def interrupted(self) -> bool:
        """After fit() returned: whether Ray's handler saw a Ctrl-C."""
        return self.ray_handles and signal.getsignal(signal.SIGINT) is self.before

    def restore(self) -> None:
        """Ray leaves its handler installed after fit(); a later Ctrl-C must work as usual."""
        if self.main:
            signal.signal(signal.SIGINT, self.before)

