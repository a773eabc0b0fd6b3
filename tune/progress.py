"""Terminal progress for a search: one line per validation and per finished trial, then a summary.

Ray's own table cannot show our columns (gain over bicubic, trial outcome) under its current
output engine, so the driver silences it and prints these lines instead.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from analysis import run_folder
from analysis.result_row import ResultRow
from analysis.run_folder import ERROR_FILE
from tune._spec_types import SearchSpec

REFERENCE_POLL_S = 5.0  # how often the driver looks for the reference run's new validations


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


class ProgressPrinter(Callback):
    def __init__(self, spec: SearchSpec, run_dir: str | None = None) -> None:
        self.spec = spec  # folds sampled values into the trial's config
        self.max_epochs = spec.base.epochs
        self._last: dict[str, ResultRow] = {}
        # The reference run beside the search (tune.reference) writes its own results there.
        self._reference_dir = (run_dir if run_dir and spec.include_defaults
                               and not spec.reference_inside else None)
        self._reference_epoch = 0
        self._reference_looked = 0.0  # monotonic time of the last look at its results
        self._best = (-math.inf, "")

    def _reference(self) -> str:
        """A line for each validation of the reference run not yet printed, and ' | reference
        25.1 dB at epoch 6' when it has reported ('' before): its best PSNR so far and the epoch
        it was reached at, as the leaderboard gives them."""
        if self._reference_dir is None:
            return ""
        from tune.reference import validations

        self._reference_looked = time.monotonic()
        rows = validations(Path(self._reference_dir))
        for r in rows:
            if r.epoch > self._reference_epoch:
                self._reference_epoch = r.epoch
                self._print(f"[epoch {r.epoch:>3}/{self.max_epochs}] reference (source defaults)  "
                            f"PSNR {r.psnr:7.3f} dB  gain {r.gain_db:+.3f} dB  {r.status}")
        if not rows:
            return ""
        r = rows[-1]
        return f" | reference {r.best_psnr:.3f} dB at epoch {r.best_epoch}"

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        # The reference run reports to no callback: its validations are looked for between the
        # trials' results too, every few seconds, so each gets its line when it comes.
        if time.monotonic() - self._reference_looked >= REFERENCE_POLL_S:
            self._reference()

    def _params(self, sampled: Mapping[str, Any]) -> str:
        try:
            cfg = self.spec.trial_config(sampled).to_dict()
        except Exception:  # a progress line must never stop the search
            return str(dict(sampled))
        # A conditional choice's own parameters too, those of the chosen branch only.
        return " ".join(f"{p.name}={_fmt(cfg[p.name])}" for p in self.spec.active(sampled))

    def _print(self, line: str) -> None:
        # sys.stdout looked up each time: the callback is pickled with the experiment state.
        print(line, file=sys.stdout, flush=True)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self._print(f"[start]   {trial.trial_id}  {self._params(trial.config)}")

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict[str, Any], **info: Any) -> None:
        row = ResultRow.from_json(result)
        if row is None:
            return
        self._last[trial.trial_id] = row
        running = sum(t.status == "RUNNING" for t in trials)
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        self._print(f"[epoch {row.epoch:>3}/{self.max_epochs}] {trial.trial_id}  "
                    f"PSNR {row.psnr:7.3f} dB  gain {row.gain_db:+.3f} dB  {row.status}  "
                    f"({running} running, {done} done)")
        self._reference()

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info: Any) -> None:
        last = self._last.get(trial.trial_id)
        status = last.status if last else "?"
        if last and status == "running":
            status = f"stopped early at epoch {last.epoch}"
        best = last.best_psnr if last else math.nan
        if best > self._best[0]:
            self._best = (best, trial.trial_id)
        self._print(f"[done]    {trial.trial_id}  {status}  best PSNR {best:.3f} dB  "
                    f"(best so far {self._best[0]:.3f} dB, {self._best[1]}{self._reference()})")

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial,
                         **info: Any) -> None:
        """One line for a failed attempt that Ray retries (Ray's own traceback and raylet lines
        are shown only under -v): where it ran, how it ended, the epoch the retry starts from."""
        from tune.ray_edge.trials import restart_epoch

        self._print(f"[retry]   {trial.trial_id}  {_lost_attempt(trial)}; retry "
                    f"{trial.num_failures} of {trial.max_failures} from epoch "
                    f"{restart_epoch(trial)}")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self._print(f"[error]   {trial.trial_id}  {_lost_attempt(trial)}; no retry left (see "
                    f"{Path(trial.path or '') / ERROR_FILE})")


def _lost_attempt(trial: Trial) -> str:
    """'attempt 1 on node 10.0.0.2 (gpu-7) died with its node or process', or '... failed:
    ValueError: ...': the trial's last attempt as its placement line tells it."""
    attempts = run_folder.read_attempts(Path(trial.path or ""))
    if not attempts:
        return "failed before it started"
    last = attempts[-1]
    where = f"attempt {last.get('attempt', len(attempts))} on node {last.get('node_ip', '?')}"
    if last.get("hostname"):
        where += f" ({last['hostname']})"
    if last.get("error"):
        return f"{where} failed: {last['error']}"
    if last.get("finished"):
        return f"{where} failed after its end"
    return f"{where} died with its node or process"
