"""Ray's behaviour around one trial: its folder name, its files on a reused actor, which
checkpoints are kept, and which checkpoint a restarted trial resumes from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis import run_folder
from analysis.run_folder import CHECKPOINT_META, CHECKPOINT_PREFIX, CHECKPOINT_STATE

# Trials reuse their actor (no process start per trial: ~3 s each on 2 cores). With reuse, a
# trial's get_trial_dir() stays on the staging side: see `trial_folder`.
REUSE_ACTORS = True

if TYPE_CHECKING:
    from ray.tune import CheckpointConfig
    from ray.tune.experiment import Trial


def trial_dirname(trial: Any) -> str:
    """``trial_0007_4f99c683``: the trial's number in the search and Ray's trial id.

    Ray's own names carry every parameter and a date (often over 200 characters, cut at an
    arbitrary point); the parameters are in the folder's params.json. A module-level function:
    the Tuner pickles it."""
    tag = str(getattr(trial, "experiment_tag", "") or "")
    number = tag.split("_", 1)[0]
    return run_folder.trial_dirname(int(number) if number.isdigit() else 0, trial.trial_id)


def checkpoint_config(scheduler: str, metric: str, mode: str) -> CheckpointConfig:
    """Best by PSNR plus the latest (Ray always keeps the latest), so disks do not fill. PBT keeps
    every checkpoint: its exploit clones another trial's checkpoint of that moment, which the
    cap deleted as soon as that trial reported again ("does not exist on storage anymore", 2 of
    6 trials errored three times in a row on the smoke space)."""
    from ray import tune

    if scheduler == "pbt":
        return tune.CheckpointConfig(num_to_keep=None)
    return tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=metric,
                                 checkpoint_score_order=mode)


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
    recorded = [r.epoch for r in run_folder.read_results(trial_dir)]
    if recorded:
        for d in trial_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            epoch = _checkpoint_epoch(d)
            if (epoch is not None and epoch <= max(recorded) and (d / CHECKPOINT_STATE).is_file()
                    and (ours is None or epoch > ours[0])):
                ours = (epoch, d / CHECKPOINT_STATE)
    return ours[1] if ours else None


def restart_epoch(trial: Trial) -> int:
    """The epoch a retried trial restarts from: that of the checkpoint `resume_checkpoint` will
    give it (0: none, it starts over)."""
    given = Path(trial.checkpoint.path) if trial.checkpoint is not None else None
    start = resume_checkpoint(given, Path(trial.path or ""))
    epoch = _checkpoint_epoch(start.parent) if start is not None else None
    return epoch or 0

