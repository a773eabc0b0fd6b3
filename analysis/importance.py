"""Searched-parameter distributions and importances, through Optuna's own evaluators.

Importance is over the scalars a user can read (`analysis.tables.Run.scalar_columns`): each
numeric or choice parameter itself, a milestone list's count, first and last drop. Their
distributions come from the run record's ranges (`analysis.record.ParamRange`), else they are
inferred from the values the trials got: floats on a log scale when the name says learning rate
or the values span two decades, integers with few values and anything non-numeric as categories.
Importances are computed on an in-memory study rebuilt from the finished, non-errored trials
(``optuna.trial.create_trial``); no storage is touched. The evaluator is Optuna's PED-ANOVA,
which asks what the best trials (its *target quantile*) have in common: here that group holds at
least three trials (quantile ``max(0.1, 3 / n)``), not the one trial 10% of a small search is.

Each result says when its shares cannot be trusted (``caveats``), in words a caption can carry:
few trials; trials valued at different budgets (ASHA stopped most of them early, at the PSNR
they had reached by then); and a share that contradicts the scatter of PSNR against the same
parameter (its rank correlation with the PSNR is strong, its share small), which PED-ANOVA does
by design where the weakest trials share a setting the best ones avoid without sharing another.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from analysis.leaderboard import is_reference
from analysis.record import ParamRange
from analysis.tables import Run

log = logging.getLogger(__name__)

# The distributions the analysis builds: a number range, or a choice of values.
Distribution = FloatDistribution | IntDistribution | CategoricalDistribution



@dataclass(frozen=True)
class Importance:
    values: dict[str, float] | None  # parameter -> share of importance, highest first
    reason: str | None  # why ``values`` is None
    evaluator: str
    n_trials: int
    caveats: tuple[str, ...] = ()  # why the shares may not be trusted (see the module)
    target_quantile: float | None = None  # PED-ANOVA's top group, a share of the trials

MIN_TRIALS = 20  # below this many scored trials every result carries the "few trials" caveat
MIN_TOP = 3  # trials in PED-ANOVA's top group at least
_STRONG_TREND = 0.5  # |Spearman rho| of a parameter with the PSNR that the scatter shows plainly


def distributions(run: Run) -> dict[str, Distribution]:
    """One Optuna distribution per scalar (`Run.scalar_columns`) that any trial has a value for."""
    out: dict[str, Distribution] = {}
    for name, col in run.scalar_columns.items():
        observed = [v for v in run.trials[col].tolist() if not _missing(v)]
        if not observed:
            continue
        dist = _from_range(run.scalar_range(name))
        out[name] = _widen(dist, observed) if dist is not None else _infer(name, observed)
    return out


def scored_trials(run: Run, value_column: str = "best_psnr", branch: tuple[str, Any] | None = None
                  ) -> list[tuple[dict[str, Any], float]]:
    """(params, value) of every non-errored trial with a finite value (of one branch of a
    conditional choice: ``(name, value)``), params cast to their distribution's type so that
    Optuna accepts them; a parameter the trial does not have is left out."""
    dists = distributions(run)
    out = []
    for _, t in run.trials.iterrows():
        value = float(t[value_column])
        if t["error"] or not math.isfinite(value) or t.get("is_reference", False) is True:
            continue  # the reference run beside the search was not sampled from the space
        if branch is not None and t[run.param_columns[branch[0]]] != branch[1]:
            continue
        params = {}
        for name, dist in dists.items():
            v = t[run.scalar_columns[name]]
            if not _missing(v):
                params[name] = int(v) if isinstance(dist, IntDistribution) else _plain(v)
        out.append((params, value))
    return out


def param_importances(run: Run, value_column: str = "best_psnr",
                      branch: tuple[str, Any] | None = None) -> Importance:
    """Importances over the parameters every scored trial has (of one branch of a conditional
    choice, ``branch``; `branch_importances` gives them all)."""
    import optuna

    scored = scored_trials(run, value_column, branch)
    shared = [name for name in distributions(run) if all(name in p for p, _ in scored)]
    varying = [name for name in shared
               if len({json.dumps(p.get(name), sort_keys=True) for p, _ in scored}) > 1]
    evaluator_cls = getattr(optuna.importance, "PedAnovaImportanceEvaluator", None)
    name = evaluator_cls.__name__ if evaluator_cls else "optuna default"
    if len(scored) < 2 or not varying:
        reason = (f"not enough trials: importance needs at least 2 finished, non-errored trials "
                  f"whose searched parameters differ; this run has {len(scored)}")
        return Importance(None, reason, name, len(scored))
    dists = distributions(run)
    quantile = target_quantile(len(scored))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            study = optuna.create_study(direction="maximize")
            for params, value in scored:
                study.add_trial(optuna.trial.create_trial(
                    params=params, distributions={k: dists[k] for k in params}, value=value))
            evaluator = evaluator_cls(target_quantile=quantile) if evaluator_cls else None
            values = optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                             params=varying)
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        return Importance(None, f"Optuna could not compute importances: {e}", name, len(scored))
    finally:
        optuna.logging.set_verbosity(verbosity)
    ordered = dict(sorted(values.items(), key=lambda kv: -kv[1]))
    # Optuna's own doubts, except the notice that the evaluator is experimental.
    doubts = [str(w.message) for w in said if not issubclass(w.category, FutureWarning)
              and "experimental" not in str(w.message)]
    caveats = (*_caveats(run, value_column, branch, ordered, scored),
               *dict.fromkeys(f"Optuna: {d}" for d in doubts))
    return Importance(ordered, None, name, len(scored), caveats, quantile)


def target_quantile(n: int) -> float:
    """PED-ANOVA's top group for ``n`` trials: the best 10%, but at least `MIN_TOP` trials."""
    return min(0.5, max(0.1, MIN_TOP / max(n, 1)))


