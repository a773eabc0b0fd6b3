"""What the searcher samples, and how a trial's values come out of it in the user's form.

A search space is sampled by Optuna, define-by-run (`SpaceSampler`, the ``space`` of Ray's
`OptunaSearch`), for TPE and for random search alike (Optuna's `RandomSampler`). Each trial's
values come back as the space file's user would write them: ``lr_scheduler_milestones`` is a
list of fractions, so Ray's trial config, ``params.json``, ``result.json``, TensorBoard's
HParams and every table hold the same form. So does the Optuna study (what optuna-dashboard
shows): a milestone list as its drops, ``lr_scheduler_milestones/count``, ``/1``, ``/2``, only
those the trial has (`tune.milestones`), and as the list itself, the trial's user attribute of
the parameter's name; a choice of lists as each list's text (``"[0.1, 0.8]"``).

Parameters are suggested in the space file's order, each as the distribution Ray's own conversion
of its domains gave (names, bounds, order): ``loguniform`` a log float, ``uniform`` a float,
``randint`` an int (both bounds included), ``choice`` a categorical; ``milestones`` its count,
then each drop between the one before it and ``high``. A ``grid`` parameter under random search
is not sampled: sample ``s`` of the search takes grid point ``s mod G``, so ``trials`` samples
cover the grid ``trials`` times, as Ray's grid expansion did.

A conditional choice (a choice whose choices carry parameters of their own, such as
``lr_schedule``) is sampled first, then the parameters of the chosen branch: TPE searches it as
the conditional space it is (Optuna's define-by-run). Their names in the study carry the
choice (``lr_min_fraction@cosine``), since another branch may give the same parameter another
range.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from analysis.record import ParamRange
from tune import milestones
from tune._spec_types import SearchSpec, grid_points

# What Optuna's CategoricalDistribution can hold as a choice.
_OPTUNA_SCALARS = (type(None), bool, int, float, str)


class SpaceSampler:
    """Optuna define-by-run function for a spec; a class (not a closure), so that Ray can pickle
    it with the searcher's state."""

    def __init__(self, spec: SearchSpec) -> None:
        self.params = spec.params
        self.grid = grid_points([p for p in spec.params if p.kind == "grid"])
        # The defaults' point, enqueued as the study's first trial where it lies inside the space,
        # has its own grid values and is not expanded.
        self.offset = 1 if spec.reference_inside else 0
        self.defaults = spec.default_values() if spec.reference_inside else {}

    def __call__(self, trial: Any) -> dict[str, Any]:
        # Suggest on Optuna's own trial: Ray's wrapper would also copy every suggested scalar
        # into the trial's config, beside the user-form values this returns.
        raw = getattr(trial, "ot_trial", trial)
        point = (self.defaults if raw.number < self.offset
                 else self.grid[(raw.number - self.offset) % len(self.grid)])
        values: dict[str, Any] = {}
        for p in self.params:
            if p.kind == "grid":
                values[p.name] = point[p.name]
                values.update({q.name: point[q.name] for q in p.active(values[p.name])})
                continue
            values[p.name] = _plain(suggest(raw, p))
            for sub in p.active(values[p.name]):  # a conditional choice's own parameters
                values[sub.name] = _plain(suggest(raw, sub, branch_tag(values[p.name])))
        return values


def branch_tag(value: Any) -> str:
    """What the names Optuna stores of a branch's parameters end in (``lr_min_fraction@cosine``):
    one parameter can have other ranges under other choices, and TPE models each name alone."""
    return f"@{value}"


def suggest(trial: Any, p: ParamRange, tag: str = "") -> Any:
    """One parameter's value from an Optuna trial (its Optuna names end in ``tag``)."""
    name = p.name + tag
    if p.kind == "loguniform":
        return trial.suggest_float(name, p.low, p.high, log=True)
    if p.kind == "uniform":
        return trial.suggest_float(name, p.low, p.high)
    if p.kind == "randint":
        low, high = p.bounds
        return trial.suggest_int(name, int(low), int(high))
    if p.kind == "choice":
        if all(isinstance(c, _OPTUNA_SCALARS) for c in p.choices):
            return trial.suggest_categorical(name, list(p.choices))
        texts = _choice_texts(p)  # what Optuna cannot store (lists), as the list's text
        return p.choices[texts.index(trial.suggest_categorical(name, texts))]
    if p.kind == "milestones":
        assert p.count is not None and p.low is not None and p.high is not None
        cmin, cmax = p.count
        n = (trial.suggest_categorical(milestones.count_name(p.name) + tag,
                                       list(range(cmin, cmax + 1))) if cmin < cmax else cmin)
        drops: list[float] = []
        for k in range(1, n + 1):  # each between the drop before it and high
            drops.append(trial.suggest_float(milestones.drop_name(p.name, k) + tag,
                                             drops[-1] if drops else p.low, p.high))
        marks = list(milestones.fold(drops))
        trial.set_user_attr(p.name, marks)  # the list itself, as the trial trains with it
        return marks
    raise ValueError(f"{p.name}: nothing to suggest for kind {p.kind!r}")


def searcher_point(spec: SearchSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (user form) as the parameters Optuna stores, for `enqueue_trial`."""
    point: dict[str, Any] = {}
    for p in spec.params:
        if p.kind == "grid":
            continue
        point.update(_encoded(p, values[p.name], ""))
        for sub in p.active(values[p.name]):
            point.update(_encoded(sub, values[sub.name], branch_tag(values[p.name])))
    return point


def _encoded(p: ParamRange, v: Any, tag: str) -> dict[str, Any]:
    if p.kind == "milestones":
        assert p.count is not None
        return {k + tag: x for k, x in milestones.encode(p.name, list(v), p.count).items()}
    if p.kind == "choice" and not all(isinstance(c, _OPTUNA_SCALARS) for c in p.choices):
        return {p.name + tag: _choice_texts(p)[[_plain(c) for c in p.choices].index(_plain(v))]}
    return {p.name + tag: _plain(v)}


def sampled_names(spec: SearchSpec) -> list[str]:
    """Every name Optuna's study can hold, in sampling order (what optuna-dashboard shows; a
    trial holds those of its own branch and milestone count)."""
    names: list[str] = []
    for p in spec.params:
        if p.kind == "grid":
            continue
        names += _names(p, "")
        for value, subs in p.branches:
            names += [n for sub in subs for n in _names(sub, branch_tag(value))]
    return names


def _names(p: ParamRange, tag: str) -> list[str]:
    if p.kind == "milestones":
        assert p.count is not None
        return [n + tag for n in milestones.names(p.name, p.count)]
    return [p.name + tag]


def _choice_texts(p: ParamRange) -> list[str]:
    """A choice's values as the study stores them where Optuna cannot hold them (lists): each
    one's JSON text, ``"[0.1, 0.8]"``."""
    return [json.dumps(_plain(c)) for c in p.choices]


def _plain(v: Any) -> Any:
    """Tuples (a choice of milestone lists) as the lists a config holds."""
    return [_plain(x) for x in v] if isinstance(v, tuple | list) else v
