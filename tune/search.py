"""Turn a validated `SearchSpec` into Ray Tune objects: scheduler and searcher.

The only module of the search layer that imports ray and optuna. Metric and mode are set on the
searcher (Ray requires them where it gets a define-by-run space) and on `tune.TuneConfig`, never on
the scheduler: setting them on the scheduler as well makes Ray raise.

TPE and random search sample through Optuna (`tune.sampling.SpaceSampler`), so every trial's
values reach Ray in the user's form. A grid, and PBT (which refuses a searcher and perturbs
Ray's domains itself), use Ray's `BasicVariantGenerator` over `param_space`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
    TrialScheduler,
)
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchAlgorithm, Searcher
from ray.tune.search.optuna import OptunaSearch

from trainable.errors import InputError
from tune.ray_edge.optuna_search import PruningOptunaSearch
from tune.ray_edge.version import known as ray_known
from tune.sampling import SpaceSampler, searcher_point
from tune.space import METRIC, MODE, TIME_ATTR, ParamRange, SearchSpec, grid_points

__all__ = ["METRIC", "MODE", "TIME_ATTR", "concurrency_cap", "make_scheduler", "make_searcher",
           "num_samples", "param_space", "study_journal"]

JOURNAL_NAME = "optuna_journal.log"


def param_space(spec: SearchSpec) -> dict[str, Any]:
    """Ray Tune domains of the searched parameters for PBT, which perturbs them itself; empty
    where Optuna samples (its define-by-run space replaces it) and for a grid (its points are
    listed, `grid_points`)."""
    if spec.algorithm == "grid" and spec.scheduler != "pbt":
        # Ray writes each listed point into these keys (it needs them present): a parameter of
        # another choice's branch stays None, which `SearchSpec.trial_config` leaves out.
        return {p.name: None for top in spec.params for p in top.walk()}
    if spec.scheduler != "pbt":
        return {}
    return {p.name: _domain(p) for p in spec.params}


def num_samples(spec: SearchSpec) -> int:
    """Ray's ``num_samples``: every trial, except under PBT, where Ray expands the grid itself."""
    return spec.trials if spec.scheduler == "pbt" else spec.total_trials()


def _domain(p: ParamRange) -> Any:
    if p.kind == "loguniform":
        return tune.loguniform(*p.bounds)
    if p.kind == "uniform":
        return tune.uniform(*p.bounds)
    if p.kind == "randint":
        low, high = p.bounds
        return tune.randint(int(low), int(high) + 1)  # Ray's high is exclusive, ours inclusive
    if p.kind == "choice":
        return tune.choice([_listed(c) for c in p.choices])
    if p.kind == "grid":
        return tune.grid_search([_listed(c) for c in p.choices])
    # The rules refuse `milestones` where Ray samples (grid, PBT).
    raise ValueError(f"{p.name}: no Ray domain for kind {p.kind!r}")


