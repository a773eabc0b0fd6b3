"""What became of each trial, and which trial ran the source document's defaults.

Per-trial outcome, from the trial's final state and its results, in this order: ``error`` when
the driver recorded that its last attempt failed with no retry left (ranked below everything,
whatever its PSNR); else the last reported status when it is ``completed``, ``diverged`` or
``infeasible``; else, for a trial that stopped before ``max_epochs``: ``stopped by ASHA at rung N
(epoch E)`` (N counts the scheduler's rungs from 1) or ``stopped at epoch E`` when the run has
finished, ``running/interrupted`` when it has not; ``no results`` for a trial that never reported.

A trial that failed and was retried is judged by how its last attempt ended: Ray leaves the first
attempt's ``error.txt`` behind even when the retry completes, so that file decides nothing. Only
a run from before the driver recorded the final state (no ``trial_state.json``) falls back on
it: ``error`` when ``error.txt`` exists and the results do not show the trial's end.

The defaults trial is the first whose full config equals the run record's ``default_config`` on
the keys that matter (see :func:`mark_defaults`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from analysis.record import SchedulerPlan
from analysis.result_row import ResultRow
from analysis.run_folder import TrialFolder

_FINAL_STATUSES = ("completed", "diverged", "infeasible")


def outcome(
    folder: TrialFolder,
    last: ResultRow | None,
    max_epochs: int | None,
    sched: SchedulerPlan,
    finished: bool,
) -> str:
    if folder.state is not None and folder.state.errored:
        return "error"
    # The very last line decides first: an infeasible trial's report is not a validation.
    final = folder.results[-1].status if folder.results else ""
    if final in _FINAL_STATUSES:
        return final
    if folder.state is None and folder.error_text is not None:  # a run from before the state
        return "error"
    if last is None:
        return "no results" if finished else "running/interrupted"
    if last.status in _FINAL_STATUSES:
        return last.status
    epoch = last.epoch
    if max_epochs is None or epoch >= max_epochs:
        return "completed"
    if not finished:
        return "running/interrupted"
    rungs = list(sched.rungs)
    if sched.type == "asha" and epoch in rungs:
        return f"stopped by ASHA at rung {rungs.index(epoch) + 1} (epoch {epoch})"
    return f"stopped at epoch {epoch}"


def retries(folder: TrialFolder) -> int | None:
    """How often the trial was started again after a failed attempt (None: unknown, a run from
    before the driver recorded it whose trial left an ``error.txt``)."""
    if folder.state is not None:
        return folder.state.retries
    return None if folder.error_text is not None else 0


def mark_defaults(
    trials: pd.DataFrame,
    default_config: Any,
    searched: list[str],
) -> pd.DataFrame:
    """Flag the first trial whose full config equals the source document's defaults.

    Compared keys: the config fields any two trials differ in, plus the searched names that are
    config fields; the rest is the run's shared base (budget, data) and says nothing.
    """
    if not isinstance(default_config, dict) or trials.empty:
        return trials
    configs = [json.loads(c) if isinstance(c, str) else None for c in trials["config"]]
    known = [c for c in configs if c]
    varying = {k for k in default_config if len({json.dumps(c.get(k)) for c in known}) > 1}
    keys = varying | (set(searched) & set(default_config))
    if not keys:
        return trials
    for i, cfg in enumerate(configs):
        if cfg and all(_same(cfg.get(k), default_config.get(k)) for k in keys):
            trials.loc[trials.index[i], "is_defaults"] = True
            break
    return trials


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)
