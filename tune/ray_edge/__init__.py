"""Ray behind one edge: every workaround for Ray Tune's own behaviour lives here, measured on the
Ray version in ``TESTED`` (pyproject pins it).

What is worked around, and where it is used:

- **Experiment snapshots** (`driver_env`): Ray snapshots the experiment state on a timer; a resume
  after kill -9 must repeat nothing, so it snapshots after every result.
- **Ctrl-C** (`SigintWatch`): Ray's Tuner takes SIGINT, stops the trials and returns a result
  grid that looks finished; the one trace it leaves tells an interrupted search from a done one.
- **Token auth** (`token_auth_for_address`): a local Ray 2.60 uses token auth; the token goes to
  a cluster only when the user names the file.
- **State repair** (`repair_state`, `session_dir`): Ray copies its driver files into the run
  folder file by file; a kill -9 mid-copy leaves them cut short. They are restored from the
  driver's staging folder of this run's own recorded session.
- **Staging folders** (`trial_folder`): a trial's ``get_trial_dir()`` is a local staging folder
  that reaches the run folder only for a trial on a fresh actor (``REUSE_ACTORS``).
- **The checkpoint/result race** (`resume_checkpoint`): a snapshot can fall between a result and
  its checkpoint; the restored trial takes the newest checkpoint its results record.
- **Checkpoint retention** (`checkpoint_config`): PBT clones checkpoints a cap would delete.
- **Trial folder names** (`trial_dirname`): short and readable, ``trial_0007_4f99c683``.
- **Processes left behind** (`local_node_id`, `start_reaper`, `reap_node`): after kill -9 of a
  driver that started its own Ray, two of Ray's agents hang for about a minute instead of
  exiting (`tune.ray_edge.reaper`); a watchdog stops them at once.
- **Optuna's view of stopped trials** (`tune.ray_edge.optuna_search`): Ray tells Optuna an
  ASHA-stopped trial COMPLETE with its rung's value; we tell it PRUNED, with every validation
  as an intermediate value at its epoch.

On another Ray version `check()` says once which of these are unverified; the ones that read
Ray's private files (state repair) are then skipped rather than trusted.

This module imports nothing from Ray at import time: the token settings must be in the
environment before ``import ray``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickletools
import shutil
import signal
import stat
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from analysis import run_folder
from analysis.run_folder import (
    CHECKPOINT_META,
    CHECKPOINT_PREFIX,
    CHECKPOINT_STATE,
    LEGACY_META_FILE,
    META_FILE,
    RESULT_FILE,
)
from trainable.errors import InputError

log = logging.getLogger("tune")

TESTED = "2.60"  # the Ray minor version these workarounds were measured on

# Trials reuse their actor (no process start per trial: ~3 s each on 2 cores). With reuse, a
# trial's get_trial_dir() stays on the staging side: see `trial_folder`.
REUSE_ACTORS = True


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


def driver_env() -> None:
    """Ray's settings for the driver, before the Tuner is built."""
    # Experiment state after every result, so a resume after kill -9 repeats nothing.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    # ...which Ray then warns about at every report; the snapshot is tiny next to a trial's work.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def token_auth_for_address(address: str | None, token_file: str | None) -> None:
    """Send this machine's Ray token to a cluster only when the user asked for it.

    Ray 2.60 starts every local cluster with token auth (the token in ~/.ray/auth_token), and
    a driver sends the token only in token mode. Turning that on by itself for any ``--address``
    would hand the local token to whatever host the address names, so it is the user's call:
    ``--ray-token-file PATH`` (or their own RAY_AUTH_MODE=token, which Ray reads as it is)."""
    if token_file is None:
        return
    if not address:
        raise InputError("--ray-token-file: only applies with --address (a local Ray makes its "
                         "own token)")
    path = Path(token_file).expanduser()
    if not path.is_file():
        raise InputError(f"--ray-token-file {token_file}: no such file")
    # Before ray is imported: Ray reads both when it loads its config.
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path.resolve())


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


