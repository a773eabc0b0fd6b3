"""Repairing Ray's driver files in a run folder after kill -9, trusting only this user's files.

The security-sensitive part of the Ray edge: it reads a Ray session folder under /tmp, so it
uses it only when it is this run's own recorded session, owned by this user, and nothing in it
that others could have written; it never unpickles anything to check a file.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickletools
import shutil
import stat
from pathlib import Path

from analysis.record import LEGACY_META_FILE, META_FILE
from trainable.errors import InputError
from tune.ray_edge.version import TESTED, installed, known

log = logging.getLogger("tune")

# Ray's restore reads the newest of each of these (the suffix is the driver session's start time).
RAY_STATE_FILES = ("experiment_state-{}.json", "search_gen_state-{}.json", "searcher-state-{}.pkl")


def session_dir() -> str | None:
    """This driver's Ray session folder (under RAY_TMPDIR, TMPDIR or /tmp, as Ray chose), recorded
    in the run's meta so that a resume repairs from it and from nothing else."""
    import ray

    try:
        ctx = ray.get_runtime_context()
        return str(Path(ctx.get_temp_dir()) / ctx.get_session_name())
    except Exception:  # noqa: BLE001 - another Ray version: no repair, never a failed start
        return None


def repair_state(run_dir: Path, session_dir: Path | None) -> list[str]:
    """Finish the copy of Ray's driver files into the run folder that a killed driver left
    half done, before ``Tuner.restore`` reads them.

    The driver writes the experiment state, the searcher state and every trial's result.json
    into a staging folder of its Ray session (on its own machine), and copies that folder into
    the run folder after every step, file by file and not atomically. kill -9 during the copy
    leaves files cut short (measured: an empty search_gen_state-*.json, on which
    ``Tuner.restore`` dies with EOFError; an empty experiment_state-*.json; a finished trial's
    empty result.json). The staging folder in ``session_dir`` (the session the run recorded
    when it started; any other folder under /tmp/ray may belong to anyone) holds the whole last
    state: copy it over again, skipping any state file it has cut short itself.

    The session folder is used only when it is a real folder owned by this user, everything
    read below it only when owned by this user and not writable by group or others. Nothing is
    unpickled to decide: JSON is parsed, and a pickle is walked opcode by opcode
    (``pickletools``, which imports and calls nothing) to see that it is complete.

    Returns the paths (relative to the run folder) whose content changed; raises `InputError`
    when a state file stays unreadable.
    """
    states = sorted(run_dir.glob(RAY_STATE_FILES[0].format("*")))
    if not states:
        return []
    if not known():
        log.warning("%s: Ray %s is not the tested %s: its files are not repaired; if the resume "
                    "fails, start a new run", run_dir, installed(), TESTED)
        return []
    session = states[-1].name[len("experiment_state-"):-len(".json")]
    names = [pattern.format(session) for pattern in RAY_STATE_FILES]
    changed = []
    staging = _staging(run_dir, names[0], session_dir)
    if staging is not None:
        for src in _own_files(staging):
            rel = src.relative_to(staging)
            dst = run_dir / rel
            if rel.name.startswith(".") or str(rel) in (META_FILE, LEGACY_META_FILE):
                continue  # a temporary file; ours (a resume's stale copy lands in staging)
            if str(rel) in names and not _complete(src):
                continue  # a state file the driver was writing when it was killed
            if dst.is_file() and dst.read_bytes() == src.read_bytes():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            changed.append(str(rel))
    bad = [n for n in names if (run_dir / n).exists() and not _complete(run_dir / n)]
    if bad:
        where = (f"the run's Ray session folder ({session_dir})" if session_dir
                 else "a Ray session folder (the run recorded none)")
        raise InputError(f"{run_dir / bad[0]}: cut short when the search was killed, and no "
                         f"readable copy is left in {where}: this run cannot be resumed; start "
                         "a new one")
    return changed


def _trusted(path: Path, *, folder: bool, shared_ok: bool = False) -> bool:
    """A real (not linked) folder or file owned by this user, not writable by group or others
    (unless ``shared_ok``)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    kind = stat.S_ISDIR(st.st_mode) if folder else stat.S_ISREG(st.st_mode)
    shared = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return kind and st.st_uid == os.getuid() and (shared_ok or not shared)


def _staging(run_dir: Path, state_name: str, session_dir: Path | None) -> Path | None:
    # Ray 2.60 makes the session folder itself mode 0777 (measured); what it writes inside
    # (artifacts/...) is 0755/0644. Others could swap entries of the session folder, but only
    # for ones they own, which the checks below refuse.
    if session_dir is None or not _trusted(Path(session_dir), folder=True, shared_ok=True):
        return None
    if not _trusted(Path(session_dir) / "artifacts", folder=True):
        return None
    # The staging folder is named after the run's first start, so match on the state file.
    staged = [d for d in Path(session_dir).glob(f"artifacts/*/{run_dir.name}/driver_artifacts")
              if _trusted(d.parent.parent, folder=True) and _trusted(d.parent, folder=True)
              and _trusted(d, folder=True) and _trusted(d / state_name, folder=False)]
    return max(staged, key=lambda d: (d / state_name).stat().st_mtime, default=None)


def _own_files(top: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(top, followlinks=False):
        dirs[:] = [d for d in dirs if _trusted(Path(root) / d, folder=True)]
        out += [Path(root) / f for f in files if _trusted(Path(root) / f, folder=False)]
    return sorted(out)


def _complete(path: Path) -> bool:
    """Whether Ray's restore could read the whole file back: JSON parses, or a pickle (Ray also
    pickles into ``search_gen_state-*.json``) runs through to its STOP opcode with nothing
    after it. Checked without unpickling: ``pickletools.genops`` only decodes opcodes."""
    try:
        data = path.read_bytes()
        if path.name.startswith("experiment_state-"):
            json.loads(data)
            return True
        stream = io.BytesIO(data)
        ops = [op.name for op, _, _ in pickletools.genops(stream)]
        return ops[-1:] == ["STOP"] and stream.tell() == len(data)
    except Exception:  # noqa: BLE001 - anything that does not decode is what restore would hit
        return False
