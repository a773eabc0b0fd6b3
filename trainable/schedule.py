"""Learning-rate schedules as pure functions of training progress (nanoGPT's ``get_lr``).

The LR of an update is ``model_lr * warm-up * schedule``, a function of the samples seen before
it and of the config alone: nothing to checkpoint but the progress, a resume is exact, and every
position is a fraction of the budget, measured in samples (so trials that search batch size or
accumulation compare at equal data seen).

- **warm-up** (``warmup_fraction`` w, any schedule): linear, ``min(1, (s + u) / (w T))`` for
  ``s`` samples seen, ``u`` samples per update and a budget of ``T`` samples: the first update
  already moves (1/(wT/u) of the LR), the last one of the warm-up runs at the full LR.
- **multistep** (the source document's MultiStepLR): ``gamma ** k``, k the milestones passed
  (``lr_scheduler_milestones``, fractions of the budget).
- **cosine** (section 5 of the source document; ``CosineAnnealingLR``): from 1 at the end of the
  warm-up down to ``lr_min_fraction`` at ``lr_cosine_end`` (the end of the budget unless a
  resume with a changed budget moved it), flat after it.
- **cosine_restarts** (section 6; ``CosineAnnealingWarmRestarts``, SGDR): cosine cycles from the
  end of the warm-up, the first ``lr_restart_period`` of the budget long, each next one
  ``lr_restart_mult`` times the one before; back to the full LR at every restart.

Each schedule has fields of its own (`FIELDS`, with their defaults); the others are None in a
config that uses it, so a setting that would be silently ignored is refused instead.
"""

from __future__ import annotations

import math
from typing import Protocol

SCHEDULES = ("multistep", "cosine", "cosine_restarts")
# Each schedule's own fields and their defaults (the multistep ones are the source document's).
FIELDS: dict[str, dict[str, object]] = {
    "multistep": {"lr_scheduler_milestones": (0.1, 0.8), "lr_scheduler_gamma": 0.1},
    "cosine": {"lr_min_fraction": 0.0, "lr_cosine_end": 1.0},
    "cosine_restarts": {"lr_min_fraction": 0.0, "lr_restart_period": 0.25,
                        "lr_restart_mult": 1.0},
}
SPECIFIC = tuple(dict.fromkeys(k for fields in FIELDS.values() for k in fields))
# The fields that are positions in the budget: a resume with another budget rescales them so each
# keeps its sample count.
POSITIONS = ("warmup_fraction", "lr_scheduler_milestones", "lr_cosine_end", "lr_restart_period")


class Schedule(Protocol):
    """What the schedule reads of a TrainConfig (read-only: a frozen dataclass matches it)."""

    @property
    def lr_schedule(self) -> str: ...
    @property
    def warmup_fraction(self) -> float: ...
    @property
    def lr_scheduler_milestones(self) -> tuple[float, ...] | None: ...
    @property
    def lr_scheduler_gamma(self) -> float | None: ...
    @property
    def lr_min_fraction(self) -> float | None: ...
    @property
    def lr_cosine_end(self) -> float | None: ...
    @property
    def lr_restart_period(self) -> float | None: ...
    @property
    def lr_restart_mult(self) -> float | None: ...


def factor(c: Schedule, samples_seen: int, total_samples: int, samples_per_update: int) -> float:
    """The multiplier of ``model_lr`` for the update after ``samples_seen`` samples."""
    p = samples_seen / total_samples
    warm = 1.0
    if c.warmup_fraction > 0:
        warm = min(1.0, (samples_seen + samples_per_update) / (c.warmup_fraction * total_samples))
    if c.lr_schedule == "multistep":
        assert c.lr_scheduler_milestones is not None and c.lr_scheduler_gamma is not None
        passed = sum(1 for m in c.lr_scheduler_milestones if p >= m)
        return warm * c.lr_scheduler_gamma**passed
    assert c.lr_min_fraction is not None
    t = max(p - c.warmup_fraction, 0.0)  # the cosine starts where the warm-up ends
    if c.lr_schedule == "cosine":
        assert c.lr_cosine_end is not None
        span = c.lr_cosine_end - c.warmup_fraction
        q = min(t / span, 1.0)
    else:
        assert c.lr_restart_period is not None and c.lr_restart_mult is not None
        q = _cycle_position(t, c.lr_restart_period, c.lr_restart_mult)
    return warm * (c.lr_min_fraction + (1 - c.lr_min_fraction) * 0.5 * (1 + math.cos(math.pi * q)))


def _cycle_position(t: float, period: float, mult: float) -> float:
    """Where ``t`` (budget fractions since the first cycle began) lies in its cycle, in [0, 1).

    Boundaries are judged to 1e-9 of a budget: 0.6 / 0.2 is 2.9999999999999996 in floating point,
    and the update at 60% of the budget must restart, as the schedule says, not end a cycle."""
    eps = 1e-9
    if mult == 1.0:
        x = t / period
        return max(x - math.floor(x + eps), 0.0)
    # Cycle i starts at period * (mult**i - 1) / (mult - 1) and lasts period * mult**i.
    i = math.floor(math.log(t * (mult - 1) / period + 1, mult)) if t > 0 else 0
    while True:  # one step either way where floating point put t across a boundary
        start = period * (mult**i - 1) / (mult - 1)
        length = period * mult**i
        if start > t + eps:
            i -= 1
        elif t - start >= length - eps:
            i += 1
        else:
            return max((t - start) / length, 0.0)
