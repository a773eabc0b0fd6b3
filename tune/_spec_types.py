"""The search spec's types and constants: `ParamSpec`, `SearchSpec` and the names they use.

The bottom of the one-way line in `tune/`: this module imports nothing from `tune`. Above it,
`tune._space_rules` builds a `SearchSpec` from a parsed file (with `tune._spec_checks`),
`tune._plan_text` describes one, and `tune.space` is the public face of all three.

A file holds only what differs from the defaults (listed, with reasons, at the top of
`tune._space_rules`). Everything is checked at load time, so a typo fails before Ray starts, with a
message naming the file, the key path, the value and the rule.
This module must not import ray: the CLI's ``--dry-run`` builds and prints the plan without it.

Milestones are the one non-scalar hyper-parameter. `{milestones: {count, low, high}}` is searched as
independent box-bounded scalars, so Optuna's (multivariate) TPE sees a plain space:

- ``lr_milestones_count``: how many milestones, a choice (absent when count is fixed);
- ``lr_milestone_1``: the first milestone, uniform in [low, high] (a fraction of the whole budget);
- ``lr_milestone_<k>_rel`` (k >= 2): where milestone k sits between milestone k-1 and ``high``,
  uniform in [0, 1]. Increasing order holds by construction: no rejected or re-sorted samples.

`SearchSpec.trial_config` folds them back into ``lr_scheduler_milestones`` (rounded to 1e-6, sorted,
deduplicated; unused ``_rel`` values are ignored), and `SearchSpec.default_point` encodes the
defaults' (0.1, 0.8) the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainable.config import TrainConfig
from trainable.errors import ConfigError

METRIC = "psnr"  # validation PSNR (dB) reported at each validation; higher is better
MODE = "max"
TIME_ATTR = "epoch"  # epochs of `epoch_samples` completed: comparable whatever batch/accumulation

KINDS = ("loguniform", "uniform", "randint", "choice", "grid", "milestones")
SCHEDULERS = ("asha", "fifo", "hyperband", "median", "pbt")
ALGORITHMS = ("optuna", "random", "grid")

MILESTONE_COUNT = "lr_milestones_count"
MILESTONE_FIRST = "lr_milestone_1"
_MILESTONE_DECIMALS = 6  # 1e-6 of a budget is under one sample for budgets below a million


def milestone_rel(k: int) -> str:
    """Name of the relative position of milestone ``k`` (k >= 2) between milestone k-1 and high."""
    return f"lr_milestone_{k}_rel"


@dataclass(frozen=True)
class ParamSpec:
    name: str  # a TrainConfig field, or lr_scheduler_milestones for kind "milestones"
    kind: str  # one of KINDS
    # loguniform/uniform/randint: (low, high), high inclusive; choice/grid: the values;
    # milestones: (count_min, count_max, low, high)
    args: tuple[Any, ...]


@dataclass(frozen=True)
class SearchSpec:
    path: Path
    params: tuple[ParamSpec, ...]
    base: TrainConfig  # defaults + `config` + `data` + `budget` + `seed`
    scheduler: str
    grace_period: int  # epochs (asha, median)
    reduction_factor: int  # asha, hyperband
    perturbation_interval: int  # epochs (pbt)
    algorithm: str
    search_seed: int
    n_startup_trials: int  # optuna: random trials before TPE takes over
    trials: int
    max_concurrent: int
    cpus_per_trial: float
    gpus_per_trial: float
    include_defaults: bool  # run the source document's defaults once, as the reference
    reference_inside: bool  # ...as the first trial (it lies inside the space), else beside it
    # The parsed file, kept so `tune.space.with_overrides` re-validates through the same code
    # path. A plain dict (read, never mutated) because specs must pickle: Ray ships them to every
    # trial.
    document: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # --- the searched parameters as the searcher sees them ----------------------------------
    def flat_params(self) -> tuple[ParamSpec, ...]:
        """Scalar parameters actually sampled: ``milestones`` expanded into its pseudo-params."""
        flat: list[ParamSpec] = []
        for p in self.params:
            if p.kind != "milestones":
                flat.append(p)
                continue
            cmin, cmax, low, high = p.args
            if cmin < cmax:
                flat.append(ParamSpec(MILESTONE_COUNT, "choice", tuple(range(cmin, cmax + 1))))
            flat.append(ParamSpec(MILESTONE_FIRST, "uniform", (low, high)))
            flat.extend(ParamSpec(milestone_rel(k), "uniform", (0.0, 1.0))
                        for k in range(2, cmax + 1))
        return tuple(flat)

    def trial_config(self, sampled: Mapping[str, Any]) -> TrainConfig:
        """The full TrainConfig of a trial from its sampled values (as Ray passes them)."""
        values = {k: _plain(v) for k, v in sampled.items()}
        expected = [p.name for p in self.flat_params()]
        unknown = sorted(set(values) - set(expected))
        missing = [n for n in expected if n not in values]
        if unknown or missing:
            raise ConfigError(
                f"trial config for {self.path.name}: expected exactly the searched keys "
                f"{', '.join(expected)}; unknown: {', '.join(unknown) or '-'}; "
                f"missing: {', '.join(missing) or '-'}"
            )
        changes: dict[str, Any] = {}
        for p in self.params:
            if p.kind == "milestones":
                changes[p.name] = list(_fold_milestones(p, values))
            else:
                changes[p.name] = values[p.name]
        return TrainConfig.from_dict({**self.base.to_dict(), **changes},
                                     where=f"trial config for {self.path.name}")

    def default_point(self) -> dict[str, Any]:
        """The defaults' values of the searched parameters, in `flat_params` encoding."""
        point: dict[str, Any] = {}
        for p in self.params:
            value = getattr(self.base, p.name)
            if p.kind == "milestones":
                point.update(_encode_milestones(p, value))
            else:
                point[p.name] = list(value) if isinstance(value, tuple) else value
        return point

    # --- derived plan ---------------------------------------------------------------------------
    def rungs(self) -> list[int]:
        """ASHA decision points in epochs; [] for other schedulers.

        Ray's `_Bracket` makes rungs grace * rf^k for k < int(log(max_t / grace) / log(rf) + 1);
        a rung at max_t is dropped here because a trial reaching max_t is stopped before the rung
        is consulted, so it never decides anything.
        """
        if self.scheduler != "asha":
            return []
        return asha_rungs(self.base.epochs, self.grace_period, self.reduction_factor)

    def grid_size(self) -> int:
        """Trials per sample under Ray's grid expansion (1 without grid params)."""
        size = 1
        for p in self.params:
            if p.kind == "grid":
                size *= len(p.args)
        return size

    def total_trials(self) -> int:
        """Trials Ray will start: `trials` samples, each expanded over the grid.

        The defaults point takes the place of the first sample, and, having every grid value
        fixed, it is not expanded (Ray's `_count_variants`).
        """
        if self.reference_inside:
            return 1 + (self.trials - 1) * self.grid_size()
        return self.trials * self.grid_size()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able snapshot of the resolved spec, for the run folder."""
        return {
            "path": str(self.path),
            "params": {p.name: {p.kind: _jsonable(p.args)} for p in self.params},
            "flat_params": [p.name for p in self.flat_params()],
            "base": self.base.to_dict(),
            "metric": METRIC, "mode": MODE, "time_attr": TIME_ATTR,
            "scheduler": {"type": self.scheduler, "grace_period": self.grace_period,
                          "reduction_factor": self.reduction_factor,
                          "perturbation_interval": self.perturbation_interval,
                          "rungs": self.rungs()},
            "search": {"algorithm": self.algorithm, "seed": self.search_seed,
                       "n_startup_trials": self.n_startup_trials},
            "trials": self.trials, "total_trials": self.total_trials(),
            "max_concurrent": self.max_concurrent,
            "resources": {"cpus": self.cpus_per_trial, "gpus": self.gpus_per_trial},
            "include_defaults": self.include_defaults,
            "reference_inside": self.reference_inside,
            "default_point": self.default_point() if self.reference_inside else None,
        }



def asha_rungs(epochs: int, grace_period: int, reduction_factor: int) -> list[int]:
    # Ray's rung count, int(log(max_t / grace) / log(rf) + 1). Where the ratio is an exact power
    # of rf, rounding in the last bit may add or drop the top rung, but that rung equals max_t and
    # is filtered out below, so math.log agrees with Ray's np.log on every rung that decides.
    n = int(math.log(epochs / grace_period) / math.log(reduction_factor) + 1)
    rungs = (grace_period * reduction_factor**k for k in range(n))
    return [r for r in rungs if r < epochs]


# --- milestones encoding --------------------------------------------------------------------------
def _fold_milestones(p: ParamSpec, values: Mapping[str, Any]) -> tuple[float, ...]:
    cmin, cmax, _, high = p.args
    count = values[MILESTONE_COUNT] if cmin < cmax else cmin
    if isinstance(count, bool) or count not in range(cmin, cmax + 1):
        raise ConfigError(f"The value of `{MILESTONE_COUNT}` is {count!r}, "
                          f"but must be an integer in [{cmin}, {cmax}].")
    marks = [float(values[MILESTONE_FIRST])]
    for k in range(2, count + 1):
        marks.append(marks[-1] + float(values[milestone_rel(k)]) * (high - marks[-1]))
    return tuple(sorted({round(m, _MILESTONE_DECIMALS) for m in marks}))


def _encode_milestones(p: ParamSpec, milestones: tuple[float, ...]) -> dict[str, Any]:
    """Inverse of `_fold_milestones`; `rules` checked at load time that the inputs fit."""
    cmin, cmax, _, high = p.args
    point: dict[str, Any] = {}
    if cmin < cmax:
        point[MILESTONE_COUNT] = len(milestones)
    point[MILESTONE_FIRST] = milestones[0]
    for k in range(2, cmax + 1):
        if k <= len(milestones):
            prev = milestones[k - 2]
            point[milestone_rel(k)] = (milestones[k - 1] - prev) / (high - prev)
        else:
            point[milestone_rel(k)] = 0.0  # unused when the count is lower; any in-range value
    return point


def _plain(value: Any) -> Any:
    """numpy scalars (Ray's samplers may return them) to Python values TrainConfig accepts."""
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value
