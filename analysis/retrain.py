"""``python -m analysis.retrain RUN_DIR``: the winner and the defaults, retrained and tested.

(``python -m analysis.export RUN_DIR --retrain`` is an alias.)

The search picked its winner by the best validation PSNR among many trials, so that number is
biased upwards (the winner's curve is partly the luck of its seed and of the validation clips).
This retrains two configs from scratch to their FULL budget (``epochs`` of the config) with fresh
seeds that no trial of the search used (1000, 1001, ..., skipping any the run used):

* ``winner``: the winning trial's config (``trial_config``), or ``--trial ID``'s;
* ``defaults``: the source document's defaults as the run recorded them (``default_config`` in
  the run record: the space's fixed settings with every searched parameter at its default);
  a run without that record gets TrainConfig's defaults with the winner's data, scale, budget
  (``epochs``, ``epoch_samples``, ``validation_interval``) and evaluation (``crop_border``).

Both use the same seeds, and the same runtime settings (the winner's ``device`` and
``cache_dir``; ``num_threads`` 0, torch's default: the search's per-trial thread cap is a Ray
packing setting). The trainings run side by side where the cores allow, each with its share of
them, and log a line per validation (`analysis.parallel_training`). Each retraining is
`trainable.train(config, DIR)`, the function behind
``python -m trainable --config DIR/config.yaml --out DIR`` (same Trainer, same checkpointing of
the best validated weights, same scoring), so its folder keeps ``config.yaml``, ``command.txt``,
TensorBoard logs, ``model.pt`` (the best validated weights) and ``summary.json``. The best
validated weights are scored on the held-out TEST split, with the bicubic baseline through the
same code; the report is ``OUT/retrain.json`` (default ``OUT`` = ``RUN_DIR/retrain``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from analysis import _io
from analysis.parallel_training import Job, run_all
from analysis.record import META_FILE, RunFolderError
from analysis.run_folder import RETRAIN_SUBDIR
from analysis.tables import Run
from trainable.config import RUN_SETTINGS, TrainConfig
from trainable.errors import InputError

log = logging.getLogger("analysis.retrain")

RETRAIN_FILE = "retrain.json"
SEED_BASE = 1000
LABELS = ("winner", "defaults")
BIAS_NOTE = ("Test-split scores of fresh retrainings (seeds no trial of the search used) of the "
             "best validated weights: free of the selection bias of picking the best validation "
             "score, which the search's own leaderboard numbers carry.")


@dataclass(frozen=True)
class Candidate:
    label: str  # "winner" or "defaults"
    trial: str | None  # the run's trial with this config (None: the run has no such trial)
    source: str  # where the config comes from, in words
    config: TrainConfig
    search_psnr: float | None  # that trial's score in the search (validation split), if any


def plan(run: Run, trial_id: str | None = None, scope: str = "best"
         ) -> tuple[Candidate, Candidate]:
    """The winner (or ``trial_id``) and the defaults, with the same runtime settings. Raises
    InputError (RunFolderError, ConfigError) on bad input."""
    from analysis import leaderboard

    row = leaderboard.winner(run, scope) if trial_id is None else run.trial(trial_id)
    trial = str(row["trial"])
    if not isinstance(row["config"], str):
        raise RunFolderError(f"{run.run_dir / row['dir']}: trial {trial} reported no results, so "
                             "its full config is unknown; nothing to retrain")
    if row["error"]:
        log.warning("trial %s errored in the search (%s); retraining its config anyway",
                    trial, row["error_summary"])
    winner_cfg = TrainConfig.from_dict(json.loads(row["config"]), where=f"trial {trial}'s config")
    recorded = run.record.default_config
    if isinstance(recorded, dict):
        defaults_cfg = TrainConfig.from_dict(recorded, where=f"default_config in {META_FILE}")
        source = f"the run's default_config ({META_FILE})"
    else:
        # The same rule as the reference run's: the winner's data, budget, scoring and hardware.
        defaults_cfg = winner_cfg.source_defaults()
        source = ("TrainConfig defaults with the winner's " + ", ".join(RUN_SETTINGS)
                  + " (the run recorded no default_config)")
    runtime: dict[str, Any] = {"device": winner_cfg.device, "cache_dir": winner_cfg.cache_dir,
                               "num_threads": 0}
    psnr_col = "best_psnr" if scope == "best" else "last_psnr"
    defaults_rows = run.trials[run.trials["is_defaults"]]
    d_row = defaults_rows.iloc[0] if not defaults_rows.empty else None
    return (
        Candidate("winner", trial, f"trial {trial}'s trial_config", winner_cfg.replace(**runtime),
                  _finite(row[psnr_col])),
        Candidate("defaults", None if d_row is None else str(d_row["trial"]), source,
                  defaults_cfg.replace(**runtime),
                  None if d_row is None else _finite(d_row[psnr_col])),
    )


def fresh_seeds(run: Run, n: int) -> list[int]:
    """``n`` seeds from SEED_BASE up that no trial config (nor the searcher) of the run used."""
    used: set[int] = set()
    for text in run.trials["config"].dropna():
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            used.add(int(json.loads(text).get("seed")))
    search = run.record.search
    for value in ((run.record.default_config or {}).get("seed"), search.seed if search else None):
        if value is not None:
            with contextlib.suppress(ValueError, TypeError):
                used.add(int(value))
    seeds: list[int] = []
    s = SEED_BASE
    while len(seeds) < n:
        if s not in used:
            seeds.append(s)
        s += 1
    return seeds


def retrain(run: Run, trial_id: str | None = None, seeds: int = 1, out: Path | None = None,
            force: bool = False, scope: str = "best",
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Retrain, score on the test split, write ``OUT/retrain.json`` and return its content.

    Raises InputError on bad input (checked before any training: the run, the trial, the configs,
    the three splits of the data, existing outputs without ``force``), OSError when a write fails.
    """
    if seeds < 1:
        raise InputError(f"The value of `--seeds` is {seeds}, but must be >= 1.")
    winner, defaults = plan(run, trial_id, scope)
    seed_values = fresh_seeds(run, seeds)
    out = Path(out) if out is not None else run.run_dir / RETRAIN_SUBDIR
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, but --retrain writes a folder")
    same = _same_config(winner.config, defaults.config)
    jobs = [(c, s) for c in ((winner,) if same else (winner, defaults)) for s in seed_values]
    targets = [out / RETRAIN_FILE, *(out / _run_name(c.label, s) for c, s in jobs)]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise InputError(f"{existing[0]}: already exists; pass --force to replace it")
    for c in (winner, defaults):
        _check_data(c.config)
    say = progress or (lambda _msg: None)
    if same:
        say("the winner's config is the defaults': training it once, reported for both")
    runs: dict[str, list[dict[str, Any]]] = {winner.label: [], defaults.label: []}
    trainings = [Job(f"{c.label} seed {s}", c.config.replace(seed=s), out / _run_name(c.label, s))
                 for c, s in jobs]
    # Side by side where the cores allow, a progress line per validation of each.
    for (c, _), result in zip(jobs, run_all(trainings, partial(_train_one, force=force), say),
                              strict=True):
        runs[c.label].append(result)
    if same:
        runs[defaults.label] = runs[winner.label]
    report = _report(run, scope, seed_values, out, (winner, defaults), runs, same)
    _io.write_text_atomic(out / RETRAIN_FILE, json.dumps(report, indent=2) + "\n")
    return report


