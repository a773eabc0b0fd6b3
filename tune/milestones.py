"""How the searcher samples a milestone list: the one place that encodes and folds it, on plain
numbers.

Milestones are the one non-scalar hyper-parameter. ``{milestones: {count, low, high}}`` is
searched as independent box-bounded scalars, so Optuna's TPE sees a plain space:

- ``lr_milestones_count``: how many milestones, a choice (absent when the count is fixed);
- ``lr_milestone_1``: the first milestone, uniform in [low, high] (a fraction of the budget);
- ``lr_milestone_<k>_rel`` (k >= 2): where milestone k sits between milestone k-1 and ``high``,
  uniform in [0, 1]. Increasing order holds by construction: no rejected or re-sorted samples.

`fold` turns them into the list of fractions (rounded to 1e-6, sorted, deduplicated; unused
``_rel`` values are ignored) that the trial's config, Ray, the run folder and every table hold;
`encode` is its inverse, for a point the searcher is told to try first (the source document's
defaults). These scalars never leave ``tune``: they live in the Optuna study only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

COUNT = "lr_milestones_count"
FIRST = "lr_milestone_1"
_DECIMALS = 6  # 1e-6 of a budget is under one sample for budgets below a million


def rel(k: int) -> str:
    """Name of the relative position of milestone ``k`` (k >= 2) between milestone k-1 and high."""
    return f"lr_milestone_{k}_rel"


def scalars(count: tuple[int, int]) -> list[str]:
    """The searcher's scalar names, in the order they are sampled."""
    cmin, cmax = count
    return [*([COUNT] if cmin < cmax else []), FIRST, *(rel(k) for k in range(2, cmax + 1))]


def fold(values: Mapping[str, float], count: tuple[int, int], high: float) -> tuple[float, ...]:
    """The milestone list from the searcher's scalars."""
    cmin, cmax = count
    n = int(values[COUNT]) if cmin < cmax else cmin
    marks = [float(values[FIRST])]
    for k in range(2, n + 1):
        marks.append(marks[-1] + float(values[rel(k)]) * (high - marks[-1]))
    return tuple(sorted({round(m, _DECIMALS) for m in marks}))


def encode(milestones: Sequence[float], count: tuple[int, int], high: float) -> dict[str, float]:
    """The scalars that `fold` back into ``milestones`` (which must fit the count and the range)."""
    cmin, cmax = count
    point: dict[str, float] = {}
    if cmin < cmax:
        point[COUNT] = len(milestones)
    point[FIRST] = milestones[0]
    for k in range(2, cmax + 1):
        if k <= len(milestones):
            prev = milestones[k - 2]
            point[rel(k)] = (milestones[k - 1] - prev) / (high - prev)
        else:
            point[rel(k)] = 0.0  # unused when the count is lower; any in-range value
    return point
