"""The run folder's own files beside Ray's: ``espcn_tune.json`` (what was run, how it is scored,
library versions) and the lock that refuses two searches writing one run name."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any

from trainable.errors import InputError

META_FILE = "espcn_tune.json"
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


def read_meta(run_dir: Path) -> dict[str, Any]:
    path = run_dir / META_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{run_dir}: not an espcn-tune run folder (no {META_FILE})") from None
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable ({e})") from None


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    tmp = run_dir / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    os.replace(tmp, run_dir / META_FILE)


def lock(run_dir: Path) -> IO[str]:
    """Hold an exclusive lock on the run folder for this process's lifetime (released by the OS
    even after kill -9). A second search on the same run name is refused."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held open until exit on purpose
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