def render(report: dict[str, Any]) -> str:
    """The report as text for the terminal."""
    seeds = report["seeds"]
    scope = report.get("test_scope")
    lines = [f"Retrained to the full budget with seed(s) {', '.join(map(str, seeds))}; best "
             f"validated weights scored on the {report['split']} split"
             + (f" ({scope})." if scope else "."),
             f"Evaluation: {report['evaluation']}.", ""]
    heads = ["config", "trial", "test PSNR", "SSIM", "gain dB", "search val PSNR"]
    rows = []
    for label, c in report["configs"].items():
        rows.append([label, c["trial"] or "-", _fmt(c["test_psnr"], 3), _fmt(c["test_ssim"], 4),
                     _fmt(c["gain_db"], 3, signed=True), _fmt(c["search_psnr"], 3)])
        if len(seeds) > 1:
            for r in c["runs"]:
                rows.append([f"  seed {r['seed']}", "", _fmt(r["test_psnr"], 3),
                             _fmt(r["test_ssim"], 4), _fmt(r["gain_db"], 3, signed=True),
                             r["status"]])
    b = report["bicubic"]
    rows.append(["bicubic", "", _fmt(b["psnr"], 3), _fmt(b["ssim"], 4), "", ""])
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
    for cells in [heads, ["-" * w for w in widths], *rows]:
        lines.append("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
                               ).rstrip())
    if report.get("source_evaluation"):
        lines += ["", "As the source repository's test.py scores: "
                      f"{report['source_evaluation']}."]
        for label, c in report["configs"].items():
            src = c.get("source_convention") or {}
            lines.append(f"  {label}: test PSNR {_fmt(src.get('test_psnr'), 3)}, gain over "
                         f"bicubic {_fmt(src.get('gain_db'), 3, signed=True)} dB")
    d = report["winner_minus_defaults"]
    lines += ["", f"winner - defaults: {_fmt(d['psnr_db'], 3, signed=True)} dB PSNR, "
                  f"{_fmt(d['ssim'], 4, signed=True)} SSIM (means over {len(seeds)} seed(s))"]
    lines += [f"warning: {w}" for w in report["warnings"]]
    lines.append(f"note: {report['note']}")
    return "\n".join(lines)


