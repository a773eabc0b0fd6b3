"""Rank the trials of a run, and say which "best" the ranking means.

``scope="best"`` ranks by the best validated PSNR each trial reached (the checkpoint Ray keeps as
best); ``scope="last"`` by the PSNR of its last validation (what the trial ended with). Ties go to
the trial that got there at an earlier epoch, then to the smaller trial id. Errored trials come
last whatever their PSNR (a crash must never win), after the trials that reported nothing.

``tied`` says whether a trial is statistically indistinguishable from the winner on the same
validation frames: the paired per-frame PSNR differences of its ranked validation to the winner's
have a mean within two standard errors of zero (`analysis.ties.tied_with`). Only a trial that
trained as far as the winner is compared with it: one stopped at an earlier rung is judged at
that rung instead (``at cut``, `analysis.ties`). The winner is the reference of that comparison
(``tie_reference``); where either lacks per-frame PSNRs (older runs), their counts differ, the
trial is not scored or stopped earlier, no tie is claimed either way (missing). The leaderboard
and trials.parquet mark the same: "winner" for the winner, "yes" or "no" for the others, blank
(null) where no tie is claimed (`tie_marks`).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analysis.record import RunFolderError
from analysis.tables import FRAMES, Run
from analysis.ties import RungCut, cut_marks, rung_cuts, tied_with

SCOPES = ("best", "last")
_SCOPE_COLUMNS = {  # scope -> (psnr, ssim, epoch, gain) columns of the trials table
    "best": ("best_psnr", "best_ssim", "best_epoch", "gain_db"),
    "last": ("last_psnr", "last_ssim", "epochs_trained", "last_gain_db"),
}
_SCOPE_WORDS = {
    "best": "the best validated PSNR each trial reached (scope=best)",
    "last": "the PSNR of each trial's last validation (scope=last)",
}


def rank(trials: pd.DataFrame, scope: str = "best") -> pd.DataFrame:
    """The trials table sorted best first, with ``rank``, ``psnr``, ``ssim``, ``epoch`` (the epoch
    the scored validation happened at) and ``gain`` (over bicubic) for the chosen scope, ``tied``
    and ``tie_reference`` (the winner, whom ``tied`` compares with)."""
    psnr, ssim, epoch, gain = _scope_columns(scope)
    out = trials.copy()
    out["psnr"] = out[psnr].astype(float)
    out["ssim"] = out[ssim].astype(float)
    out["epoch"] = out[epoch].astype("Int64")
    out["gain"] = out[gain].astype(float)
    scored = out["psnr"].map(lambda v: math.isfinite(v))
    out["_tier"] = [2 if err else 0 if ok else 1
                    for err, ok in zip(out["error"], scored, strict=True)]
    out["_neg_psnr"] = -out["psnr"].where(scored, -math.inf)
    out["_epoch"] = out["epoch"].astype(float).fillna(math.inf)
    out = out.sort_values(["_tier", "_neg_psnr", "_epoch", "trial"], kind="mergesort")
    out = out.drop(columns=["_neg_psnr", "_epoch"]).reset_index(drop=True)
    frames = out[f"{scope}_{FRAMES}"] if f"{scope}_{FRAMES}" in out else [None] * len(out)
    # Ties are against the winner: the best searched trial (the reference run is never one).
    top = [i for i, (tier, ref) in enumerate(zip(out["_tier"], is_reference(out), strict=True))
           if tier == 0 and not ref][:1]
    reference = frames[top[0]] if top else None
    # Only a trial that trained as far as the winner: an earlier stop is judged at its rung.
    reach = out.loc[top[0], "epochs_trained"] if top else math.inf
    out["tied"] = pd.array([tied_with(reference, f) if tier == 0 and trained >= reach else None
                            for tier, f, trained in zip(out["_tier"], frames, out["epochs_trained"],
                                                        strict=True)], dtype="boolean")
    out["tie_reference"] = [i in top for i in range(len(out))]
    out = out.drop(columns=["_tier"])
    out.insert(0, "rank", range(1, len(out) + 1))
    return out


def tie_marks(ranked: pd.DataFrame) -> list[str | None]:
    """`rank`'s ties in words, one per row: "winner" (whom the others are compared with),
    "yes", "no", or None where no tie is claimed."""
    return [None if tied is pd.NA else "winner" if ref else "yes" if tied else "no"
            for ref, tied in zip(ranked["tie_reference"], ranked["tied"], strict=True)]


def rung_story(run: Run) -> list[RungCut]:
    """ASHA's cut at each rung of the run among its searched trials (`analysis.ties`)."""
    skip = set(run.trials.loc[is_reference(run.trials), "trial"])
    return rung_cuts(run.results, run.trials, run.rungs, skip)


def tied_column(run: Run, scope: str = "best") -> pd.Series:
    """The leaderboard's tie marks (`tie_marks`) aligned with ``run.trials`` (creation order),
    for trials.parquet: the same words in both."""
    ranked = rank(run.trials, scope)
    by_trial = dict(zip(ranked["trial"], tie_marks(ranked), strict=True))
    return pd.Series([by_trial[t] for t in run.trials["trial"]], index=run.trials.index,
                     dtype="string")


def cut_column(run: Run) -> pd.Series:
    """The leaderboard's ``at cut`` marks (`analysis.ties.cut_marks`) aligned with
    ``run.trials``, for trials.parquet; null where a trial has none."""
    marks = cut_marks(rung_story(run))
    return pd.Series([marks.get(str(t)) for t in run.trials["trial"]], index=run.trials.index,
                     dtype="string")


