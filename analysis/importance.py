"""Searched-parameter distributions and importances, through Optuna's own evaluators.

The distributions come from the run's resolved search spec (``spec`` in the run
record) where it describes a parameter, else they are inferred from the values the trials got: floats on a log
scale when the name says learning rate or the values span two decades, integers with few values and
anything non-numeric as categories. Importances are computed on an in-memory study rebuilt from the
finished, non-errored trials (``optuna.trial.create_trial``); no storage is touched.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from analysis.tables import Run

log = logging.getLogger(__name__)

_LOG_FLOAT = {"loguniform", "log_uniform", "qloguniform", "logfloat", "log"}
_FLOAT = {"uniform", "float", "quniform", "real", "qnormal", "normal"}
_INT = {"randint", "int", "integer", "qrandint"}
_LOG_INT = {"lograndint", "qlograndint", "logint"}
_CATEGORICAL = {"choice", "categorical", "grid", "grid_search", "categories"}
_SPEC_SECTIONS = ("params", "space", "search_space", "param_space", "parameters")


@dataclass(frozen=True)
class Importance:
    values: dict[str, float] | None  # parameter -> share of importance, highest first
    reason: str | None  # why ``values`` is None
    evaluator: str
    n_trials: int


def distributions(run: Run) -> dict[str, BaseDistribution]:
    """One Optuna distribution per sampled parameter that any trial has a value for."""
    spec = _spec_params(run.meta.get("spec"), run.searched)
    out: dict[str, BaseDistribution] = {}
    for name, col in run.search_columns.items():
        observed = [v for v in run.trials[col].tolist() if not _missing(v)]
        if not observed:
            continue
        dist = _from_spec(spec.get(name)) if name in spec else None
        out[name] = _widen(dist, observed) if dist is not None else _infer(name, observed)
    return out


def scored_trials(run: Run, value_column: str = "best_psnr") -> list[tuple[dict[str, Any], float]]:
    """(params, value) of every non-errored trial with a finite value, params cast to their
    distribution's type so that Optuna accepts them."""
    dists = distributions(run)
    out = []
    for _, t in run.trials.iterrows():
        value = float(t[value_column])
        if t["error"] or not math.isfinite(value) or t.get("is_reference", False) is True:
            continue  # the reference run beside the search was not sampled from the space
        params = {}
        for name, dist in dists.items():
            v = t[run.search_columns[name]]
            if not _missing(v):
                params[name] = int(v) if isinstance(dist, IntDistribution) else _plain(v)
        out.append((params, value))
    return out


def param_importances(run: Run, value_column: str = "best_psnr") -> Importance:
    import optuna

    scored = scored_trials(run, value_column)
    varying = [name for name in distributions(run)
               if len({json.dumps(p.get(name), sort_keys=True) for p, _ in scored}) > 1]
    evaluator_cls = getattr(optuna.importance, "PedAnovaImportanceEvaluator", None)
    name = evaluator_cls.__name__ if evaluator_cls else "optuna default"
    if len(scored) < 2 or not varying:
        reason = (f"not enough trials: importance needs at least 2 finished, non-errored trials "
                  f"whose searched parameters differ; this run has {len(scored)}")
        return Importance(None, reason, name, len(scored))
    dists = distributions(run)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-feature and few-trial warnings
            study = optuna.create_study(direction="maximize")
            for params, value in scored:
                study.add_trial(optuna.trial.create_trial(
                    params=params, distributions={k: dists[k] for k in params}, value=value))
            evaluator = evaluator_cls() if evaluator_cls else None
            values = optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                             params=varying)
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        return Importance(None, f"Optuna could not compute importances: {e}", name, len(scored))
    finally:
        optuna.logging.set_verbosity(verbosity)
    ordered = dict(sorted(values.items(), key=lambda kv: -kv[1]))
    return Importance(ordered, None, name, len(scored))


def is_log(dist: BaseDistribution) -> bool:
    return isinstance(dist, FloatDistribution | IntDistribution) and dist.log


# --- private helpers -----------------------------------------------------------------------------
def _spec_params(spec: Any, searched: list[str]) -> dict[str, Any]:
    """Sampled name -> its definition; a ``{milestones: [...]}`` entry becomes its pseudo-params."""
    if not isinstance(spec, dict):
        return {}
    section = next((spec[k] for k in _SPEC_SECTIONS if isinstance(spec.get(k), dict)),
                   {k: v for k, v in spec.items() if k in searched})
    out: dict[str, Any] = {}
    for name, defn in section.items():
        if isinstance(defn, dict) and len(defn) == 1 and next(iter(defn)) == "milestones":
            out.update(_milestone_params(next(iter(defn.values()))))
        else:
            out[name] = defn
    return out


def _milestone_params(args: Any) -> dict[str, Any]:
    """tune/space.py's encoding of searched milestones, ``[count_min, count_max, low, high]``:
    lr_milestones_count (a choice, when the count varies), lr_milestone_1 uniform in [low, high],
    lr_milestone_<k>_rel uniform in [0, 1] for k >= 2."""
    if not (isinstance(args, list) and len(args) == 4):
        return {}
    cmin, cmax, low, high = args
    out: dict[str, Any] = {}
    if cmin < cmax:
        out["lr_milestones_count"] = {"choice": list(range(int(cmin), int(cmax) + 1))}
    out["lr_milestone_1"] = {"uniform": [low, high]}
    out.update({f"lr_milestone_{k}_rel": {"uniform": [0.0, 1.0]} for k in range(2, int(cmax) + 1)})
    return out


def _from_spec(defn: Any) -> BaseDistribution | None:
    """Read the usual spellings: {"type": "loguniform", "low": .., "high": ..}, {"loguniform":
    [lo, hi]}, {"choice": [...]}, {"type": "choice", "values": [...]}, a plain list of choices."""
    if isinstance(defn, list):
        return _categorical(defn)
    if not isinstance(defn, dict):
        return None
    kind = next((str(defn[k]).lower() for k in ("type", "kind", "distribution", "sampler")
                 if k in defn), None)
    args: Any = None
    if kind is None and len(defn) == 1:
        kind, args = next(iter(defn.items()))
        kind = str(kind).lower()
    if kind is None:
        return None
    if kind in _CATEGORICAL:
        choices = args if args is not None else next(
            (defn[k] for k in ("values", "choices", "categories", "options") if k in defn), None)
        return _categorical(choices) if isinstance(choices, list) else None
    low, high = (args[0], args[1]) if isinstance(args, list) and len(args) >= 2 else (
        _first(defn, "low", "lower", "min"), _first(defn, "high", "upper", "max"))
    try:
        low, high = float(low), float(high)
    except (TypeError, ValueError):
        return None
    log_scale = kind in _LOG_FLOAT | _LOG_INT or bool(defn.get("log", False))
    if log_scale and low <= 0:
        log_scale = False
    if kind in _INT | _LOG_INT:
        return IntDistribution(int(low), int(high), log=log_scale)
    if kind in _LOG_FLOAT | _FLOAT:
        return FloatDistribution(low, high, log=log_scale)
    return None


def _first(d: dict[str, Any], *keys: str) -> Any:
    return next((d[k] for k in keys if k in d), None)


def _categorical(values: list[Any]) -> CategoricalDistribution:
    choices = [_plain(v) for v in values]
    return CategoricalDistribution(list(dict.fromkeys(choices)))


def _widen(dist: BaseDistribution, observed: list[Any]) -> BaseDistribution:
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


def _infer(name: str, observed: list[Any]) -> BaseDistribution:
    if any(isinstance(v, bool | str) for v in observed):
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
