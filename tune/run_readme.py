"""``RUN_DIR/README.txt``: what a person opening the run folder needs, in plain text.

Written when a search starts (or resumes) and rewritten when it ends: what was searched, the
command, the command that resumes it, where the report, tables, exports and the reference run
are, and the best trial so far. It is derived from the run record (``espcn_tune.record``);
nothing reads it back.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from analysis.run_folder import (
    EXPORT_SUBDIR,
    META_FILE,
    PARAMS_FILE,
    REFERENCE_DIR,
    REPORT_SUBDIR,
    RESULT_FILE,
    TABLES_SUBDIR,
)

README = "README.txt"


def write_readme(run_dir: Path, meta: dict[str, Any], resume_command: str,
                 best: dict[str, Any] | None = None) -> Path:
    """Write ``run_dir/README.txt`` from the run's metadata; ``best`` is what the final summary
    returned (None while the search runs or when nothing validated)."""
    q = shlex.quote(str(run_dir))
    params = (meta.get("spec") or {}).get("params") or {}
    searched = [f"  {name}: {_range(params.get(name))}" for name in meta.get("searched") or []]
    finished = meta.get("finished")
    lines = [
        f"espcn-tune run {run_dir.name}",
        "",
        f"started {meta.get('started')}; "
        + (f"finished {finished}" if finished else "not finished (running, or interrupted)"),
        f"space file: {meta.get('space_file')}",
        f"budget per trial: {meta.get('max_epochs')} epochs of {meta.get('epoch_samples')} "
        f"samples, validation every {meta.get('validation_interval')}",
        "searched:",
        *(searched or ["  nothing"]),
        "",
        "command:",
        f"  {shlex.join(map(str, meta.get('command') or [])) or 'not recorded'}",
        "resume (finishes an interrupted search; repeats nothing already reported):",
        f"  {resume_command}",
        "",
        "best trial so far:",
        f"  {_best(best, finished)}",
        "",
        "where things are:",
        f"  report   {REPORT_SUBDIR}/index.html    python -m analysis {q}",
        f"  tables   {TABLES_SUBDIR}/*.parquet      (written with the report)",
        f"  exports  {EXPORT_SUBDIR}/<trial>.yaml + .pt    python -m analysis.export {q}",
        f"  upscale  python -m trainable.upscale --weights {EXPORT_SUBDIR}/<trial>.pt "
        f"--config {EXPORT_SUBDIR}/<trial>.yaml VIDEO --out OUT.mp4",
        f"  reference run (the source document's defaults)   {REFERENCE_DIR}/",
        f"  trials   one folder per trial ({PARAMS_FILE}, {RESULT_FILE}, checkpoint_*/)",
        f"  {META_FILE}   the run's own record (spec, budget, versions); README.txt is "
        "written from it",
    ]
    path = Path(run_dir) / README
    tmp = path.with_name(f".{README}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _range(rule: Any) -> str:
    if isinstance(rule, dict) and len(rule) == 1:
        (kind, values), = rule.items()
        return f"{kind} {values}"
    return f"see {META_FILE}" if rule is None else str(rule)


def _best(best: dict[str, Any] | None, finished: Any) -> str:
    if best is None:
        return ("none validated without error" if finished
                else "not yet known: the search is running (python -m analysis shows it live)")
    gain = best["best_psnr"] - best["bicubic_psnr"] if best.get("bicubic_psnr") else None
    over = f", {gain:+.2f} dB over bicubic" if gain is not None else ""
    return (f"{best['trial_id']}: {best['best_psnr']:.3f} dB at epoch {best['best_epoch']}{over}"
            f" ({best.get('path', '')})")
