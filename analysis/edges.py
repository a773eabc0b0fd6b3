"""Edge warnings: a searched numeric parameter whose best values sit at an edge of its range.

When the winner's value, or most (more than half) of the top quarter of the ranked trials, lies
within 5% of the range's width from one edge, the optimum may lie outside the range: one line
says so. The 5% is measured on the parameter's own scale (log for ``loguniform``), so 1.3e-4 in
[1e-4, 1e-1] is at the bottom (3.8% of three decades) though linearly it is 0.03% of the width.

Choice and grid parameters are skipped. Searched milestones are fractions of the budget in
[low, high]: the first milestone is measured against the bottom and the last against the top.

Pure (no pandas, no torch): ``tune.summary`` prints these lines at the end of a search (from Ray's
results) and ``python -m analysis`` and its report print them from the run folder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from analysis.record import ParamRange

EDGE_SHARE = 0.05  # of the range's width, on the parameter's own scale


def edge_warnings(params: Sequence[ParamRange], ranked: Sequence[Mapping[str, Any]],
                  branch: str = "") -> list[str]:
    """One line per numeric parameter (or milestone list) whose best values sit at an edge of
    its range; choices and grids are skipped. The parameters of a conditional choice's branch
    are judged among the trials of that branch (its best one is "the winner" there).

    ``ranked``: each scored trial's values of the searched parameters, best first (a milestone
    list as a list of fractions). A trial without a number for a parameter does not count.
    """
    lines = []
    top = ranked[:max(1, math.ceil(len(ranked) / 4))]
    for r in params:
        for value, subs in r.branches:
            among = [v for v in ranked if v.get(r.name) == value]
            if among:
                lines += edge_warnings(subs, among, f"{r.name} {value}")
        if not (r.numeric or r.kind == "milestones") or r.low is None or r.high is None:
            continue
        if r.high <= r.low or (r.log and r.low <= 0):
            continue
        sides = [_side(r, v.get(r.name)) for v in top]
        line = _line(r, ranked[0].get(r.name) if ranked else None, sides, branch)
        if line:
            lines.append(line)
    return lines


# --- private helpers -----------------------------------------------------------------------------
def _line(r: ParamRange, winner_value: Any, sides: list[str | None], branch: str = ""
          ) -> str | None:
    """``sides``: the edge each of the top quarter's values is at, the winner's first."""
    k = len(sides)
    majority = [s for s in ("top", "bottom") if k >= 2 and sides.count(s) > k / 2]
    winner_side = sides[0] if sides else None
    side = winner_side or next(iter(majority), None)
    if side is None:
        return None
    among = f" {branch}" if branch else ""
    quarter = f"{sides.count(side)} of the top {k}{among} trials"
    winner = f"the best{among} trial's {_text(winner_value)}" if branch else (
        f"the winner {_text(winner_value)}")
    if winner_side != side:
        subject, single = quarter, False
    elif side in majority:
        subject, single = f"{winner} and {quarter}", False
    else:
        subject, single = winner, True
    where = "above" if side == "top" else "below"
    low, high = r.bounds
    return (f"{r.name}: {subject} {'is' if single else 'are'} at the {side} of "
            f"[{_num(low)}, {_num(high)}]; the optimum may lie {where} "
            f"{'it' if single else 'them'}: widen the range")


def _side(r: ParamRange, value: Any) -> str | None:
    """Which edge a value is at on the range's own scale (top, bottom or None); of a milestone
    list, the last milestone is measured against the top, the first against the bottom."""
    nums = _numbers(value)
    if not nums:
        return None
    if _position(r, nums[-1]) >= 1 - EDGE_SHARE:
        return "top"
    if _position(r, nums[0]) <= EDGE_SHARE:
        return "bottom"
    return None


def _position(r: ParamRange, v: float) -> float:
    """0 at ``low``, 1 at ``high``; values outside the range (a defaults trial) go past them."""
    low, high = r.bounds
    if r.log:
        if v <= 0:
            return -math.inf
        return (math.log(v) - math.log(low)) / (math.log(high) - math.log(low))
    return (v - low) / (high - low)


def _numbers(value: Any) -> list[float] | None:
    """A scalar as [v], a milestone list as its numbers; None for anything else."""
    if isinstance(value, str | bytes):
        return None
    items = list(value) if hasattr(value, "__len__") else [value]
    nums = [n for n in map(_number, items) if n is not None]
    return nums if nums and len(nums) == len(items) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _text(value: Any) -> str:
    nums = _numbers(value) or []
    if len(nums) == 1 and not hasattr(value, "__len__"):
        return _num(nums[0])
    return "[" + ", ".join(map(_num, nums)) + "]"


def _num(v: float) -> str:
    return f"{v:.4g}"
