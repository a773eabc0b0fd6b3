"""Ray's OptunaSearch, telling Optuna the truth about stopped trials.

Ray 2.60's `OptunaSearch` reports a trial's validations to Optuna as intermediate values at Ray's
``training_iteration`` (1, 2, 3: not the epoch), but never the last one: a result on which the
scheduler stops the trial, and a trial's final result, go to ``on_trial_complete`` instead, which
tells the study COMPLETE with that value. So an ASHA-stopped trial looked like a finished one
with its first rung's PSNR as its score, and a trial stopped at its first rung had no curve at all
(measured on the main job: 7 of 12 trials with no intermediate value).

Here every validation is an intermediate value at its epoch, and a trial that ends before the
budget's last epoch without having failed (stopped by ASHA, HyperBand or the median rule) is told
PRUNED: optuna-dashboard then shows its curve and that it was stopped. TPE ranks complete trials
before pruned ones, and pruned ones among themselves by how far they got, then by value (Optuna's
own rule for pruned trials). Diverged and infeasible trials stay COMPLETE with the worst score, so
TPE learns to avoid them.

Nothing in Ray links an Optuna trial to its trial folder (``trial_0003_...`` is Optuna's #2 when
the defaults were not enqueued). Here each Optuna trial gets the user attributes ``ray_trial_id``
(when it is asked for) and ``trial_dir`` (the folder's name in the run folder, at its first
validation, while the trial still runs), and the folder gets ``optuna_trial.json`` (the study and
the number, `analysis.run_folder.write_optuna_trial`), which the tables and the leaderboard read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from analysis import run_folder
from analysis.result_row import INFEASIBLE, ResultRow

log = logging.getLogger("tune")

# A trial that ended itself with one of these statuses is a bad configuration, not a stopped one.
_ENDED_BY_ITSELF = ("diverged", INFEASIBLE)


class PruningOptunaSearch(OptunaSearch):
    """`OptunaSearch` with epochs as steps and early-stopped trials PRUNED (see the module)."""

    def __init__(self, *args: Any, time_attr: str, max_t: int, run_dir: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._time_attr = time_attr
        self._max_t = max_t
        # Epochs already on each trial's curve: Ray hands a completed trial's last result to
        # on_trial_result and again to on_trial_complete (Optuna warns at a repeated step).
        self._steps: dict[str, set[int]] = {}
        # The run folder, where the trial folders are (None: no links), and the trials linked.
        # Kept with the searcher's state, as the study's own journal path is: a run folder moved
        # between a start and its resume keeps neither.
        self._run_dir = run_dir
        self._linked: set[str] = set()

    @property
    def _study(self) -> optuna.Study:
        # Ray's study, set up before any trial runs. Ray assigns `_ot_study = None` in __init__
        # without an annotation, so a type checker takes it for None for good.
        return cast(optuna.Study, self._ot_study)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        if config is not None and trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr("ray_trial_id", trial_id)
        return config

    def _link(self, trial_id: str) -> None:
        """Name the trial's folder on its Optuna trial, and its Optuna number in the folder; tried
        again at the next result while the folder is not there yet."""
        if self._run_dir is None or trial_id in self._linked or trial_id not in self._ot_trials:
            return
        folder = next(Path(self._run_dir).glob(f"trial_*_{trial_id}"), None)
        if folder is None:
            return
        ot_trial = self._ot_trials[trial_id]
        try:
            ot_trial.set_user_attr("trial_dir", folder.name)
            run_folder.write_optuna_trial(folder, self._study.study_name, ot_trial.number,
                                          trial_id)
        except Exception as exc:  # noqa: BLE001 - a missing link never fails the search
            log.warning("could not link Optuna trial #%d to %s: %s", ot_trial.number, folder, exc)
        self._linked.add(trial_id)

    def _report(self, trial_id: str, result: dict[str, Any] | None) -> bool:
        """Record one validation at its epoch; False where there is nothing to record."""
        if (not isinstance(self.metric, str) or not result or self.metric not in result
                or self._time_attr not in result or trial_id in self._completed_trials
                or trial_id not in self._ot_trials):
            return False
        value, step = result[self.metric], result[self._time_attr]
        if value is None or step is None:
            return False
        self._link(trial_id)  # before Optuna is told the trial's end: it still runs
        steps = self._steps.setdefault(trial_id, set())
        if int(step) not in steps:
            self._ot_trials[trial_id].report(float(value), int(step))
            steps.add(int(step))
        return True

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if not self._report(trial_id, result):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        if error or result is None or not self._report(trial_id, result):
            super().on_trial_complete(trial_id, result, error)
            return
        row = ResultRow.from_json(result)
        stopped = (int(result[self._time_attr]) < self._max_t
                   and (row is None or row.status not in _ENDED_BY_ITSELF))
        if not stopped:
            super().on_trial_complete(trial_id, result, error)
            return
        try:  # Optuna takes the last intermediate value as a pruned trial's value
            self._study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
        except Exception as exc:  # noqa: BLE001 - as Ray's own tell: never fail the search
            log.warning("Optuna refused trial %s as pruned: %s", trial_id, exc)
        self._completed_trials.add(trial_id)
