"""The trial folders of a run folder: their file names, the one writer of the files we put there,
and their reader (no Ray needed).

A run folder is what ``python -m tune.run`` leaves under ``runs/NAME``: its record
(`analysis.record`) and one folder per trial. In a trial's folder Ray writes ``params.json`` (the
trial's searched values, user form), ``result.json`` (one JSON object per ``tune.report``),
``error.txt`` when an attempt of the trial failed (also when a retry then completed it), and the
checkpoints it kept (``checkpoint_NNNNNN/`` with ``trainer.pt`` and ``meta.json``); the trial
itself writes ``trial_config.json`` (its full TrainConfig) and ``placement.jsonl`` (one line per
attempt: where it ran, when it started and how it ended); the driver writes ``trial_state.json``
(how many attempts failed, and whether the trial ended in error); the Optuna searcher writes
``optuna_trial.json`` (the study and the trial's number in it). The reference run's folder
(``reference/``, no Ray trial) gets the same files from the same writers here.

Everything here tolerates an interrupted run: a truncated last line of ``result.json`` is skipped,
a trial without results is still listed, a checkpoint without ``meta.json`` is still found.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.record import RunFolderError
from analysis.result_row import ResultRow, rows
from trainable.errors import InputError
from trainable.names import safe_name

log = logging.getLogger(__name__)

PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
TRIAL_CONFIG_FILE = "trial_config.json"  # the full TrainConfig, written when the trial starts
PLACEMENT_FILE = "placement.jsonl"  # one line per attempt of the trial: node, GPU, pid, times
TRIAL_STATE_FILE = "trial_state.json"  # the driver's word on the trial: failures, final error
OPTUNA_FILE = "optuna_trial.json"  # the Optuna study and trial number of a searched trial
CHECKPOINT_PREFIX = "checkpoint_"
CHECKPOINT_META = "meta.json"
CHECKPOINT_STATE = "trainer.pt"
# The source document's defaults trained beside the search (tune.reference): a trial-shaped
# folder that no searcher sampled.
REFERENCE_DIR = "reference"
# What the analysis commands write into a run folder.
TABLES_SUBDIR = "analysis"  # results.parquet, trials.parquet
REPORT_SUBDIR = "report"  # index.html and its figures
EXPORT_SUBDIR = "export"  # <trial>.yaml|json|py + <trial>.pt
RETRAIN_SUBDIR = "retrain"  # retrain.json + one python -m trainable folder per retraining

# A trial folder is "trial_<index>_<trial id>" (tune.ray_edge.trials.trial_dirname, "trial_0007_4f99c683").
# Runs from before that carry Ray's own name, "<trainable>_<trial id>_<index>_<params>_<date>"; the
# trial id is 8 hex digits in Ray 2.60 ("run_trial_3972938e_1_...") and "<5 hex>_<5 digits>" in
# older versions.
_TRIAL_DIRNAME = re.compile(r"^trial_(?P<index>\d+)_(?P<id>[0-9a-f]{8})$")
_RAY_TRIAL_DIRNAME = re.compile(r"_(?P<id>[0-9a-f]{5}_\d{5}|[0-9a-f]{8})_(?P<index>\d+)(?=_|$)")


def trial_dirname(index: int, trial_id: str) -> str:
    return f"trial_{index:04d}_{trial_id}"


def _dirname_match(name: str) -> re.Match[str] | None:
    return _TRIAL_DIRNAME.match(name) or _RAY_TRIAL_DIRNAME.search(name)


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    epoch: int | None  # from meta.json; None when meta.json is missing or unreadable
    psnr: float | None


@dataclass(frozen=True)
class TrialState:
    """What the driver saw of a trial's attempts (``trial_state.json``): Ray retries a failed
    attempt (an error, a lost node) up to ``max_failures`` times, and leaves ``error.txt`` behind
    even when the retry completes, so that file says nothing about how the trial ended."""

    failures: int  # attempts that failed
    errored: bool  # the last attempt failed and no retry was left: the trial ended in error

    @property
    def retries(self) -> int:
        """Attempts started again after a failure."""
        return self.failures - 1 if self.errored else self.failures


@dataclass(frozen=True)
class TrialFolder:
    path: Path
    trial_id: str
    params: dict[str, Any]
    results: list[ResultRow]  # result.json's rows, in file order
    error_text: str | None  # error.txt: an attempt failed (not: the trial ended in error)
    config: dict[str, Any] | None = None  # trial_config.json, if the trial wrote one
    skipped_lines: int = 0  # unreadable result.json lines (a run killed mid-write)
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    optuna_number: int | None = None  # the trial's number in the Optuna study (optuna #2)
    state: TrialState | None = None  # trial_state.json; None for a trial no failure touched
    #   (and for runs from before the driver wrote it)


def find_trial_dirs(run_dir: Path) -> list[Path]:
    """Sub-folders that Ray wrote for a trial (they hold params.json or result.json)."""
    dirs = [
        p
        for p in run_dir.iterdir()
        if p.is_dir() and ((p / PARAMS_FILE).is_file() or (p / RESULT_FILE).is_file())
    ]
    return sorted(dirs, key=lambda p: (_trial_index(p.name), p.name))  # creation order


def read_trial(path: Path) -> TrialFolder:
    lines, skipped = _read_json_lines(path / RESULT_FILE)
    results = rows(lines)
    params = _read_object(path / PARAMS_FILE)
    config = _read_object(path / TRIAL_CONFIG_FILE) or None
    trial_id = next((r.trial_id for r in results if r.trial_id), None)
    if trial_id is not None:
        try:  # it names export files: an id like ../x would write outside the run folder
            safe_name(trial_id, "`trial_id`")
        except InputError as e:
            raise RunFolderError(f"{path / RESULT_FILE}: {e}") from None
    trial_id = trial_id or trial_id_from_dirname(path.name) or path.name
    number = _read_object(path / OPTUNA_FILE).get("number")
    error_file = path / ERROR_FILE
    error_text = None
    if error_file.is_file():
        error_text = error_file.read_text(encoding="utf-8", errors="replace")
    return TrialFolder(
        path=path,
        trial_id=trial_id,
        params=params,
        results=results,
        error_text=error_text,
        config=config,
        skipped_lines=skipped,
        checkpoints=find_checkpoints(path),
        optuna_number=number if isinstance(number, int) and not isinstance(number, bool) else None,
        state=read_trial_state(path),
    )


def trial_id_from_dirname(name: str) -> str | None:
    m = _dirname_match(name)
    return m.group("id") if m else None


def find_checkpoints(trial_dir: Path) -> list[CheckpointInfo]:
    """Kept checkpoints of a trial, oldest first, with the epoch and PSNR from their meta.json."""
    out = []
    for p in sorted(trial_dir.glob(f"{CHECKPOINT_PREFIX}*")):
        if not p.is_dir():
            continue
        epoch = psnr = None
        meta_path = p / CHECKPOINT_META
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                epoch = int(meta["epoch"]) if meta.get("epoch") is not None else None
                psnr = float(meta["psnr"]) if meta.get("psnr") is not None else None
            except (OSError, ValueError, TypeError, KeyError, json.JSONDecodeError) as e:
                log.warning("%s: unreadable meta.json (%s); epoch and PSNR unknown", p, e)
        out.append(CheckpointInfo(path=p, epoch=epoch, psnr=psnr))
    return out


# --- the writer of the trial files that are ours ------------------------------------------------
def write_trial_config(folder: Path, config: Mapping[str, Any]) -> None:
    _write_json(folder / TRIAL_CONFIG_FILE, config)


def write_params(folder: Path, values: Mapping[str, Any]) -> None:
    """``params.json`` for a folder no Ray trial wrote (the reference run): its searched values."""
    _write_json(folder / PARAMS_FILE, values)


def start_attempt(folder: Path, info: Mapping[str, Any]) -> int:
    """Append an attempt's line to ``placement.jsonl`` as it starts (where it runs: node id, node
    IP, hostname, devices, pid; ``started``), so that an attempt killed with its node keeps it.
    Returns the attempt's number, 1 for the first; `end_attempt` closes the line."""
    number = len(read_attempts(folder)) + 1
    with open(folder / PLACEMENT_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps({"attempt": number, **info}) + "\n")
    return number


