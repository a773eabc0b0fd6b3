"""A run folder as two tables: one row per reported validation, one row per trial.

``load_run`` parses the JSON-lines files directly (no Ray, no cluster), so it works on finished and
interrupted runs alike. ``write_tables`` stores both tables as Parquet (pyarrow), readable by
pandas, polars and DuckDB.

The per-trial outcome and the defaults trial are derived in ``analysis.outcomes``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import _io, record
from analysis.outcomes import mark_defaults, outcome, retries
from analysis.record import ParamRange, RunFolderError, RunRecord
from analysis.result_row import ResultRow
from analysis.run_folder import REFERENCE_DIR, TrialFolder, find_trial_dirs, read_trial

log = logging.getLogger(__name__)

RESULTS_FILE = "results.parquet"
TRIALS_FILE = "trials.parquet"
FRAMES = "psnr_frames"  # per-target-frame PSNR of a validation, the same frames for every trial
RESULT_COLUMNS = ("trial", "epoch", "samples", "psnr", "ssim", "loss", "lr", "time", "status",
                  "gain_db", "bicubic_psnr", "bicubic_ssim", "samples_per_s", "data_time_share",
                  "timestamp", FRAMES)
TRIAL_COLUMNS = (
    "trial", "dir", "optuna_trial", "config", "best_psnr", "best_ssim", "best_epoch", "gain_db", "last_psnr",
    "last_ssim", "last_gain_db", "epochs_trained", "samples_trained", "bicubic_psnr",
    "bicubic_ssim", "outcome", "retries", "is_defaults", "is_reference", "error", "error_summary", "reason",
    "n_reports",
    "has_checkpoint", "time_s", "started_at", "ended_at", f"best_{FRAMES}", f"last_{FRAMES}",
)


@dataclass
class Run:
    run_dir: Path
    record: RunRecord
    results: pd.DataFrame  # one row per reported validation
    trials: pd.DataFrame  # one row per trial, in creation order
    # Each searched parameter (a TrainConfig field) -> its trials column, in the user's form (a
    # milestone list is a list of fractions); the leaderboard shows these.
    param_columns: dict[str, str] = field(default_factory=dict)
    # Each scalar a plot or an importance needs -> its trials column: the numeric and choice
    # parameters themselves, a milestone list's count, first and last drop.
    scalar_columns: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.record.name or self.run_dir.name

    @property
    def searched(self) -> list[str]:
        return list(self.param_columns)

    @property
    def finished(self) -> bool:
        return self.record.finished is not None

    @property
    def max_epochs(self) -> int | None:
        return self.record.budget.epochs if self.record.budget else None

    @property
    def rungs(self) -> list[int]:
        return list(self.record.scheduler.rungs)

    @property
    def evaluation(self) -> str:
        return self.record.evaluation or "evaluation convention not recorded"

    def scalar_range(self, name: str) -> ParamRange:
        """The range of one of `scalar_columns` (kind "unrecorded" where the run kept none)."""
        for p in self.ranges():
            if name in p.scalar_names():
                return p.scalar_range(name)
        return ParamRange(name, "unrecorded")

    def ranges(self) -> list[ParamRange]:
        """The searched parameters' ranges; one the run did not record is "unrecorded"."""
        return [self.record.param(n) or ParamRange(n, "unrecorded") for n in self.param_columns]

    def trial(self, trial_id: str) -> pd.Series:
        """The trial's row; an unknown id raises with the list of valid ones."""
        hit = self.trials[self.trials["trial"] == trial_id]
        if hit.empty:
            valid = ", ".join(self.trials["trial"])
            raise RunFolderError(f"{self.run_dir}: no trial {trial_id!r}; valid trial ids: {valid}")
        return hit.iloc[0]

    def wall_time_s(self) -> float | None:
        """started -> finished from the run record; for an unfinished run, to the last report."""
        start = parse_time(self.record.started)
        end = parse_time(self.record.finished)
        if end is None and not self.trials["ended_at"].dropna().empty:
            end = float(self.trials["ended_at"].max())
        return None if start is None or end is None else end - start


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    rec = record.read(run_dir)
    folders = [read_trial(p) for p in find_trial_dirs(run_dir)]
    searched = rec.searched or _names_in(folders)
    ranges = {p.name: p for top in rec.params for p in top.walk()}
    scalars = [s for n in searched for s in (ranges[n].scalar_names() if n in ranges else [n])]
    columns = {p: (f"param_{p}" if p in TRIAL_COLUMNS else p)
               for p in dict.fromkeys([*searched, *scalars])}
    rows: list[dict[str, Any]] = []
    trial_rows: list[dict[str, Any]] = []
    for folder in folders:
        reports = _dedupe_epochs(folder.results)
        rows.extend(_result_row(folder.trial_id, r) for r in reports)
        trial_rows.append(_trial_row(folder, reports, rec, searched, ranges, columns))
    results = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    results = results.astype({"trial": "string", "status": "string"})
    for col in ("epoch", "samples"):
        results[col] = results[col].astype("Int64")
    trials = pd.DataFrame(trial_rows)
    if trials.empty:
        trials = pd.DataFrame(columns=["trial", *columns.values(), *TRIAL_COLUMNS[1:]])
    else:
        trials = _normalise_param_columns(trials, list(columns.values()))
        trials["best_epoch"] = trials["best_epoch"].astype("Int64")
        trials["optuna_trial"] = trials["optuna_trial"].astype("Int64")
        trials["retries"] = trials["retries"].astype("Int64")
    trials = mark_defaults(trials, rec.default_config, searched)
    return Run(run_dir, rec, results, trials, {p: columns[p] for p in searched},
               {p: columns[p] for p in scalars})