def winner(run: Run, scope: str = "best") -> pd.Series:
    """The first-ranked searched trial (never the reference run beside the search); a run where
    no trial finished a validation without error raises."""
    ranked = rank(run.trials, scope)
    ranked = ranked[~is_reference(ranked)]
    if ranked.empty or ranked.iloc[0]["error"] or not math.isfinite(ranked.iloc[0]["psnr"]):
        raise RunFolderError(no_finished_trials_message(run))
    return ranked.iloc[0]


def is_reference(trials: pd.DataFrame) -> pd.Series:
    if "is_reference" not in trials:
        return pd.Series(False, index=trials.index)
    return trials["is_reference"].fillna(False).astype(bool)


def no_finished_trials_message(run: Run) -> str:
    n = len(run.trials)
    errored = int(run.trials["error"].sum()) if n else 0
    return (f"{run.run_dir}: no finished trials: none of its {n} trial(s) reported a validation "
            f"without erroring ({errored} errored); nothing to rank")


def counted(trials: pd.DataFrame) -> str:
    """"6 trials and the reference run": how every output counts a run's trials (the reference
    run beside the search is no trial of it)."""
    n = int((~is_reference(trials)).sum())
    also = " and the reference run" if n < len(trials) else ""
    return f"{n} trial{'' if n == 1 else 's'}{also}"


def header(run: Run, scope: str = "best") -> str:
    _scope_columns(scope)
    state = "finished" if run.finished else "NOT finished (running or interrupted)"
    bicubic = run.trials["bicubic_psnr"].dropna()
    baseline = "" if bicubic.empty else f"; bicubic {bicubic.median():.2f} dB with the same code"
    return (f"Run {run.name} ({state}): {counted(run.trials)} ranked by {_SCOPE_WORDS[scope]}; "
            f"errored trials last.\nEvaluation: {run.evaluation}{baseline}.")


def render(run: Run, scope: str = "best", top: int | None = None) -> str:
    """The header and a fixed-width table, ``top`` rows at most."""
    heads, rows = table_rows(run, scope)
    shown = rows if top is None else rows[:top]
    table = _table(heads, shown, right=set(range(len(heads) - 1)) - {1})
    more = f"\n({len(rows) - len(shown)} more trial(s) not shown)" if len(shown) < len(rows) else ""
    cuts = "".join(f"\n  {cut.describe()}" for cut in rung_story(run))
    story = f"\n\nASHA's cut at each rung:{cuts}" if cuts else ""
    return f"{header(run, scope)}\n\n{table}{more}{story}"


def table_rows(run: Run, scope: str = "best") -> tuple[list[str], list[list[str]]]:
    """Column heads and formatted cells of the ranked trials (shared by the terminal and HTML)."""
    ranked = rank(run.trials, scope)
    params = [(name, col) for name, col in run.param_columns.items() if col in ranked.columns]
    # The Optuna study's own number of each trial (optuna-dashboard's "#2"), where it has one.
    numbered = "optuna_trial" in ranked and bool(ranked["optuna_trial"].notna().any())
    at_cut = cut_marks(rung_story(run))
    heads = ["rank", "trial", *(["optuna #"] if numbered else []), *(name for name, _ in params),
             "PSNR" if scope == "best" else "last PSNR", "SSIM",
             "at epoch", "epochs", "gain dB", "tied", *(["at cut"] if at_cut else []), "outcome"]
    rows = []
    marks = tie_marks(ranked)
    for (_, t), mark in zip(ranked.iterrows(), marks, strict=True):
        outcome = str(t["outcome"]) + retried_note(t.get("retries", 0)) + (
            " [reference: source defaults]"
            if t.get("is_reference", False) is True else " [defaults]" if t["is_defaults"] else "")
        number = [format_value(t["optuna_trial"])] if numbered else []
        rows.append([str(t["rank"]), str(t["trial"]), *number, *(format_value(t[c]) for _, c in params),
                     _fixed(t["psnr"], 2), _fixed(t["ssim"], 4), format_value(t["epoch"]),
                     str(t["epochs_trained"]), _fixed(t["gain"], 2, signed=True),
                     mark or "", *([at_cut.get(str(t["trial"]), "")] if at_cut else []), outcome])
    return heads, rows


def retried_note(retries: Any) -> str:
    """' (retried 2x)' after the outcome of a trial started again after failed attempts (a lost
    node, an error), ' (retried)' where an older run did not record how often; '' otherwise."""
    if retries is None or retries is pd.NA or (isinstance(retries, float) and math.isnan(retries)):
        return " (retried)"
    return f" (retried {int(retries)}x)" if int(retries) > 0 else ""


def format_value(v: Any) -> str:
    """Short, exact-enough text for a parameter or count: 4 significant digits for floats."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# --- private helpers -----------------------------------------------------------------------------
def _scope_columns(scope: str) -> tuple[str, str, str, str]:
    if scope not in _SCOPE_COLUMNS:
        raise ValueError(f"The value of `scope` is {scope!r}, but must be one of {SCOPES}.")
    return _SCOPE_COLUMNS[scope]


def _fixed(v: Any, digits: int, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _table(heads: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(heads), line(["-" * w for w in widths]), *map(line, rows)])
