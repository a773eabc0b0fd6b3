"""What the search driver keeps beside Ray's files in a run folder: the lock that refuses two
searches writing one run name, the library versions and the time stamps its record holds.

The record itself is `analysis.record`'s (one type, one reader and writer), the trial files
`analysis.run_folder`'s."""

from __future__ import annotations

import fcntl
import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO

from trainable.errors import InputError

LOCK_FILE = ".espcn_tune.lock"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("espcn-tune", "torch", "ray", "optuna", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def in_use(run_dir: Path) -> bool:
    """Whether a search holds `lock` on the run folder now; touches nothing (a dry run asks)."""
    try:
        handle = open(run_dir / LOCK_FILE)  # noqa: SIM115 - closed below
    except OSError:  # no lock file: no search ever held it
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def lock(run_dir: Path) -> IO[str]:
    """Hold an exclusive lock on the run folder for this process's lifetime (released by the OS
    even after kill -9). A second search on the same run name is refused."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held open until exit on purpose
    except OSError as e:  # a file where a folder must be, no permission
        raise InputError(f"{run_dir}: cannot create the run folder ({e.strerror or e})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InputError(f"{run_dir}: another search is writing this run right now; "
                         f"choose another --name or wait for it to finish") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
