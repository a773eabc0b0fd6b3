"""How the searcher samples a milestone list: as the list itself, in names the user reads.

Milestones are the one non-scalar hyper-parameter. ``lr_scheduler_milestones: {milestones:
{count, low, high}}`` is sampled define-by-run, drop by drop, each a fraction of the budget:

- ``lr_scheduler_milestones/count``: how many drops, a choice (absent when the count is fixed);
- ``lr_scheduler_milestones/1``: the first drop, uniform in [low, high];
- ``lr_scheduler_milestones/k`` (k = 2 .. count): drop k, uniform between drop k-1 and ``high``,
  so the list is increasing by construction (no rejected or re-sorted samples).

Only the drops a trial has are sampled: a one-drop trial has no ``/2``. These are the names and
values the Optuna study (and optuna-dashboard) shows, beside the list itself as the trial's user
attribute ``lr_scheduler_milestones`` (`tune.sampling`); no other encoding exists. `fold` turns
the drops into the list of fractions (rounded to 1e-6, sorted, deduplicated) that the trial's
config, Ray, the run folder and every table hold; `encode` is its inverse, for a point the
searcher is told to try first (the source document's defaults).
"""

from __future__ import annotations

from collections.abc import Sequence

_DECIMALS = 6  # 1e-6 of a budget is under one sample for budgets below a million


def count_name(name: str) -> str:
    """The study's name of how many drops the list ``name`` has."""
    return f"{name}/count"


def drop_name(name: str, k: int) -> str:
    """The study's name of drop ``k`` (from 1) of the list ``name``."""
    return f"{name}/{k}"


def names(name: str, count: tuple[int, int]) -> list[str]:
    """Every name the study can hold for the list ``name``, in the order they are sampled."""
    cmin, cmax = count
    return [*([count_name(name)] if cmin < cmax else []),
            *(drop_name(name, k) for k in range(1, cmax + 1))]


def fold(drops: Sequence[float]) -> tuple[float, ...]:
    """The milestone list from the sampled drops."""
    return tuple(sorted({round(float(m), _DECIMALS) for m in drops}))


def encode(name: str, milestones: Sequence[float], count: tuple[int, int]) -> dict[str, float]:
    """The study's values that sample ``milestones`` (which must fit the count and the range)."""
    cmin, cmax = count
    point: dict[str, float] = {}
    if cmin < cmax:
        point[count_name(name)] = len(milestones)
    point.update({drop_name(name, k): float(m) for k, m in enumerate(milestones, 1)})
    return point
