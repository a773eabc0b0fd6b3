"""``RUN_DIR/README.txt``: what a person opening the run folder needs, in plain text.

Written when a search starts (or resumes) and rewritten when it ends: what was searched, the
command, the command that resumes it, where the report, tables, exports and the reference run
are, and the best trial (so far, while the search runs). It is derived from the run record
(``espcn_tune.record``); nothing reads it back.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from analysis.record import META_FILE, BestTrial, RunRecord
from analysis.run_folder import (
    EXPORT_SUBDIR,
    OPTUNA_FILE,
    PARAMS_FILE,
    REFERENCE_DIR,
    REPORT_SUBDIR,
    RESULT_FILE,
    RETRAIN_SUBDIR,
    TABLES_SUBDIR,
)

README = "README.txt"


def write_readme(run_dir: Path, rec: RunRecord, resume_command: str) -> Path:
    """Write ``run_dir/README.txt`` from the run's record (its ``best_trial`` is what the final
    summary found; None while the search runs or when nothing validated)."""
    q = shlex.quote(str(run_dir))
    searched = [f"  {p.name}: {p.describe()}" for p in rec.params]
    b = rec.budget
    budget = (f"{b.epochs} epochs of {b.epoch_samples} samples, validation every "
              f"{b.validation_interval}" if b else "not recorded")
    lines = [
        f"espcn-tune run {run_dir.name}",
        "",
        f"started {rec.started}; "
        + (f"finished {rec.finished}" if rec.finished else "not finished (running, or interrupted)"),
        f"space file: {rec.space_file}",
        f"budget per trial: {budget}",
        "searched:",
        *(searched or ["  nothing"]),
        "",
        "command:",
        f"  {shlex.join(rec.command) or 'not recorded'}",
        *(["resume: nothing to resume, the search finished (a --resume of it says so and "
           "starts nothing)"] if rec.finished else
          ["resume (finishes an interrupted search; repeats nothing already reported):",
           f"  {resume_command}"]),
        "",
        "best trial:" if rec.finished else "best trial so far:",
        f"  {_best(rec.best_trial, rec.finished)}",
        "",
        "where things are:",
        f"  report   {REPORT_SUBDIR}/index.html    python -m analysis {q}",
        f"  tables   {TABLES_SUBDIR}/*.parquet      (written with the report)",
        f"  exports  {EXPORT_SUBDIR}/<trial>.yaml + .pt    python -m analysis.export {q}",
        f"  retrain  {RETRAIN_SUBDIR}/retrain.json    python -m analysis.retrain {q}",
        f"  upscale  python -m trainable.upscale --weights {EXPORT_SUBDIR}/<trial>.pt "
        f"--config {EXPORT_SUBDIR}/<trial>.yaml VIDEO --out OUT.mp4",
        f"  reference run (the source document's defaults)   {REFERENCE_DIR}/",
        f"  trials   one folder per trial ({PARAMS_FILE}, {RESULT_FILE}, checkpoint_*/, "
        f"{OPTUNA_FILE}: its number in the Optuna study)",
        f"  {META_FILE}   the run's own record (spec, budget, versions); README.txt is "
        "written from it",
    ]
    path = Path(run_dir) / README
    tmp = path.with_name(f".{README}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _best(best: BestTrial | None, finished: str | None) -> str:
    if best is None:
        return ("none validated without error" if finished
                else "not yet known: the search is running (python -m analysis shows it live)")
    over = (f", {best.best_psnr - best.bicubic_psnr:+.2f} dB over bicubic"
            if best.bicubic_psnr else "")
    return (f"{best.trial_id}: {best.best_psnr:.3f} dB at epoch {best.best_epoch}{over}"
            f" ({best.path})")