def update_attempt(folder: Path, number: int, info: Mapping[str, Any]) -> None:
    """Add ``info`` to attempt ``number``'s line (what it resumed from; ``finished`` and
    ``error`` when it ends), rewriting the file atomically."""
    attempts = read_attempts(folder)
    for a in attempts:
        if a.get("attempt") == number:
            a.update(info)
    tmp = folder / (PLACEMENT_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(a) + "\n" for a in attempts), encoding="utf-8")
    os.replace(tmp, folder / PLACEMENT_FILE)


def read_attempts(folder: Path) -> list[dict[str, Any]]:
    """``placement.jsonl``'s lines, one per attempt, oldest first; an attempt without
    ``finished`` was still running, or was killed (its node lost, its driver killed)."""
    return _read_json_lines(folder / PLACEMENT_FILE)[0]


def write_trial_state(folder: Path, state: TrialState) -> None:
    _write_json(folder / TRIAL_STATE_FILE, {"failures": state.failures,
                                            "errored": state.errored})


def read_trial_state(folder: Path) -> TrialState | None:
    d = _read_object(folder / TRIAL_STATE_FILE)
    failures = d.get("failures")
    if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
        return None
    return TrialState(failures, d.get("errored") is True)


def write_results(folder: Path, results: Sequence[ResultRow]) -> None:
    """The whole ``result.json`` of a folder no Ray trial wrote (the reference run), atomically."""
    tmp = folder / (RESULT_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(r.to_json()) + "\n" for r in results), encoding="utf-8")
    os.replace(tmp, folder / RESULT_FILE)


