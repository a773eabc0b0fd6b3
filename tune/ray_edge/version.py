"""Which Ray the workarounds in `tune.ray_edge` were measured on, and saying so once when another
one is installed."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

log = logging.getLogger("tune")

TESTED = "2.60"  # the Ray minor version these workarounds were measured on


def installed() -> str | None:
    try:
        return version("ray")
    except PackageNotFoundError:
        return None


def known() -> bool:
    """Whether the installed Ray is the version the workarounds here were measured on."""
    v = installed()
    return v is not None and (v == TESTED or v.startswith(TESTED + "."))


_warned = False


def check() -> bool:
    """Say once, at the start of a search, when the installed Ray is not the tested one."""
    global _warned
    ok = known()
    if not ok and not _warned:
        _warned = True
        log.warning("Ray %s is installed; espcn-tune is tested with Ray %s.*. Unverified on this "
                    "version: resume after kill -9 (the state repair and the reaper are skipped), "
                    "Ctrl-C detection and trial files on reused actors; the Optuna study records "
                    "stopped trials as Ray does (COMPLETE). Install ray[tune]==%s.* to have "
                    "them checked.", installed(), TESTED, TESTED)
    return ok