# --- private helpers -----------------------------------------------------------------------------
def _run_name(label: str, seed: int) -> str:
    return f"{label}-seed{seed}"


def _same_config(a: TrainConfig, b: TrainConfig) -> bool:
    return a.replace(seed=0).to_dict() == b.replace(seed=0).to_dict()


def _check_data(cfg: TrainConfig) -> None:
    """Open (and cache) the three splits now: a data set without a test split fails here, not
    after hours of training."""
    from trainable.store import open_split

    for split in ("train", "val", "test"):
        open_split(cfg.data_spec, split)


def _train_one(cfg: TrainConfig, run_dir: Path, force: bool) -> dict[str, Any]:
    """`trainable.train` into ``run_dir``, as ``python -m trainable --config run_dir/config.yaml
    --out run_dir`` would; its summary of the best validated weights on the val and test splits."""
    from trainable import train

    if force and run_dir.exists():
        shutil.rmtree(run_dir)  # nothing stale (model.pt) may survive into the new run
    summary = train(cfg, run_dir)
    test, val = summary.test, summary.val
    return {
        "seed": cfg.seed, "dir": run_dir.name, "status": summary.status,
        "epochs": summary.epochs, "best_epoch": summary.best_epoch,
        "test_psnr": _finite(test and test.psnr), "test_ssim": _finite(test and test.ssim),
        "gain_db": _finite(test and test.gain_db),
        "bicubic_psnr": _finite(test and test.bicubic_psnr),
        "bicubic_ssim": _finite(test and test.bicubic_ssim),
        "test_frames": test and test.frames,
        "test_scope": test.scope if test else None,
        "val_psnr": _finite(val and val.psnr), "val_ssim": _finite(val and val.ssim),
        "evaluation": summary.evaluation,
        # The same weights and frames as the source repository's test.py scores them.
        "source_convention": _source_scores(test and test.source),
        "train_seconds": summary.train_seconds,
    }


