"""One line of a trial's ``result.json``, typed: the one form of a result row on its whole way.

The trainer produces a :class:`~trainable.result.ValidationResult` per validation; a trial hands it
to ``tune.report`` as :meth:`ResultRow.to_json` (Ray adds the trial id, the iteration and the
times), the reference run writes the same rows itself, and everything that reads results (the
tables, the outcomes, the driver's progress lines and summary, the fused-trial engine) reads
:class:`ResultRow`, parsed once by :meth:`ResultRow.from_json`. No other module reads a result
row by key.

The reader is tolerant, as a run folder is untrusted and may come from an older version: a
missing or malformed number is NaN (a count 0), a missing text empty, unknown keys (Ray adds a
dozen) are ignored; a line without an epoch is no row at all.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from trainable.result import ValidationResult

# A trial that could not train (out of memory) reports this status with worst-case numbers.
INFEASIBLE = "infeasible"
_INTS = ("epoch", "samples", "max_epochs", "best_epoch")
_ENVELOPE = ("trial_id", "training_iteration", "timestamp", "time_total_s", "trial_config", "reason")


@dataclass(frozen=True)
class ResultRow(ValidationResult):
    """A validation as the trainer reported it, and what was written around it."""

    trial_id: str | None = None  # Ray's trial id ("reference" for the reference run)
    training_iteration: int | None = None  # the report's number in its trial, from 1
    timestamp: float | None = None  # POSIX seconds at report time
    time_total_s: float | None = None  # seconds the trial had trained when it reported
    trial_config: dict[str, Any] | None = None  # the trial's full TrainConfig
    reason: str | None = None  # why an infeasible trial could not train

    @classmethod
    def of(cls, result: ValidationResult, **envelope: Any) -> ResultRow:
        """``result`` as a row, with the envelope fields given (the rest None)."""
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(ValidationResult)}
        return cls(**fields, **envelope)

    @classmethod
    def infeasible(cls, trial_config: Mapping[str, Any], reason: str, *, psnr: float,
                   ssim: float) -> ResultRow:
        """What a trial that cannot train (out of memory) reports: finite worst-case scores at
        the full budget, zero samples, so ASHA stops it and Optuna records a bad trial."""
        epochs = _int(trial_config.get("epochs"))
        nan = math.nan
        return cls(epoch=epochs, samples=0, max_epochs=epochs, psnr=psnr, ssim=ssim,
                   bicubic_psnr=nan, bicubic_ssim=nan, gain_db=nan, best_psnr=psnr, best_epoch=0,
                   loss=nan, lr=nan, samples_per_s=nan, steps_per_s=nan, data_time_share=nan,
                   status=INFEASIBLE, trial_config=dict(trial_config), reason=reason)

    @property
    def is_validation(self) -> bool:
        """A scored validation (an infeasible trial's report is none)."""
        return self.status != INFEASIBLE

    @property
    def is_final(self) -> bool:
        """The trial ended itself with this row (completed, diverged, infeasible, stopped
        early): it was not running on when it reported."""
        return self.status != "running"

    def to_json(self) -> dict[str, Any]:
        """The row as ``tune.report`` and ``result.json`` take it: the envelope fields that are
        None left out (Ray fills its own), a non-finite number as null (JSON has none)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _ENVELOPE and value is None:
                continue
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ResultRow | None:
        """A row from a ``result.json`` line or a Ray result; None when it names no epoch."""
        epoch = _int(d.get("epoch"), None)
        if epoch is None:
            return None
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            v = d.get(f.name)
            if f.name == "epoch":
                values[f.name] = epoch
            elif f.name in _INTS:
                values[f.name] = _int(v)
            elif f.name == "status":
                values[f.name] = v if isinstance(v, str) else ""
            elif f.name == "psnr_frames":
                values[f.name] = _frames(v)
            elif f.name in ("trial_id", "reason"):
                values[f.name] = None if v is None else str(v)
            elif f.name == "training_iteration":
                values[f.name] = _int(v, None)
            elif f.name in ("timestamp", "time_total_s"):
                values[f.name] = None if v is None else _float(v)
            elif f.name == "trial_config":
                values[f.name] = dict(v) if isinstance(v, Mapping) else None
            else:
                values[f.name] = _float(v)
        return cls(**values)


def rows(lines: Iterable[Mapping[str, Any]]) -> list[ResultRow]:
    """The rows among parsed ``result.json`` lines, in order (lines without an epoch skipped)."""
    return [r for r in map(ResultRow.from_json, lines) if r is not None]


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return math.nan
    try:
        return float(v)
    except ValueError:
        return math.nan


def _int(v: Any, default: Any = 0) -> Any:
    f = _float(v)
    return int(f) if math.isfinite(f) and f == int(f) else default


def _frames(v: Any) -> tuple[float, ...]:
    """Per-frame PSNRs; empty where there are none or one is not a finite number."""
    if not isinstance(v, list | tuple):
        return ()
    nums = tuple(_float(x) for x in v)
    return nums if all(math.isfinite(x) for x in nums) else ()
