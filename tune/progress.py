"""Terminal progress for a search: one line per validation and per finished trial, then a summary.

Ray's own table cannot show our columns (gain over bicubic, trial outcome) under its current
output engine, so the driver silences it and prints these lines instead.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from tune._spec_types import SearchSpec


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
        self._last: dict[str, Mapping[str, Any]] = {}
        # The reference run beside the search (tune.reference) writes its own results there.
        self._reference_dir = (run_dir if run_dir and spec.include_defaults
                               and not spec.reference_inside else None)
        self._reference_epoch = 0
        self._best = (-math.inf, "")

    def _reference(self) -> str:
        """' | reference 25.1 dB at epoch 6' when the reference run has reported ('' before):
        its best PSNR so far and the epoch it was reached at, as the leaderboard gives them."""
        if self._reference_dir is None:
            return ""
        from pathlib import Path

        from tune.reference import latest

        r = latest(Path(self._reference_dir))
        if not r:
            return ""
        if r.get("epoch", 0) > self._reference_epoch:
            self._reference_epoch = r["epoch"]
            self._print(f"[epoch {r['epoch']:>3}/{self.max_epochs}] reference (source defaults)  "
                        f"PSNR {r.get('psnr', math.nan):7.3f} dB  gain "
                        f"{r.get('gain_db', math.nan):+.3f} dB  {r.get('status', '')}")
        return (f" | reference {r.get('best_psnr', math.nan):.3f} dB at epoch "
                f"{r.get('best_epoch', r.get('epoch'))}")

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
        self._last[trial.trial_id] = result
        psnr, gain = result.get("psnr", math.nan), result.get("gain_db", math.nan)
        running = sum(t.status == "RUNNING" for t in trials)
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        self._print(f"[epoch {result.get('epoch', 0):>3}/{self.max_epochs}] {trial.trial_id}  "
                    f"PSNR {psnr:7.3f} dB  gain {gain:+.3f} dB  {result.get('status', '')}  "
                    f"({running} running, {done} done)")
        self._reference()

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info: Any) -> None:
        last = self._last.get(trial.trial_id, {})
        status = last.get("status", "?")
        if status == "running":
            status = f"stopped early at epoch {last.get('epoch')}"
        best = last.get("best_psnr", math.nan)
        if isinstance(best, float | int) and best > self._best[0]:
            self._best = (best, trial.trial_id)
        self._print(f"[done]    {trial.trial_id}  {status}  best PSNR {best:.3f} dB  "
                    f"(best so far {self._best[0]:.3f} dB, {self._best[1]}{self._reference()})")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self._print(f"[error]   {trial.trial_id}  see {trial.local_path}/error.txt")
