"""Read the files of one run folder as they lie on disk, without Ray.

A run folder is what ``python -m tune.run`` leaves under ``runs/NAME``: ``espcn_tune.record`` (our
record of the run, JSON) and one Ray trial folder per trial, each with ``params.json``, ``result.json``
(one JSON object per ``tune.report``), ``error.txt`` when the trial failed, and the checkpoints Ray
kept (``checkpoint_NNNNNN/`` with ``trainer.pt`` and ``meta.json``).

Everything here tolerates an interrupted run: a truncated last line of ``result.json`` is skipped,
a trial without results is still listed, a checkpoint without ``meta.json`` is still found.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainable.errors import InputError
from trainable.names import safe_name

log = logging.getLogger(__name__)

# Our record of the run (JSON). Not named *.json: Ray 2.60 copies every top-level .json and .pkl
# of the run folder into its staging folder on restore and back after every step, not
# atomically, so a kill during that copy could cut our record short. Runs recorded before the
# rename keep ``espcn_tune.json``; it is read when the record is absent and replaced on write.
META_FILE = "espcn_tune.record"
LEGACY_META_FILE = "espcn_tune.json"
PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
TRIAL_CONFIG_FILE = "trial_config.json"  # the full TrainConfig, written when the trial starts
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


class RunFolderError(InputError):
    """Not a run folder, or the run cannot answer the question (no such trial, no results)."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    epoch: int | None  # from meta.json; None when meta.json is missing or unreadable
    psnr: float | None


@dataclass(frozen=True)
class TrialFolder:
    path: Path
    trial_id: str
    params: dict[str, Any]
    results: list[dict[str, Any]]  # parsed result.json lines, in file order
    error_text: str | None  # content of error.txt, None when the trial did not error
    config: dict[str, Any] | None = None  # trial_config.json, if the trial wrote one
    skipped_lines: int = 0  # unparseable result.json lines (a run killed mid-write)
    checkpoints: list[CheckpointInfo] = field(default_factory=list)


def meta_path(run_dir: Path) -> Path:
    """The run record's path: ``META_FILE``, or the legacy name where only that exists."""
    path = run_dir / META_FILE
    legacy = run_dir / LEGACY_META_FILE
    return legacy if not path.is_file() and legacy.is_file() else path


def is_run_folder(folder: Path) -> bool:
    return meta_path(folder).is_file()


def read_meta(run_dir: Path) -> dict[str, Any]:
    """Load the run record; a missing or malformed file means "not a run"."""
    if not run_dir.exists():
        raise RunFolderError(f"{run_dir}: no such folder")
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: is a file, but a run folder (runs/NAME) was expected")
    path = meta_path(run_dir)
    if not path.is_file():
        hint = _nested_run_hint(run_dir)
        raise RunFolderError(
            f"{run_dir}: not an espcn-tune run folder (there is no {META_FILE}){hint}"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path}: unreadable run record ({e})") from None
    if not isinstance(meta, dict):
        raise RunFolderError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    """Replace the run record atomically (a kill leaves the old record or the new one); a run
    recorded under the legacy name moves to ``META_FILE``."""
    tmp = run_dir / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, run_dir / META_FILE)
    (run_dir / LEGACY_META_FILE).unlink(missing_ok=True)


def find_trial_dirs(run_dir: Path) -> list[Path]:
    """Sub-folders that Ray wrote for a trial (they hold params.json or result.json)."""
    dirs = [
        p
        for p in run_dir.iterdir()
        if p.is_dir() and ((p / PARAMS_FILE).is_file() or (p / RESULT_FILE).is_file())
    ]
    return sorted(dirs, key=lambda p: (_trial_index(p.name), p.name))  # creation order


def read_trial(path: Path) -> TrialFolder:
    results, skipped = _read_json_lines(path / RESULT_FILE)
    params = _read_object(path / PARAMS_FILE)
    config = _read_object(path / TRIAL_CONFIG_FILE) or None
    trial_id = next((str(r["trial_id"]) for r in results if r.get("trial_id")), None)
    if trial_id is not None:
        try:  # it names export files: an id like ../x would write outside the run folder
            safe_name(trial_id, "`trial_id`")
        except InputError as e:
            raise RunFolderError(f"{path / RESULT_FILE}: {e}") from None
    trial_id = trial_id or trial_id_from_dirname(path.name) or path.name
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


def _nested_run_hint(folder: Path) -> str:
    """Point at run folders one level down: a user who passes ``runs/`` means one of them."""
    try:
        runs = sorted(p.name for p in folder.iterdir() if is_run_folder(p))
    except OSError:
        return ""
    if not runs:
        return ""
    shown = ", ".join(str(folder / r) for r in runs[:5])
    more = f" and {len(runs) - 5} more" if len(runs) > 5 else ""
    return f"; run folders inside it: {shown}{more}"
