"""Edge warnings: a searched numeric parameter whose best values sit at an edge of its range.

When the winner's value, or most (more than half) of the top quarter of the ranked trials, lies
within 5% of the range's width from one edge, the optimum may lie outside the range: one line
says so. The 5% is measured on the parameter's own scale (log for ``loguniform``), so 1.3e-4 in
[1e-4, 1e-1] is at the bottom (3.8% of three decades) though linearly it is 0.03% of the width.

Choice and grid parameters are skipped. Searched milestones are fractions of the budget in
[low, high]: the first milestone is measured against the bottom and the last against the top.

Pure and standard-library only: ``tune.summary`` prints these lines at the end of a search (from
Ray's results) and ``python -m analysis`` and its report print them from the run folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EDGE_SHARE = 0.05  # of the range's width, on the parameter's own scale
_LINEAR = {"uniform": False, "randint": False, "loguniform": True}


@dataclass(frozen=True)
class Range:
    name: str  # the searched parameter, the key of its value in a trial's values
    low: float
    high: float
    log: bool


def ranges(spec_params: Mapping[str, Any]) -> list[Range]:
    """The numeric ranges of a search spec's ``params``, as ``SearchSpec.to_dict`` records them
    (``{name: {kind: args}}``); choice, grid and unreadable entries are left out."""
    out = []
    for name, defn in spec_params.items():
        if not (isinstance(defn, Mapping) and len(defn) == 1):
            continue
        kind, args = next(iter(defn.items()))
        if not isinstance(args, list | tuple):
            continue
        if kind in _LINEAR and len(args) == 2:
            low, high = args
            log = _LINEAR[kind]
        elif kind == "milestones" and len(args) == 4:
            _, _, low, high = args
            log = False
        else:
            continue
        try:
            low, high = float(low), float(high)
        except (TypeError, ValueError):
            continue
        if high > low and (low > 0 or not log):
            out.append(Range(str(name), low, high, log))
    return out


def edge_warnings(ranges_: Sequence[Range], ranked: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per parameter whose best values sit at an edge of its range.

    ``ranked``: each scored trial's values of the searched parameters, best first (a milestone
    list as a list or its JSON text). A trial without a number for a parameter does not count.
    """
    lines = []
    top = ranked[:max(1, math.ceil(len(ranked) / 4))]
    for r in ranges_:
        sides = [_side(r, v.get(r.name)) for v in top]
        line = _line(r, ranked[0].get(r.name) if ranked else None, sides)
        if line:
            lines.append(line)
    return lines


# --- private helpers -----------------------------------------------------------------------------
def _line(r: Range, winner_value: Any, sides: list[str | None]) -> str | None:
    """``sides``: the edge each of the top quarter's values is at, the winner's first."""
    k = len(sides)
    majority = [s for s in ("top", "bottom") if k >= 2 and sides.count(s) > k / 2]
    winner_side = sides[0] if sides else None
    side = winner_side or next(iter(majority), None)
    if side is None:
        return None
    quarter = f"{sides.count(side)} of the top {k} trials"
    if winner_side != side:
        subject, single = quarter, False
    elif side in majority:
        subject, single = f"the winner {_text(winner_value)} and {quarter}", False
    else:
        subject, single = f"the winner {_text(winner_value)}", True
    where = "above" if side == "top" else "below"
    return (f"{r.name}: {subject} {'is' if single else 'are'} at the {side} of "
            f"[{_num(r.low)}, {_num(r.high)}]; the optimum may lie {where} "
            f"{'it' if single else 'them'}: widen the range")


def _side(r: Range, value: Any) -> str | None:
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


def _position(r: Range, v: float) -> float:
    """0 at ``low``, 1 at ``high``; values outside the range (a defaults trial) go past them."""
    if r.log:
        if v <= 0:
            return -math.inf
        return (math.log(v) - math.log(r.low)) / (math.log(r.high) - math.log(r.low))
    return (v - r.low) / (r.high - r.low)


def _numbers(value: Any) -> list[float] | None:
    """A scalar as [v], a milestone list (or its JSON text) as its numbers; None for anything
    else."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    items = list(value) if isinstance(value, list | tuple) else [value]
    nums = [_number(v) for v in items]
    return None if not nums or None in nums else nums  # type: ignore[return-value]


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
    if len(nums) == 1 and not isinstance(value, list | tuple | str):
        return _num(nums[0])
    return "[" + ", ".join(map(_num, nums)) + "]"


def _num(v: float) -> str:
    return f"{v:.4g}"