def read_results(folder: Path) -> list[ResultRow]:
    """``result.json``'s rows, in file order."""
    return rows(_read_json_lines(folder / RESULT_FILE)[0])


def write_optuna_trial(folder: Path, study: str, number: int, ray_trial_id: str) -> None:
    """``optuna_trial.json``: which trial of which Optuna study the folder's trial is."""
    _write_json(folder / OPTUNA_FILE, {"study": study, "number": number,
                                       "ray_trial_id": ray_trial_id})


def write_checkpoint_meta(checkpoint: Path, epoch: int, psnr: float, ssim: float,
                          config: Mapping[str, Any] | None = None) -> None:
    """``meta.json`` beside a checkpoint's ``trainer.pt``: what `find_checkpoints` reads."""
    meta: dict[str, Any] = {"epoch": epoch, "psnr": psnr, "ssim": ssim}
    if config is not None:
        meta["trial_config"] = dict(config)
    (checkpoint / CHECKPOINT_META).write_text(json.dumps(meta), encoding="utf-8")


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(value), indent=2), encoding="utf-8")
    os.replace(tmp, path)


# --- reading --------------------------------------------------------------------------------------
def pick_checkpoint(trial_dir: Path, scope: str) -> CheckpointInfo | None:
    """The kept checkpoint a scope means: the best PSNR (a tie to the earlier epoch, as in the
    leaderboard) for ``"best"``, the latest for ``"last"``; None when the trial kept none."""
    kept = find_checkpoints(trial_dir)
    if not kept:
        return None
    if scope == "last":
        return max(kept, key=lambda c: (c.epoch or -1, c.path.name))
    return max(kept, key=lambda c: (c.psnr if c.psnr is not None else float("-inf"),
                                    -(c.epoch or 0), c.path.name))


# --- private helpers -----------------------------------------------------------------------------
def _read_json_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    if not path.is_file():
        return [], 0
    rows: list[dict[str, Any]] = []
    skipped = 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)  # Ray writes NaN/Infinity, which json accepts
            except json.JSONDecodeError:
                skipped += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                skipped += 1
    if skipped:
        log.warning("%s: skipped %d unreadable line(s) (an interrupted write?)", path, skipped)
    return rows, skipped


def _read_object(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("%s: unreadable (%s); taken from the results instead", path, e)
        return {}
    return value if isinstance(value, dict) else {}


def _trial_index(dirname: str) -> int:
    m = _dirname_match(dirname)
    return int(m.group("index")) if m else 1 << 62