def branch_importances(run: Run, value_column: str = "best_psnr") -> dict[str, Importance]:
    """For each choice of a conditional choice (``lr_schedule cosine``): the importances among
    its trials, where its own parameters exist."""
    return {f"{top.name} {value}": param_importances(run, value_column, (top.name, value))
            for top in run.record.params for value, _ in top.branches}


def is_log(dist: Distribution) -> bool:
    return isinstance(dist, FloatDistribution | IntDistribution) and dist.log


# --- private helpers -----------------------------------------------------------------------------
def _caveats(run: Run, value_column: str, branch: tuple[str, Any] | None,
             shares: dict[str, float], scored: list[tuple[dict[str, Any], float]]
             ) -> list[str]:
    """Why these shares may not be trusted (see the module), one sentence each."""
    out = []
    n = len(scored)
    if n < MIN_TRIALS:
        out.append(f"only {n} trials: the shares are noisy below {MIN_TRIALS}")
    trials = run.trials[~run.trials["error"].astype(bool) & ~is_reference(run.trials)
                        & run.trials[value_column].astype(float).map(math.isfinite)]
    if branch is not None:
        trials = trials[trials[run.param_columns[branch[0]]] == branch[1]]
    budgets = sorted({int(e) for e in trials["epochs_trained"]})
    if len(budgets) > 1:
        early = int((trials["epochs_trained"] < budgets[-1]).sum())
        at = ", ".join(map(str, budgets[:-1]))
        out.append(f"{early} of {len(trials)} trials ended before the full budget (stopped "
                   f"by ASHA, diverged) and are valued at the PSNR they had reached (at epoch "
                   f"{at} against {budgets[-1]}): the shares mix each parameter's effect with "
                   "how far its trials got")
    trend = _trends(scored, list(shares))
    if trend and shares:
        name, rho = max(trend.items(), key=lambda kv: abs(kv[1]))
        if abs(rho) >= _STRONG_TREND and shares.get(name, 0.0) < 0.5 * max(shares.values()):
            out.append(f"the scatter disagrees: {name} has the plainest trend with the PSNR "
                       f"(Spearman rho {rho:+.2f} over {n} trials) but a share of "
                       f"{shares[name]:.3f}; PED-ANOVA weighs what the best trials share, not "
                       "what the worst have in common: read the scatter")
    return out


def _trends(scored: list[tuple[dict[str, Any], float]], names: list[str]) -> dict[str, float]:
    """Each numeric parameter's Spearman rank correlation with the value (where it varies)."""
    import pandas as pd

    out = {}
    values = pd.Series([v for _, v in scored], dtype=float)
    for name in names:
        column = [p.get(name) for p, _ in scored]
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in column):
            continue
        xs = pd.Series(column, dtype=float)
        if xs.nunique() > 1 and values.nunique() > 1:
            rho = xs.corr(values, method="spearman")
            if math.isfinite(rho):
                out[name] = float(rho)
    return out


def _from_range(p: ParamRange) -> Distribution | None:
    """The Optuna distribution of a recorded range; None for one the run did not record."""
    if p.kind in ("choice", "grid"):
        return _categorical(list(p.choices))
    if p.numeric and p.low is not None and p.high is not None:
        if p.kind == "randint":
            return IntDistribution(int(p.low), int(p.high))
        return FloatDistribution(p.low, p.high, log=p.log and p.low > 0)
    return None


def _categorical(values: list[Any]) -> CategoricalDistribution:
    choices = [_plain(v) for v in values]
    return CategoricalDistribution(list(dict.fromkeys(choices)))


def _widen(dist: Distribution, observed: list[Any]) -> Distribution:
    """Stretch the spec's distribution over values it does not contain (the defaults trial may lie
    outside the searched range), since Optuna rejects a trial outside its distribution."""
    if isinstance(dist, CategoricalDistribution):
        extra = [_plain(v) for v in observed if _plain(v) not in dist.choices]
        return _categorical([*dist.choices, *extra]) if extra else dist
    try:
        nums = [float(v) for v in observed]
    except (TypeError, ValueError):
        return _categorical(observed)
    low, high = min(dist.low, *nums), max(dist.high, *nums)
    log_scale = dist.log and low > 0
    if isinstance(dist, IntDistribution):
        return IntDistribution(int(math.floor(low)), int(math.ceil(high)), log=log_scale)
    return FloatDistribution(low, high, log=log_scale)


def _infer(name: str, observed: list[Any]) -> Distribution:
    if any(isinstance(v, bool | str) or not isinstance(v, int | float) for v in observed):
        return _categorical(sorted(set(map(_plain, observed)), key=str))
    nums = [float(v) for v in observed]
    if all(float(v).is_integer() for v in observed) and len(set(nums)) <= 8:
        return _categorical(sorted({int(v) for v in nums}))
    low, high = min(nums), max(nums)
    log_scale = low > 0 and ("lr" in name.lower() or high / low >= 100)
    return FloatDistribution(low, high, log=log_scale)


def _plain(v: Any) -> Any:
    """Python scalars for Optuna: numpy/pandas numbers to int/float, anything else to JSON."""
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if hasattr(v, "item"):
        return v.item()
    return json.dumps(v, sort_keys=True)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