def trial_dirname(trial: Any) -> str:
    """``trial_0007_4f99c683``: the trial's number in the search and Ray's trial id.

    Ray's own names carry every parameter and a date (often over 200 characters, cut at an
    arbitrary point); the parameters are in the folder's params.json. A module-level function:
    the Tuner pickles it."""
    tag = str(getattr(trial, "experiment_tag", "") or "")
    number = tag.split("_", 1)[0]
    return run_folder.trial_dirname(int(number) if number.isdigit() else 0, trial.trial_id)


def checkpoint_config(scheduler: str, metric: str, mode: str):
    """Best by PSNR plus the latest (Ray always keeps the latest), so disks do not fill. PBT keeps
    every checkpoint: its exploit clones another trial's checkpoint of that moment, which the
    cap deleted as soon as that trial reported again ("does not exist on storage anymore", 2 of
    6 trials errored three times in a row on the smoke space)."""
    from ray import tune

    if scheduler == "pbt":
        return tune.CheckpointConfig(num_to_keep=None)
    return tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=metric,
                                 checkpoint_score_order=mode)


def local_node_id() -> str | None:
    """The id of the Ray node this driver started (call after ``ray.init``), recorded so that a
    resume can stop what a killed driver's node left behind."""
    import ray

    try:
        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # noqa: BLE001 - another Ray version: no reaping, never a failed start
        return None


def reap_node(node_id: str | None) -> list[int]:
    """Stop the processes of a dead local Ray node (a killed driver's); the pids stopped."""
    from tune.ray_edge import reaper

    return reaper.reap(node_id) if node_id and known() else []


def start_reaper(node_id: str | None):
    """A watchdog that outlives this driver and stops what its Ray node leaves behind, even after
    kill -9. Returns the process (its stdin, held open by this driver, is the signal); None where
    there is nothing to watch."""
    import subprocess
    import sys

    if not node_id or not known() or not Path("/proc").is_dir():
        return None
    script = Path(__file__).with_name("reaper.py")
    return subprocess.Popen([sys.executable, "-I", str(script), node_id], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


# --- inside a trial ------------------------------------------------------------------------------
def trial_folder(run_dir: str | None) -> Path:
    """The trial's own folder in the run folder, for files written beside Ray's.

    ``get_trial_dir()`` is a local staging folder in Ray 2.60 that reaches the run folder only for
    a trial on a fresh actor (with ``reuse_actors`` the files of every later trial on that actor
    were lost; measured). The staging folder is named like the trial's folder in the run folder.
    """
    from ray import tune

    staging = Path(tune.get_context().get_trial_dir())
    return Path(run_dir) / staging.name if run_dir else staging


def _checkpoint_epoch(directory: Path) -> int | None:
    try:
        return int(json.loads((directory / CHECKPOINT_META).read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _recorded_epochs(result_file: Path) -> list[int]:
    epochs = []
    try:
        lines = result_file.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            epochs.append(int(json.loads(line)["epoch"]))
        except (ValueError, KeyError, TypeError):
            break  # a line being written
    return epochs


def resume_checkpoint(given: Path | None, trial_dir: Path) -> Path | None:
    """The training state a (re)started trial loads: Ray's checkpoint, or a newer one in the run
    folder whose epoch the trial's result.json already records.

    Ray 2.60 registers a result and its checkpoint in two driver events, and an experiment
    snapshot can fall between them. After kill -9 of the driver, the restored trial then gets
    the checkpoint before the newest (or none) while result.json already holds the newest epoch:
    it repeats that epoch, or starts over, and result.json lists the epoch twice (measured with
    TUNE_GLOBAL_CHECKPOINT_S=0 and num_to_keep=1). A checkpoint whose result never reached
    result.json is ignored: that epoch is trained again and reported once.
    """
    ours: tuple[int, Path] | None = None
    if given is not None:
        epoch = _checkpoint_epoch(given)
        ours = (epoch if epoch is not None else -1, given / CHECKPOINT_STATE)
    recorded = _recorded_epochs(trial_dir / RESULT_FILE)
    if recorded:
        for d in trial_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            epoch = _checkpoint_epoch(d)
            if (epoch is not None and epoch <= max(recorded) and (d / CHECKPOINT_STATE).is_file()
                    and (ours is None or epoch > ours[0])):
                ours = (epoch, d / CHECKPOINT_STATE)
    return ours[1] if ours else None


# --- state repair after kill -9 ------------------------------------------------------------------
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
