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
from analysis.result_row import ResultRow
from analysis.run_folder import RESULT_FILE
from tune import reference
from tune.run_readme import README
from tune.space import SearchSpec


def _best_psnr(row: ResultRow | None) -> float:
    return row.best_psnr if row is not None and math.isfinite(row.best_psnr) else -math.inf


def summarise(grid: Any, spec: SearchSpec, run_dir: Path, rec: RunRecord) -> BestTrial | None:
    # Each trial that did not error, with its last row (None: it reported nothing).
    clean = [(r, ResultRow.from_json(r.metrics or {})) for r in grid if r.error is None]
    # A trial that ran out of memory before its first validation reported no validation.
    ok = [(r, row) for r, row in clean if row is not None and row.is_validation]
    errored = len(grid) - len(clean)
    infeasible = sum(1 for _, row in clean if row is not None and not row.is_validation)
    print(f"\n=== {run_dir.name}: {len(grid)} trials, {errored} errored, {infeasible} "
          "infeasible ===")
    if not ok:
        print("no trial reported a validation without error; see the error.txt files (errors) "
              f"and the `reason` in {RESULT_FILE} (infeasible: out of memory) in the trial folders")
        return None
    ranked = sorted(ok, key=lambda t: (-_best_psnr(t[1]), t[1].best_epoch))
    best, m = ranked[0]
    defaults = _reference_row(ok, spec, run_dir)
    print("best = highest validated PSNR seen by a trial that did not error "
          f"({rec.evaluation})")
    print(f"best trial: {m.trial_id}  PSNR {m.best_psnr:.3f} dB at epoch {m.best_epoch}"
          f" / {m.max_epochs}  (bicubic {m.bicubic_psnr:.3f} dB, "
          f"{m.best_psnr - m.bicubic_psnr:+.3f} dB)")
    searched = [p.name for p in spec.active(best.config)]  # a chosen branch's own too
    for name in searched:
        print(f"  {name}: {best.config[name]}")
    if defaults is not None:
        d = defaults
        # Its best PSNR at the epoch it was reached, as for the winner and in the leaderboard.
        print(f"source document's defaults: {d.trial_id}  PSNR {_best_psnr(d):.3f} dB at "
              f"epoch {d.best_epoch} / {d.max_epochs}  ({d.status} after {d.epoch} epochs, "
              f"winner {_best_psnr(m) - _best_psnr(d):+.3f} dB over them)")
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
    bicubic = m.bicubic_psnr if math.isfinite(m.bicubic_psnr) else None
    return BestTrial(str(m.trial_id), m.best_psnr, m.best_epoch, bicubic,
                     {n: best.config[n] for n in searched}, str(best.path))


def _edge_warnings(ranked: list[tuple[Any, ResultRow]], spec: SearchSpec) -> list[str]:
    """Edge lines over the scored trials, best first."""
    scored = [r for r, row in ranked if math.isfinite(_best_psnr(row))]
    return edges.edge_warnings(spec.params, [r.config for r in scored])


def _reference_row(results: list[tuple[Any, ResultRow]], spec: SearchSpec, run_dir: Path
                   ) -> ResultRow | None:
    """The reference run's last result: its trial where it ran inside the space, else the result
    the reference task wrote beside the search."""
    if not spec.include_defaults:
        return None
    if not spec.reference_inside:
        return reference.latest(run_dir)
    return next((row for r, row in results if spec.trial_config(r.config) == spec.base), None)
