"""What a run found, in a few numbers: the winner, its gains, the cost (shared by the report and
``--compare``)."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis import edges, leaderboard
from analysis.tables import Run


@dataclass(frozen=True)
class DefaultsComparison:
    trial: str
    psnr: float  # the defaults trial's PSNR in the summary's scope
    outcome: str
    epochs_trained: int
    winner_minus_defaults: float
    gain_over_bicubic: float
    # When the defaults trial stopped before the winner did: (epoch, winner's PSNR by then,
    # defaults' PSNR by then), the comparison at equal training budget.
    equal_budget: tuple[int, float, float] | None


@dataclass(frozen=True)
class RunSummary:
    name: str
    scope: str
    finished: bool
    evaluation: str
    n_trials: int  # the search's trials; the reference run beside it is no trial of it
    outcomes: dict[str, int]  # of those trials, most common first
    winner: str
    psnr: float
    ssim: float
    epoch: int
    gain_over_bicubic: float
    bicubic_psnr: float
    total_samples: int  # training samples consumed by all trials, errored ones included
    wall_time_s: float | None
    winner_params: dict[str, Any]
    winner_config: dict[str, Any]
    defaults: DefaultsComparison | None
    edge_warnings: list[str]  # searched parameters whose best values sit at an edge of the range
    reference_outcome: str | None = None  # the reference run's outcome; None: there was none
    reference_samples: int = 0  # training samples it consumed

    def trials_text(self) -> str:
        """"6: 4 completed, 2 stopped early; and the reference run (completed)"."""
        text = f"{self.n_trials}: " + ", ".join(f"{n} {k}" for k, n in self.outcomes.items())
        if self.reference_outcome is not None:
            text += f"; and the reference run ({self.reference_outcome})"
        return text


def summarise(run: Run, scope: str = "best") -> RunSummary:
    """Raises RunFolderError when no trial finished a validation without error."""
    win = leaderboard.winner(run, scope)
    ranked = leaderboard.rank(run.trials, scope)
    is_ref = leaderboard.is_reference(run.trials)
    searched, refs = run.trials[~is_ref], run.trials[is_ref]
    families = Counter("stopped early" if o.startswith("stopped") else o
                       for o in searched["outcome"])
    return RunSummary(
        name=run.name,
        scope=scope,
        finished=run.finished,
        evaluation=run.evaluation,
        n_trials=len(searched),
        outcomes=dict(families.most_common()),
        winner=str(win["trial"]),
        psnr=float(win["psnr"]),
        ssim=float(win["ssim"]),
        epoch=int(win["epoch"]),
        gain_over_bicubic=float(win["gain"]),
        bicubic_psnr=float(win["bicubic_psnr"]),
        total_samples=int(searched["samples_trained"].sum()),
        wall_time_s=run.wall_time_s(),
        winner_params={n: _plain(win[c]) for n, c in run.param_columns.items()},
        winner_config=json.loads(win["config"]) if isinstance(win["config"], str) else {},
        defaults=_defaults(run, ranked, win, scope),
        edge_warnings=edge_warnings(run, scope),
        reference_outcome=str(refs["outcome"].iloc[0]) if not refs.empty else None,
        reference_samples=int(refs["samples_trained"].sum()),
    )


def edge_warnings(run: Run, scope: str = "best") -> list[str]:
    """`analysis.edges` lines for the run's searched ranges (from its recorded spec) and its
    scored, non-errored trials in leaderboard order."""
    ranked = leaderboard.rank(run.trials, scope)
    scored = ranked[~ranked["error"].astype(bool) & ranked["psnr"].map(math.isfinite)
                    & ~leaderboard.is_reference(ranked)]
    values = [{name: _plain(t[col]) for name, col in run.param_columns.items()}
              for _, t in scored.iterrows()]
    return edges.edge_warnings(run.record.params, values)


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# --- private helpers -----------------------------------------------------------------------------
def _defaults(run: Run, ranked: Any, win: Any, scope: str) -> DefaultsComparison | None:
    hits = ranked[ranked["is_defaults"]]
    if hits.empty:
        return None
    d = hits.iloc[0]
    equal = None
    epoch = int(d["epochs_trained"])
    if 0 < epoch < int(win["epochs_trained"]):
        res = run.results
        w_rows = res[(res["trial"] == win["trial"]) & (res["epoch"] <= epoch)]
        d_rows = run.results[run.results["trial"] == d["trial"]]
        if not w_rows.empty and not d_rows.empty:
            def pick(rows: pd.DataFrame) -> float:
                if scope == "best":
                    return float(rows["psnr"].max())
                return float(rows.sort_values("epoch")["psnr"].iloc[-1])

            equal = (epoch, pick(w_rows), pick(d_rows))
    return DefaultsComparison(
        trial=str(d["trial"]),
        psnr=float(d["psnr"]),
        outcome=str(d["outcome"]),
        epochs_trained=epoch,
        winner_minus_defaults=float(win["psnr"]) - float(d["psnr"]),
        gain_over_bicubic=float(d["gain"]),
        equal_budget=equal,
    )


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v