def _report(run: Run, scope: str, seeds: list[int], out: Path,
            candidates: tuple[Candidate, Candidate], runs: dict[str, list[dict[str, Any]]],
            same: bool) -> dict[str, Any]:
    import torch

    warnings: list[str] = []
    configs: dict[str, Any] = {}
    for c in candidates:
        rs = runs[c.label]
        bad = [f"{r['seed']} ({r['status']})" for r in rs if r["test_psnr"] is None]
        if bad and not (same and c.label == "defaults"):
            warnings.append(f"{c.label}: no test score for seed(s) {', '.join(bad)}; its means "
                            "are left empty")
        bicubic_psnr = _mean([r["bicubic_psnr"] for r in rs])
        test_psnr = _mean([r["test_psnr"] for r in rs])
        configs[c.label] = {
            "trial": c.trial, "source": c.source, "search_scope": scope,
            "search_psnr": c.search_psnr,
            "test_psnr": test_psnr, "test_ssim": _mean([r["test_ssim"] for r in rs]),
            "test_psnr_std": _std([r["test_psnr"] for r in rs]),
            "bicubic_psnr": bicubic_psnr, "bicubic_ssim": _mean([r["bicubic_ssim"] for r in rs]),
            "gain_db": _sub(test_psnr, bicubic_psnr),
            "source_convention": _source_means([r["source_convention"] for r in rs]),
            "same_as": "winner" if same and c.label == "defaults" else None,
            "config": {k: v for k, v in c.config.to_dict().items() if k != "seed"},
            "runs": rs,
        }
    w, d = configs["winner"], configs["defaults"]
    if w["bicubic_psnr"] != d["bicubic_psnr"] and None not in (w["bicubic_psnr"], d["bicubic_psnr"]):
        warnings.append("the winner's and the defaults' bicubic baselines differ (other data, "
                        "scale or border crop): compare their gains, not their PSNRs")
    crop = candidates[0].config.crop_border
    from trainable.evaluate import convention, source_convention

    return {
        "run": run.name, "run_dir": str(run.run_dir.resolve()), "out": str(out.resolve()),
        "split": "test", "seeds": seeds, "evaluation": "PSNR/SSIM on " + convention(crop),
        "source_evaluation": "PSNR/SSIM on " + source_convention(
            candidates[0].config.scale).describe(),
        # "full", or "sampled N of M clips" (`test_clips`): the same for every run scored here.
        "test_scope": next((r["test_scope"] for rs in runs.values() for r in rs
                            if r.get("test_scope")), None),
        "bicubic": {"psnr": w["bicubic_psnr"], "ssim": w["bicubic_ssim"]},
        "configs": configs,
        "winner_minus_defaults": {"psnr_db": _sub(w["test_psnr"], d["test_psnr"]),
                                  "ssim": _sub(w["test_ssim"], d["test_ssim"])},
        "note": BIAS_NOTE, "warnings": warnings,
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__},
        "retrained": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _source_scores(scores: Any) -> dict[str, float | None] | None:
    """One run's test scores in the source repository's convention (a SplitScores or None)."""
    if scores is None:
        return None
    return {"test_psnr": _finite(scores.psnr), "test_ssim": _finite(scores.ssim),
            "bicubic_psnr": _finite(scores.bicubic_psnr), "gain_db": _finite(scores.gain_db)}


def _source_means(runs: list[dict[str, float | None] | None]) -> dict[str, float | None]:
    """The mean over seeds of each source-convention score (None where a seed has none)."""
    keys = ("test_psnr", "test_ssim", "bicubic_psnr", "gain_db")
    return {k: _mean([r[k] if r else None for r in runs]) for k in keys}


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _mean(values: list[float | None]) -> float | None:
    """The mean over seeds; None when any seed has no score (a diverged seed must not vanish)."""
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if values and len(known) == len(values) else None


def _std(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.stdev(known) if len(values) >= 2 and len(known) == len(values) else None


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _fmt(v: Any, digits: int, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


# --- the command line ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis.retrain",
        description="Retrain a run's winner (or --trial's config) and the source document's "
                    "defaults to the full budget with fresh seeds, and score both on the "
                    "held-out test split against bicubic (RUN_DIR/retrain/retrain.json).")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder, runs/NAME")
    p.add_argument("--trial", metavar="ID", help="trial id (default: the leaderboard winner)")
    p.add_argument("--seeds", type=_io.positive_int, default=1, metavar="N",
                   help="seeds per config (default 1; seeds 1000, 1001, ... that the search "
                        "did not use)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help=f"output folder (default RUN_DIR/{RETRAIN_SUBDIR})")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--scope", choices=("best", "last"), default="best",
                   help="winner by best validated PSNR (default) or by the last one")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)
    return run_command(args.run_dir, args.trial, args.seeds, args.out, args.force, args.scope)


def run_command(run_dir: Path, trial: str | None, seeds: int, out: Path | None, force: bool,
                scope: str) -> int:
    """Retrain and print the report; the exit status (0, 1 a failed write, 2 bad input, 130
    interrupted)."""
    from analysis.tables import load_run

    try:
        report, rc = _io.guarded(lambda: retrain(
            load_run(run_dir), trial, seeds, out, force, scope,
            progress=lambda msg: print(msg, file=sys.stderr, flush=True)))
    except KeyboardInterrupt:
        print("interrupted; no retrain.json was written", file=sys.stderr)
        return 130
    if rc:
        return rc
    print(render(report))
    print(f"wrote {Path(report['out']) / RETRAIN_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