def write_tables(run: Run, out_dir: str | Path) -> tuple[Path, Path]:
    """Write results.parquet and trials.parquet into ``out_dir``; returns both paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    schema_meta = {
        b"espcn_tune.run": run.name.encode(),
        b"espcn_tune.params": json.dumps({p.name: p.to_json() for p in run.ranges()}).encode(),
        b"espcn_tune.searched": json.dumps(run.searched).encode(),
        b"espcn_tune.evaluation": run.evaluation.encode(),
    }
    paths = []
    for name, df in ((RESULTS_FILE, run.results), (TRIALS_FILE, run.trials)):
        table = pa.Table.from_pandas(df, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **schema_meta})
        paths.append(_io.write_atomic(out_dir / name, functools.partial(pq.write_table, table)))
    return paths[0], paths[1]


def parse_time(value: Any) -> float | None:
    """ISO time (``...Z`` accepted on Python 3.10 too) -> POSIX seconds; None stays None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --- private helpers -----------------------------------------------------------------------------
def _names_in(folders: list[TrialFolder]) -> list[str]:
    """A run that recorded no searched names: every key of any trial's params.json."""
    names: dict[str, None] = {}
    for f in folders:
        names.update(dict.fromkeys(f.params))
    return list(names)


def _dedupe_epochs(results: list[ResultRow]) -> list[ResultRow]:
    """Validation reports in epoch order; a repeated epoch (a resumed trial, Ray's final duplicate
    result) keeps its last report. An ``infeasible`` report (out of memory: worst-case numbers at
    the full budget, zero samples) is no validation and stays out."""
    by_epoch = {r.epoch: r for r in results if r.is_validation}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _num(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _result_row(trial_id: str, r: ResultRow) -> dict[str, Any]:
    return {"trial": trial_id, "epoch": r.epoch, "samples": r.samples, "psnr": r.psnr,
            "ssim": r.ssim, "loss": r.loss, "lr": r.lr, "time": _num(r.time_total_s),
            "status": r.status or None, "gain_db": _gain(r), "bicubic_psnr": r.bicubic_psnr,
            "bicubic_ssim": r.bicubic_ssim, "samples_per_s": r.samples_per_s,
            "data_time_share": r.data_time_share, "timestamp": _num(r.timestamp),
            FRAMES: _frames(r)}


def _trial_row(
    folder: TrialFolder,
    reports: list[ResultRow],
    rec: RunRecord,
    searched: list[str],
    ranges: dict[str, ParamRange],
    columns: dict[str, str],
) -> dict[str, Any]:
    config = next((r.trial_config for r in reports if r.trial_config is not None), folder.config)
    # optuna_trial: the trial's number in the Optuna study (optuna-dashboard's #), where it has one.
    row: dict[str, Any] = {"trial": folder.trial_id, "dir": folder.path.name,
                           "optuna_trial": folder.optuna_number}
    # The trial's full config holds every searched value in the user's form; params.json is the
    # fallback (a trial that never reported). A run from before the user's form kept the
    # searcher's scalars in params.json, so the config comes first. A parameter under a
    # conditional choice's other branch is not the trial's: left empty (null).
    values = {n: (config or {}).get(n, folder.params.get(n)) for n in searched}
    has = {p.name for p in record.active(rec.params, values)} if rec.params else set(searched)
    for name in searched:
        value = values[name] if name in has else None
        row[columns[name]] = _param_value(value)
        if name in ranges:
            for scalar, v in ranges[name].scalars(value).items():
                if scalar != name:
                    row[columns[scalar]] = v
    row["config"] = json.dumps(config, sort_keys=True) if config is not None else None
    scored = [r for r in reports if math.isfinite(r.psnr)]
    best = max(scored, key=lambda r: (r.psnr, -r.epoch), default=None)
    last = reports[-1] if reports else None
    for prefix, r in (("best", best), ("last", last)):
        row[f"{prefix}_psnr"] = r.psnr if r else math.nan
        row[f"{prefix}_ssim"] = r.ssim if r else math.nan
        row["gain_db" if prefix == "best" else "last_gain_db"] = _gain(r) if r else math.nan
        row[f"{prefix}_{FRAMES}"] = _frames(r) if r else None
    row["best_epoch"] = best.epoch if best else None
    row["epochs_trained"] = last.epoch if last else 0
    row["samples_trained"] = last.samples if last else 0
    row["bicubic_psnr"] = last.bicubic_psnr if last else math.nan
    row["bicubic_ssim"] = last.bicubic_ssim if last else math.nan
    max_epochs = ((rec.budget.epochs if rec.budget else None) or (last.max_epochs if last else None)
                  or _config_epochs(config))
    row["outcome"] = outcome(folder, last, max_epochs, rec.scheduler, rec.finished is not None)
    row["retries"] = retries(folder)  # attempts started again after a failure (null: unknown)
    row["is_defaults"] = False
    row["is_reference"] = folder.path.name == REFERENCE_DIR  # beside the search, never sampled
    row["error"] = row["outcome"] == "error"  # its last attempt failed: never ranked, exported
    row["error_summary"] = _error_summary(folder.error_text)
    row["reason"] = next((r.reason for r in reversed(folder.results) if r.reason),
                         None)  # why a trial was infeasible (the out-of-memory message)
    row["n_reports"] = len(reports)
    row["has_checkpoint"] = bool(folder.checkpoints)
    row["time_s"] = _num(last.time_total_s) if last else math.nan
    # Ray's `timestamp` is POSIX seconds at report time; the first report minus its elapsed time
    # is the trial's start.
    first = reports[0] if reports else None
    first_t = _num(first.time_total_s) if first else math.nan
    row["started_at"] = ((_num(first.timestamp) if first else math.nan)
                         - (first_t if math.isfinite(first_t) else 0.0))
    row["ended_at"] = _num(last.timestamp) if last else math.nan
    return row


def _gain(r: ResultRow) -> float:
    """The row's gain over bicubic; from its PSNRs where it has none (older runs)."""
    return r.gain_db if math.isfinite(r.gain_db) else r.psnr - r.bicubic_psnr


def _frames(r: ResultRow) -> list[float] | None:
    """A report's per-frame PSNRs; None where it has none (older runs) or they are not numbers."""
    return list(r.psnr_frames) or None


def _config_epochs(config: dict[str, Any] | None) -> int | None:
    epochs = (config or {}).get("epochs")
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def _param_value(v: Any) -> Any:
    """Scalars and lists of numbers (a milestone list: a Parquet list column) stay as they are;
    anything else becomes JSON text."""
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | tuple) and all(isinstance(x, int | float) and not isinstance(x, bool)
                                           for x in v):
        return [float(x) for x in v]
    return json.dumps(v, sort_keys=True)


def _error_summary(text: str | None) -> str | None:
    if text is None:
        return None
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "error.txt is empty")[:300]


def _normalise_param_columns(trials: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One type per column (Parquet needs it): a column mixing kinds becomes JSON text."""
    for col in columns:
        kinds = {_kind(v) for v in trials[col] if not _missing(v)}
        if len(kinds) > 1:
            trials[col] = [None if _missing(v) else _as_text(v) for v in trials[col]]
    return trials


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _kind(v: Any) -> str:
    if isinstance(v, list):
        return "list"
    return "bool" if isinstance(v, bool) else "num" if isinstance(v, int | float) else "str"


def _as_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)
