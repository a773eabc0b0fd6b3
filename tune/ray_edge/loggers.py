"""What Ray's TensorBoard logger writes as a trial's HParams.

Ray 2.60's `TBXLoggerCallback` logs ``trial.evaluated_params`` as HParams, dropping what
tensorboardX cannot type: a list, such as a trial's ``lr_scheduler_milestones``, arrives with no
value at all, so the HParams dashboard could not show or plot the milestones. Here each searched
parameter is logged in the user's form, through `analysis.record.ParamRange`: a scalar as it is,
a milestone list as its text ("[0.3, 0.7]") plus the scalars a plot needs (``/count``,
``/first``, ``/last``). Everything else about the event files is Ray's.

The reference run (`tune.reference`, no Ray trial) writes its event files through the same
logger (`FolderLogger`), so its curves carry the trials' tags (``ray/tune/psnr``, ...), sit at
the same steps and overlay theirs in ``tensorboard --logdir RUN_DIR``, with HParams of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from ray.tune.experiment import Trial
from ray.tune.logger import TBXLoggerCallback

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


class HParamsLogger(TBXLoggerCallback):
    """Ray's TensorBoard logger with the searched parameters in the user's form."""

    def __init__(self, params: tuple[ParamRange, ...]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Ray's __init__ has no annotations
        self._params = params

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
        """One validation, as Ray logs a trial's report (step: its ``training_iteration``)."""
        self._logger.log_trial_result(row.training_iteration or 0, self._trial, row.to_json())

    def end(self) -> None:
        """The HParams with the last result's scalars, then close the file (as at a trial's
        end, finished or failed)."""
        self._logger.log_trial_end(self._trial)
