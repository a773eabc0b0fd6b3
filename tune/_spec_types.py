"""The search spec's types and constants: `SearchSpec` and the names it uses.

The bottom of the one-way line in `tune/`: this module imports nothing from `tune`. Above it,
`tune._space_rules` builds a `SearchSpec` from a parsed file (with `tune._spec_checks`),
`tune._plan_text` describes one, and `tune.space` is the public face of all three.

A searched parameter is an `analysis.record.ParamRange`: its range as the space file gives it,
the same type the run record keeps. A trial's values are in the user's form too (a milestone
list is a list of fractions); how the searcher samples them is `tune.sampling`'s business.

A file holds only what differs from the defaults (listed, with reasons, at the top of
`tune._space_rules`). Everything is checked at load time, so a typo fails before Ray starts, with a
message naming the file, the key path, the value and the rule.
This module must not import ray: the CLI's ``--dry-run`` builds and prints the plan without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.record import KINDS, ParamRange, active
from trainable.config import TrainConfig
from trainable.errors import ConfigError

METRIC = "psnr"  # validation PSNR (dB) reported at each validation; higher is better
MODE = "max"
TIME_ATTR = "epoch"  # epochs of `epoch_samples` completed: comparable whatever batch/accumulation

SCHEDULERS = ("asha", "fifo", "hyperband", "median", "pbt")
ALGORITHMS = ("optuna", "random", "grid")
__all__ = ["ALGORITHMS", "KINDS", "METRIC", "MODE", "SCHEDULERS", "TIME_ATTR", "ParamRange",
           "SearchSpec", "asha_rungs", "grid_points"]


@dataclass(frozen=True)
class SearchSpec:
    path: Path
    params: tuple[ParamRange, ...]
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
    fuse: int  # trials trained as one network per engine (tune.fusion); 1: each trial alone
    include_defaults: bool  # run the source document's defaults once, as the reference
    reference_inside: bool  # ...as the first trial (it lies inside the space), else beside it
    # The parsed file, kept so `tune.space.with_overrides` re-validates through the same code
    # path. A plain dict (read, never mutated) because specs must pickle: Ray ships them to every
    # trial.
    document: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def trial_config(self, values: Mapping[str, Any]) -> TrainConfig:
        """The full TrainConfig of a trial from its searched values (as Ray passes them)."""
        values = {k: _plain(v) for k, v in values.items()}
        expected = [p.name for p in self.active(values)]
        # A grid's points fill every searched key; another choice's parameters stay None there.
        values = {k: v for k, v in values.items() if k in expected or v is not None}
        unknown = sorted(set(values) - set(expected))
        missing = [n for n in expected if n not in values]
        if unknown or missing:
            raise ConfigError(
                f"trial config for {self.path.name}: expected exactly the searched keys "
                f"{', '.join(expected)}; unknown: {', '.join(unknown) or '-'}; "
                f"missing: {', '.join(missing) or '-'}"
            )
        return self.base.replace(where=f"trial config for {self.path.name}", **values)

    def active(self, values: Mapping[str, Any]) -> list[ParamRange]:
        """The searched parameters a trial with these values has (`analysis.record.active`)."""
        return active(self.params, values)

    def default_values(self) -> dict[str, Any]:
        """The source document's defaults' values of the searched parameters (user form), a
        conditional choice's branch included."""
        values = {p.name: _jsonable(getattr(self.base, p.name)) for p in self.params}
        return {p.name: values.get(p.name, _jsonable(getattr(self.base, p.name)))
                for p in self.active(values)}

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
        """Trials per sample over the grid parameters (1 without any): a conditional grid counts
        each branch's own grid points."""
        return len(grid_points([p for p in self.params if p.kind == "grid"]))

    def total_trials(self) -> int:
        """Trials Ray will start: `trials` samples, each expanded over the grid.

        The defaults point takes the place of the first sample, and, having every grid value
        fixed, it is not expanded (Ray's `_count_variants`).
        """
        if self.reference_inside:
            return 1 + (self.trials - 1) * self.grid_size()
        return self.trials * self.grid_size()


def grid_points(params: Sequence[ParamRange]) -> list[dict[str, Any]]:
    """Every combination of the grid parameters' values, in the file's order; a conditional
    grid (``{grid: {a: {...}, b: {...}}}``) contributes each choice with its own branch's grid."""
    points: list[dict[str, Any]] = [{}]
    for p in params:
        options: list[dict[str, Any]] = []
        for value in p.choices:
            for sub in grid_points(p.active(value)):
                options.append({p.name: _jsonable(value), **sub})
        points = [{**point, **option} for point in points for option in options]
    return points


def asha_rungs(epochs: int, grace_period: int, reduction_factor: int) -> list[int]:
    # Ray's rung count, int(log(max_t / grace) / log(rf) + 1). Where the ratio is an exact power
    # of rf, rounding in the last bit may add or drop the top rung, but that rung equals max_t and
    # is filtered out below, so math.log agrees with Ray's np.log on every rung that decides.
    n = int(math.log(epochs / grace_period) / math.log(reduction_factor) + 1)
    rungs = (grace_period * reduction_factor**k for k in range(n))
    return [r for r in rungs if r < epochs]


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
