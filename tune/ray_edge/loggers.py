"""What Ray's TensorBoard logger writes of a trial: its steps, its config and its HParams.

Ray 2.60's `TBXLoggerCallback` works around none of this by itself:

- **Steps.** Ray puts a result at its ``timesteps_total`` or else its ``training_iteration``
  (1, 2, 3: the report's number, not the epoch, and not comparable between trials that validate
  at other intervals). Here every result sits at the training samples the trial had seen (the
  budget's unit), handed to Ray as ``timesteps_total`` (which Ray also logs as a scalar).
- **The config.** Every key of a result's ``trial_config`` became a scalar of its own at every
  step (24 constant ``trial_config/*`` curves), and the milestone list a histogram. Here the
  trial's config is written once, as text (``trial_config``, TensorBoard's Text tab), at its
  first result.
- **HParams.** Ray logs ``trial.evaluated_params``, dropping what tensorboardX cannot type: a
  list, such as a trial's ``lr_scheduler_milestones``, arrived with no value at all. Here each
  searched parameter is logged in the user's form, through `analysis.record.ParamRange`: a
  scalar as it is, a milestone list as its text ("[0.3, 0.7]") plus the scalars a plot needs
  (``/count``, ``/first``, ``/last``).

Everything else about the event files is Ray's.

The reference run (`tune.reference`, no Ray trial) writes its event files through the same
logger (`FolderLogger`), so its curves carry the trials' tags (``ray/tune/psnr``, ...), sit at
the same steps and overlay theirs in ``tensorboard --logdir RUN_DIR``, with HParams of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import yaml
from ray.tune.experiment import Trial
from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import TIMESTEPS_TOTAL

from analysis.record import ParamRange
from analysis.result_row import ResultRow

log = logging.getLogger("tune")


def hparams(params: tuple[ParamRange, ...], values: dict[str, Any]) -> dict[str, Any]:
    """A trial's searched values as tensorboardX's HParams take them (str, bool, int, float)."""
    out: dict[str, Any] = {}
    for p in params:
        value = values.get(p.name)
        if p.kind == "milestones":
            out[p.name] = "[" + ", ".join(f"{m:g}" for m in value or ()) + "]"
            out.update({k: v for k, v in p.scalars(value).items() if v is not None})
        elif isinstance(value, list | tuple):
            out[p.name] = str(list(value))
        elif value is not None:
            out[p.name] = value
    return out


def config_text(config: Mapping[str, Any]) -> str:
    """A trial's config as TensorBoard's Text tab shows it: YAML in a Markdown code block."""
    body = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None)
    return "\n".join("    " + line for line in body.splitlines())


class HParamsLogger(TBXLoggerCallback):
    """Ray's TensorBoard logger with samples as steps, the config once as text, and the
    searched parameters in the user's form (see the module)."""

    def __init__(self, params: tuple[ParamRange, ...]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Ray's __init__ has no annotations
        self._params = params

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        row = ResultRow.from_json(result)
        if row is None:  # not a validation of ours: Ray's own logging
            super().log_trial_result(iteration, trial, result)
            return
        first = not self._trial_result.get(trial)  # nothing logged yet into this event file
        shown = {k: v for k, v in result.items() if k != "trial_config"}
        shown[TIMESTEPS_TOTAL] = row.samples
        super().log_trial_result(iteration, trial, shown)
        if first and row.trial_config:
            self._trial_writer[trial].add_text("trial_config", config_text(row.trial_config),
                                               global_step=row.samples)

    def _try_log_hparams(self, trial: Any, result: dict[str, Any]) -> None:
        from tensorboardX.summary import hparams as summary

        try:
            for tag in summary(hparam_dict=hparams(self._params, dict(trial.evaluated_params)),
                               metric_dict=result):
                self._trial_writer[trial].file_writer.add_summary(tag)
        except Exception:  # noqa: BLE001 - as Ray's own: a logging failure never stops a search
            log.exception("TensorboardX failed to log the HParams of trial %s", trial)


class _FolderTrial:
    """What Ray 2.60's TBX logger reads of a trial (``local_path``, ``init_local_path``,
    ``evaluated_params``), for a folder that no Ray trial owns."""

    def __init__(self, folder: Path, evaluated_params: Mapping[str, Any]) -> None:
        self.local_path = str(folder)
        self.evaluated_params = dict(evaluated_params)

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)

    def __str__(self) -> str:
        return Path(self.local_path).name


class FolderLogger:
    """TensorBoard event files in ``folder`` exactly as Ray writes a trial's: every result (one
    result.json row) through Ray's own `TBXLoggerCallback`, and at the end the HParams of
    ``values`` (the folder's values of the searched parameters) as `HParamsLogger` logs them."""

    def __init__(self, params: tuple[ParamRange, ...], folder: Path,
                 values: Mapping[str, Any]) -> None:
        self._logger = HParamsLogger(params)
        # Not a Ray trial: it has what the TBX logger reads of one (`_FolderTrial`).
        self._trial = cast(Trial, _FolderTrial(folder, values))
        self._logger.log_trial_start(self._trial)

    def result(self, row: ResultRow) -> None:
        """One validation, as a trial's report is logged (step: its samples)."""
        self._logger.log_trial_result(row.training_iteration or 0, self._trial, row.to_json())

    def end(self) -> None:
        """The HParams with the last result's scalars, then close the file (as at a trial's
        end, finished or failed)."""
        self._logger.log_trial_end(self._trial)
