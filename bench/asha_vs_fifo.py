"""Does ASHA earn its keep? The main job's space and budget under ASHA + TPE, FIFO + TPE and
FIFO + random search, with the same number of trials and several search seeds each.

    python bench/asha_vs_fifo.py [--variants asha-tpe fifo-tpe fifo-random] [--seeds 0 1 2]
        [--space lr_sched] [--storage runs/bench-asha] [--no-retrain] [--read-only]
        [--json out.json]

For every (variant, seed) it runs the real ``python -m tune.run`` (without the reference run, which
would cost every variant the same) and reports the best validated PSNR, the winner's PSNR on the
test split after ``analysis.export --retrain`` with a fresh seed, the samples all trials trained
and the wall time. From the FIFO runs, where every trial trains its whole budget, it also measures
how well each validation epoch's PSNR ranks the trials by their final PSNR (Spearman), which is
what ASHA's rungs bet on, and replays synchronous successive halving on their curves (what the
promotion rule alone would cost, without ASHA's asynchrony). A finished run already in
``--storage`` is read, not run again.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from analysis import record
from analysis.run_folder import RETRAIN_SUBDIR

VARIANTS = {
    "asha-tpe": {"scheduler": {"type": "asha"}, "search": {"algorithm": "optuna"}},
    "fifo-tpe": {"scheduler": {"type": "fifo"}, "search": {"algorithm": "optuna"}},
    "fifo-random": {"scheduler": {"type": "fifo"}, "search": {"algorithm": "random"}},
}


def space_for(base: dict[str, Any], variant: str) -> dict[str, Any]:
    """The space file with the scheduler and searcher of ``variant``; nothing else changes."""
    doc = {k: v for k, v in base.items() if k not in ("scheduler", "search")}
    sched = dict(base.get("scheduler") or {}) if variant.startswith("asha") else {}
    sched.update(VARIANTS[variant]["scheduler"])
    search = {k: v for k, v in (base.get("search") or {}).items()
              if k == "n_startup_trials" and variant.endswith("tpe")}
    search.update(VARIANTS[variant]["search"])
    return {**doc, "scheduler": sched, "search": search, "include_defaults": False}


def run_one(space: Path, storage: Path, name: str, seed: int) -> float | None:
    """Run the search unless its folder exists; the wall seconds, or None when it was there."""
    if record.exists(storage / name):
        return None
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tune.run", "--space", str(space), "--storage",
                    str(storage), "--name", name, "--seed", str(seed)], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def spearman(a: list[float], b: list[float]) -> float:
    import pandas as pd

    return float(pd.Series(a).rank().corr(pd.Series(b).rank()))


def rank_agreement(run) -> dict[int, float]:
    """Spearman between each validation epoch's PSNR and the final PSNR, over the trials that
    reached the end (a FIFO run: all of them)."""
    res = run.results
    final_epoch = int(res["epoch"].max())
    final = res[res["epoch"] == final_epoch].set_index("trial")["psnr"]
    out = {}
    for epoch in sorted(int(e) for e in res["epoch"].unique() if e < final_epoch):
        at = res[res["epoch"] == epoch].set_index("trial")["psnr"]
        common = [t for t in at.index if t in final.index]
        if len(common) >= 3:
            out[epoch] = spearman([at[t] for t in common], [final[t] for t in common])
    return out


def halving_replay(run, rungs: tuple[int, ...] = (3, 9), factor: int = 3) -> dict[str, Any]:
    """Synchronous successive halving replayed on a FIFO run's full curves: at each rung only the
    best of the trials still in go on, by that epoch's PSNR, and the rest stop there. Rung sizes
    are the trials still in divided by ``factor``, rounded down ("floor", never under 1) or up
    ("ceil"). Per rounding: the share of FIFO's samples and the winner's final PSNR against
    FIFO's best. The same proposals for both (a real run's searcher would see other results):
    what the promotion rule alone costs, without ASHA's asynchrony."""
    res = run.results
    curves = res.pivot_table(index="trial", columns="epoch", values="psnr")
    final = int(curves.columns.max())
    rungs = tuple(r for r in rungs if r < final and r in curves.columns)
    out: dict[str, Any] = {}
    if not rungs:
        return out  # a run shorter than the rungs: nothing to replay
    for rounding, keep in (("floor", lambda n: max(1, n // factor)),
                           ("ceil", lambda n: math.ceil(n / factor))):
        alive, epochs, last = list(curves.index), 0, 0
        for rung in rungs:
            epochs += len(alive) * (rung - last)
            alive = list(curves.loc[alive, rung].nlargest(keep(len(alive))).index)
            last = rung
        epochs += len(alive) * (final - last)
        out[rounding] = {"share": epochs / (len(curves) * final),
                         "gap_db": float(curves.loc[alive, final].max() - curves[final].max())}
    return out


def goal_lines(rows: list[dict[str, Any]]) -> list[str]:
    """ASHA against FIFO (both with TPE), seed by seed: the val gap (goal within 0.1 dB) and the
    share of FIFO's samples (goal at most 35%)."""
    asha = {r["seed"]: r for r in rows if r["variant"] == "asha-tpe"}
    fifo = {r["seed"]: r for r in rows if r["variant"] == "fifo-tpe"}
    out = []
    for seed in sorted(set(asha) & set(fifo)):
        a, f = asha[seed], fifo[seed]
        out.append(f"seed {seed}: ASHA best val {a['best_val_psnr'] - f['best_val_psnr']:+.3f} dB "
                   f"against FIFO's, with {a['samples'] / f['samples']:.1%} of its samples")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--space", default="lr_sched")
    p.add_argument("--storage", type=Path, default=Path("runs/bench-asha"))
    p.add_argument("--no-retrain", action="store_true")
    p.add_argument("--read-only", action="store_true",
                   help="report the runs already in --storage; run nothing, list what is missing")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    from analysis import leaderboard, retrain
    from analysis.tables import load_run
    from tune.space import resolve_space_path

    base = yaml.safe_load(resolve_space_path(args.space).read_text())
    args.storage.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in args.variants:
        space = args.storage / f"{variant}.yaml"
        space.write_text(yaml.safe_dump(space_for(base, variant), sort_keys=False))
        for seed in args.seeds:
            name = f"{variant}-seed{seed}"
            folder = args.storage / name
            if args.read_only and not record.exists(folder):
                print(f"not run: {variant} seed {seed}", flush=True)
                continue
            if record.exists(folder) and not record.read(folder).finished:
                # Running now, or interrupted: its winner is not final, so it is neither read nor
                # retrained (a read-only report once retrained a search still running).
                print(f"unfinished: {variant} seed {seed} ({folder}); if it was interrupted, "
                      f"finish it with: python -m tune.run --storage {args.storage} --resume "
                      f"{name}", flush=True)
                continue
            wall = run_one(space, args.storage, name, seed)
            run = load_run(args.storage / name)
            win = leaderboard.winner(run)
            # The search's own trials: a run with the reference beside it (the main job, read
            # as asha-tpe seed 0) lists the reference as a row too.
            trials = run.trials[~run.trials["is_reference"].astype(bool)]
            row = {"variant": variant, "seed": seed, "wall_s": wall,
                   "trials": len(trials), "best_val_psnr": float(win["best_psnr"]),
                   "bicubic_val_psnr": float(win["bicubic_psnr"]),
                   "samples": int(trials["samples_trained"].sum()),
                   "winner": str(win["trial"])}
            if variant.startswith("fifo"):
                row["spearman_by_epoch"] = rank_agreement(run)
                row["halving_replay"] = halving_replay(run)
            if not args.no_retrain:
                report_file = args.storage / name / RETRAIN_SUBDIR / retrain.RETRAIN_FILE
                if report_file.exists():
                    report = json.loads(report_file.read_text())
                elif args.read_only:
                    report = None
                    print(f"not retrained: {variant} seed {seed}", flush=True)
                else:
                    report = retrain.retrain(run, seeds=1)
                if report is not None:
                    w = report["configs"]["winner"]
                    row.update(test_psnr=w["test_psnr"], test_gain=w["gain_db"])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(f"{'variant':<12} {'seeds':>5} {'best val':>9} {'test (retrained)':>17} "
          f"{'samples':>10} {'wall':>8}")
    for variant in args.variants:
        rs = [r for r in rows if r["variant"] == variant]
        if not rs:
            continue
        tests = [r["test_psnr"] for r in rs if r.get("test_psnr") is not None]
        walls = [r["wall_s"] for r in rs if r["wall_s"] is not None]
        print(f"{variant:<12} {len(rs):>5} {statistics.mean(r['best_val_psnr'] for r in rs):>9.3f} "
              f"{(f'{statistics.mean(tests):.3f}' if tests else '-'):>17} "
              f"{statistics.mean(r['samples'] for r in rs):>10,.0f} "
              f"{(f'{statistics.mean(walls):.0f} s' if walls else '-'):>8}")
    for r in rows:
        if r.get("spearman_by_epoch"):
            shown = ", ".join(f"epoch {e}: {v:+.2f}" for e, v in r["spearman_by_epoch"].items())
            print(f"Spearman vs final ({r['variant']}, seed {r['seed']}): {shown}")
    by_epoch: dict[int, list[float]] = {}
    for r in rows:
        for e, v in (r.get("spearman_by_epoch") or {}).items():
            by_epoch.setdefault(int(e), []).append(v)
    if by_epoch:
        shown = ", ".join(f"epoch {e}: {statistics.mean(v):+.2f} (n={len(v)})"
                          for e, v in sorted(by_epoch.items()))
        print(f"Spearman vs final, mean over the FIFO runs: {shown}")
    for r in rows:
        for rounding, h in (r.get("halving_replay") or {}).items():
            print(f"synchronous halving replayed on {r['variant']} seed {r['seed']} ({rounding}): "
                  f"{h['share']:.1%} of FIFO's samples, winner {h['gap_db']:+.3f} dB against FIFO's")
    print(*goal_lines(rows), sep="\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
