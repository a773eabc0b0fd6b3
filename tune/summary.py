"""The end-of-search summary: the best trial (best validated PSNR among trials that did not error),
its configuration, its gain over bicubic and over the source document's defaults, the searched
ranges its best values sit at the edge of (`analysis.edges`), and the commands that analyse and
export it."""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

from analysis import edges
from analysis.record import BestTrial, RunRecord
from analysis.run_folder import RESULT_FILE
from tune import reference
from tune.run_readme import README
from tune.space import SearchSpec


def _best_psnr(metrics: dict[str, Any]) -> float:
    v = metrics.get("best_psnr", metrics.get("psnr"))
    return v if isinstance(v, int | float) and math.isfinite(v) else -math.inf


def summarise(grid: Any, spec: SearchSpec, run_dir: Path, rec: RunRecord) -> BestTrial | None:
    # A trial that ran out of memory before its first validation reports no best_epoch.
    ok = [r for r in grid if r.error is None and r.metrics and "best_epoch" in r.metrics]
    errored = sum(1 for r in grid if r.error is not None)
    infeasible = sum(1 for r in grid if r.error is None and (r.metrics or {}).get("status")
                     == "infeasible" and "best_epoch" not in r.metrics)
    print(f"\n=== {run_dir.name}: {len(grid)} trials, {errored} errored, {infeasible} "
          "infeasible ===")
    if not ok:
        print("no trial reported a validation without error; see the error.txt files (errors) "
              f"and the `reason` in {RESULT_FILE} (infeasible: out of memory) in the trial folders")
        return None
    ranked = sorted(ok, key=lambda r: (-_best_psnr(r.metrics), r.metrics.get("best_epoch", 0)))
    best = ranked[0]
    m = best.metrics
    defaults = _reference_metrics(ok, spec, run_dir)
    print("best = highest validated PSNR seen by a trial that did not error "
          f"({rec.evaluation})")
    print(f"best trial: {m['trial_id']}  PSNR {m['best_psnr']:.3f} dB at epoch {m['best_epoch']}"
          f" / {m['max_epochs']}  (bicubic {m['bicubic_psnr']:.3f} dB, "
          f"{m['best_psnr'] - m['bicubic_psnr']:+.3f} dB)")
    searched = [p.name for p in spec.active(best.config)]  # a chosen branch's own too
    for name in searched:
        print(f"  {name}: {best.config[name]}")
    if defaults is not None:
        d = defaults
        # Its best PSNR at the epoch it was reached, as for the winner and in the leaderboard.
        print(f"source document's defaults: {d['trial_id']}  PSNR {_best_psnr(d):.3f} dB at "
              f"epoch {d.get('best_epoch', d.get('epoch'))} / {d.get('max_epochs')}  "
              f"({d.get('status')} after {d.get('epoch')} epochs, winner "
              f"{_best_psnr(m) - _best_psnr(d):+.3f} dB over them)")
    elif spec.include_defaults:
        print("source document's defaults: the reference run left no result")
    at_edges = _edge_warnings(ranked, spec)
    if at_edges:
        print("ranges that may be too narrow:")
        print("\n".join(f"  {line}" for line in at_edges))
    q = shlex.quote(str(run_dir))
    # Ray's own start line points at its staging copy under /tmp/ray; the run folder holds them all.
    print(f"\nanalyse:  python -m analysis {q}\nexport:   python -m analysis.export {q}\n"
          f"curves:   tensorboard --logdir {q}\nabout:    {run_dir / README}")
    return BestTrial(str(m["trial_id"]), float(m["best_psnr"]), int(m["best_epoch"]),
                     m.get("bicubic_psnr"), {n: best.config[n] for n in searched}, str(best.path))


def _edge_warnings(ranked: list[Any], spec: SearchSpec) -> list[str]:
    """Edge lines over the scored trials, best first."""
    scored = [r for r in ranked if math.isfinite(_best_psnr(r.metrics))]
    return edges.edge_warnings(spec.params, [r.config for r in scored])


def _reference_metrics(results: list[Any], spec: SearchSpec, run_dir: Path
                       ) -> dict[str, Any] | None:
    """The reference run's last result: its trial where it ran inside the space, else the result
    the reference task wrote beside the search."""
    if not spec.include_defaults:
        return None
    if not spec.reference_inside:
        return reference.latest(run_dir)
    for r in results:
        if spec.trial_config(r.config) == spec.base:
            metrics: dict[str, Any] = r.metrics
            return metrics
    return None