def _listed(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def make_scheduler(spec: SearchSpec) -> TrialScheduler:
    epochs = spec.base.epochs
    if spec.scheduler == "asha":
        return ASHAScheduler(time_attr=TIME_ATTR, max_t=epochs, grace_period=spec.grace_period,
                             reduction_factor=spec.reduction_factor)
    if spec.scheduler == "hyperband":
        return HyperBandScheduler(time_attr=TIME_ATTR, max_t=epochs,
                                  reduction_factor=spec.reduction_factor)
    if spec.scheduler == "median":
        return MedianStoppingRule(time_attr=TIME_ATTR, grace_period=spec.grace_period)
    if spec.scheduler == "pbt":
        return _pbt(spec)
    return FIFOScheduler()


def _pbt(spec: SearchSpec) -> PopulationBasedTraining:
    # PBT multiplies a Domain's value by 0.8 or 1.2 whatever its type, which breaks choices
    # ("sgd" * 1.2) and leaves ranges (a milestone fraction above 1). So choices go as lists
    # (PBT then steps to a neighbouring value) and numbers are clipped back into their range.
    mutations: dict[str, Any] = {}
    bounds: dict[str, tuple[float, float, bool]] = {}
    for p in spec.params:
        if p.kind == "choice":
            mutations[p.name] = [_listed(c) for c in p.choices]
        elif p.numeric:
            assert p.low is not None and p.high is not None
            mutations[p.name] = _domain(p)
            bounds[p.name] = (p.low, p.high, p.kind == "randint")
        # grid values are fixed per trial: nothing to mutate
    if not mutations:
        raise InputError(f"{spec.path}: PBT needs at least one sampled (non-grid) parameter "
                         "to mutate")
    return PopulationBasedTraining(time_attr=TIME_ATTR,
                                   perturbation_interval=spec.perturbation_interval,
                                   hyperparam_mutations=mutations,
                                   custom_explore_fn=_ClipToRanges(bounds))


class _ClipToRanges:
    """PBT's custom_explore_fn; a class, not a closure, so the scheduler state can be pickled."""

    def __init__(self, bounds: dict[str, tuple[float, float, bool]]) -> None:
        self.bounds = bounds

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for name, (low, high, integer) in self.bounds.items():
            if name in config:
                value = min(max(config[name], low), high)
                config[name] = int(round(value)) if integer else value
        return config


def study_journal(study_dir: Path) -> Path:
    """Where `make_searcher` keeps the Optuna study (open it with ``optuna-dashboard PATH``)."""
    return Path(study_dir).resolve() / JOURNAL_NAME


def make_searcher(spec: SearchSpec, study_dir: Path) -> Searcher | SearchAlgorithm:
    """The search algorithm for `tune.TuneConfig(search_alg=...)`, capped per `concurrency_cap`.

    Optuna's study lives in a journal file in ``study_dir`` (the run folder) so the dashboard and
    later analysis can read it; an existing journal is refused, because reopening it would mix a
    previous run's trials into this one's TPE model (resume with `Tuner.restore` instead, which
    restores the searcher from the experiment state).
    """
    cap = concurrency_cap(spec)
    if spec.scheduler == "pbt":
        points = [spec.default_values()] if spec.reference_inside else []
        return BasicVariantGenerator(points_to_evaluate=points or None, max_concurrent=cap or 0,
                                     random_state=spec.search_seed)
    if spec.algorithm == "grid":  # every point, `trials` times over, in the file's order
        return BasicVariantGenerator(
            points_to_evaluate=grid_points(spec.params) * spec.trials, max_concurrent=cap or 0,
            random_state=spec.search_seed)
    journal = study_journal(study_dir)
    if journal.exists():
        raise InputError(f"{journal} already exists: this folder holds an earlier Optuna study; "
                         "resume that run or start in a new folder")
    journal.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    if spec.algorithm == "optuna":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(
            seed=spec.search_seed, n_startup_trials=spec.n_startup_trials)
    else:
        sampler = optuna.samplers.RandomSampler(seed=spec.search_seed)
    space = SpaceSampler(spec)
    points = [searcher_point(spec, spec.default_values())] if spec.reference_inside else []
    searcher: Searcher
    if ray_known():
        searcher = PruningOptunaSearch(space=space, metric=METRIC, mode=MODE, sampler=sampler,
                                       storage=storage, study_name=spec.path.stem,
                                       points_to_evaluate=points or None, time_attr=TIME_ATTR,
                                       max_t=spec.base.epochs,
                                       run_dir=str(Path(study_dir).resolve()))
    else:  # its private attributes are unverified there: Ray's own, stopped trials COMPLETE
        searcher = OptunaSearch(space=space, metric=METRIC, mode=MODE, sampler=sampler,
                                storage=storage, study_name=spec.path.stem,
                                points_to_evaluate=points or None)
    return ConcurrencyLimiter(searcher, max_concurrent=cap) if cap else searcher


def concurrency_cap(spec: SearchSpec) -> int | None:
    """The searcher's cap on live trials: `max_concurrent`, except under synchronous HyperBand.

    Paused trials stay live for a concurrency cap, so HyperBand's brackets never fill and it
    stops nothing (measured on Ray 2.60: 12 trials, max_t 9, cap 2, every trial ran to the end).
    There, per-trial resources alone bound how many run at once. Do not also pass
    `TuneConfig(max_concurrent_trials=...)`: Ray would wrap the searcher in a cap of its own.
    """
    return None if spec.scheduler == "hyperband" else spec.max_concurrent
