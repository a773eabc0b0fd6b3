"""How each trial ended, in its folder, for `analysis.outcomes`: Ray's error.txt cannot say.

Ray 2.60 retries a failed attempt (an error, a lost node) up to ``max_failures`` times and leaves
the failure's ``error.txt`` in the trial folder even when the retry completes (measured with a
node killed mid-trial), so that file says nothing about how the trial ended. Ray says it in its
callbacks instead: ``on_trial_recover`` (an attempt failed and is retried) and ``on_trial_error``
(an attempt failed with no retry left). `TrialStates` writes what they say into the trial's
``trial_state.json`` (`analysis.run_folder.TrialState`). Imports Ray: import it after Ray's
settings are in the environment (`tune.ray_edge.environment`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from analysis import run_folder
from analysis.run_folder import TrialState


class TrialStates(Callback):
    """Each trial's failures, and whether it ended in error. A run resumed with
    ``resume_errored`` starts an errored trial again: ``on_trial_start`` takes the error back."""

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        folder = Path(trial.path or "")
        state = run_folder.read_trial_state(folder)
        if state is not None and state.errored:
            run_folder.write_trial_state(folder, TrialState(state.failures, errored=False))

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial,
                         **info: Any) -> None:
        run_folder.write_trial_state(Path(trial.path or ""),
                                     TrialState(trial.num_failures, errored=False))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        run_folder.write_trial_state(Path(trial.path or ""),
                                     TrialState(trial.num_failures, errored=True))
