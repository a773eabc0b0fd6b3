"""Read a finished or interrupted run folder (``runs/NAME``) without Ray: tables, leaderboard,
report, export.

    run = load_run("runs/smoke")          # Run: its record, results and trials DataFrames
    write_tables(run, "runs/smoke/analysis")   # results.parquet, trials.parquet
    print(leaderboard.render(run, scope="best"))
    write_report(run, "runs/smoke/report")     # index.html + PNG figures
    export_trial(run, fmt="yaml")              # winner's config (+ weights) under runs/smoke/export
    retrain.retrain(run, seeds=3)              # winner vs defaults on the test split, retrain.json

Command lines: ``python -m analysis RUN_DIR``, ``python -m analysis.export RUN_DIR`` and
``python -m analysis.retrain RUN_DIR`` (``analysis.export --retrain`` is its alias).
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that `python -m analysis.export` does not pay for matplotlib and
# `import analysis` stays cheap.
_API = {
    "Run": "analysis.tables",
    "load_run": "analysis.tables",
    "write_tables": "analysis.tables",
    "RunFolderError": "analysis.record",
    "write_report": "analysis.report",
    "export_trial": "analysis.export",
}
__all__ = ["leaderboard", *_API]


def __getattr__(name: str) -> Any:
    if name == "leaderboard":
        return importlib.import_module("analysis.leaderboard")
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
