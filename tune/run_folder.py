"""The run folder's own files beside Ray's: ``espcn_tune.json`` (what was run, how it is scored,
library versions) and the lock that refuses two searches writing one run name."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
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


# Ray's restore reads the newest of each of these (the suffix is the driver session's start time).
RAY_STATE_FILES = ("experiment_state-{}.json", "search_gen_state-{}.json", "searcher-state-{}.pkl")


def repair_ray_state(run_dir: Path, ray_tmp: Path | None = None) -> list[str]:
    """Finish the copy of Ray's driver files into the run folder that a killed driver left
    half done, before ``Tuner.restore`` reads them.

    The driver writes the experiment state, the searcher state and every trial's result.json
    into a staging folder of its Ray session (on its own machine), and copies that folder into
    the run folder after every step, file by file and not atomically. kill -9 during the copy
    leaves files cut short (measured: an empty search_gen_state-*.json, on which
    ``Tuner.restore`` dies with EOFError; an empty experiment_state-*.json; a finished trial's
    empty result.json). The staging folder of the session that wrote the newest experiment state
    holds the whole last state: copy it over again, skipping any state file it has cut short
    itself. Returns the paths (relative to the run folder) whose content changed; raises
    `InputError` when a state file stays unreadable.
    """
    states = sorted(run_dir.glob(RAY_STATE_FILES[0].format("*")))
    if not states:
        return []
    session = states[-1].name[len("experiment_state-"):-len(".json")]
    names = [pattern.format(session) for pattern in RAY_STATE_FILES]
    root = ray_tmp or Path(os.environ.get("RAY_TMPDIR") or "/tmp") / "ray"
    # The staging folder is named after the run's first start, so match on the state file.
    staged = [d for d in root.glob(f"session_*/artifacts/*/{run_dir.name}/driver_artifacts")
              if (d / names[0]).is_file()]
    changed = []
    if staged:
        staging = max(staged, key=lambda d: (d / names[0]).stat().st_mtime)
        for src in sorted(p for p in staging.rglob("*") if p.is_file()):
            rel = src.relative_to(staging)
            dst = run_dir / rel
            if rel.name.startswith(".") or str(rel) == META_FILE:
                continue  # a temporary file; ours (a resume's stale copy lands in staging)
            if str(rel) in names and not _loads(src):
                continue  # a state file the driver was writing when it was killed
            if dst.is_file() and dst.read_bytes() == src.read_bytes():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            changed.append(str(rel))
    bad = [n for n in names if (run_dir / n).exists() and not _loads(run_dir / n)]
    if bad:
        raise InputError(f"{run_dir / bad[0]}: cut short when the search was killed, and no "
                         f"readable copy is left in the Ray session's folders ({root}): this "
                         f"run cannot be resumed; start a new one")
    return changed


def _loads(path: Path) -> bool:
    try:
        data = path.read_bytes()
        if path.name.startswith("experiment_state-"):
            json.loads(data)
        else:
            from ray import cloudpickle

            cloudpickle.loads(data)
    except Exception:  # any failure to read it back is what Ray's restore would hit
        return False
    return True
