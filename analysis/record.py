"""The run record (``espcn_tune.record``): one frozen type, its schema version, and the reader of
older runs. The only code that reads or writes that file.

``python -m tune.run`` writes a `RunRecord` when a search starts and replaces it when the search
resumes or ends; ``analysis``, retraining and the run folder's README read it. It holds what was
run (the command, the space as it started, the searched ranges), how it is scored and budgeted,
where the driver's Ray lived (for a resume after kill -9), and the outcome.

Every value is in the user's form: a searched parameter is its range as the space file writes it
(`ParamRange`), a milestone list is a list of fractions of the budget. The searcher's own
encodings stay inside ``tune``.

Schema versions:

- 2 (this one): typed sections (``budget``, ``scheduler``, ``search``, ``ray``), ``params`` in
  the space file's own form, a ``schema`` key.
- 1 (no ``schema`` key): a flat dict with ``spec`` (the resolved search spec, milestones as
  ``[count_min, count_max, low, high]``), ``searched``, ``max_epochs`` ...; written by every run
  before this module, and read here as it is.
- Runs from before the record had a name of its own keep ``espcn_tune.json``; it is read when the
  record is absent, and replaced by ``espcn_tune.record`` on the next write.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from trainable.errors import InputError

# Not named *.json: Ray 2.60 copies every top-level .json and .pkl of the run folder into its
# staging folder on restore and back after every step, not atomically, so a kill during that
# copy could cut the record short.
META_FILE = "espcn_tune.record"
LEGACY_META_FILE = "espcn_tune.json"
SCHEMA = 2

NUMERIC_KINDS = ("loguniform", "uniform", "randint")
KINDS = (*NUMERIC_KINDS, "choice", "grid", "milestones")


class RunFolderError(InputError):
    """Not a run folder, or the run cannot answer the question (no such trial, no results)."""


# --- a searched parameter ------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamRange:
    """One searched parameter as the space file gives it.

    ``loguniform``/``uniform``/``randint``: ``low`` and ``high`` (both included); ``choice`` and
    ``grid``: ``choices``; ``milestones`` (a list of LR drops): ``count`` = (min, max) drops, each a
    fraction of the budget in [``low``, ``high``]. A run recorded without its ranges has
    ``kind`` "unrecorded".

    A conditional choice (``{choice: {cosine: {lr_min_fraction: ...}, multistep: {...}}}``) has
    ``branches``: each choice with the parameters that exist only when it is chosen.
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    count: tuple[int, int] | None = None
    branches: tuple[tuple[Any, tuple[ParamRange, ...]], ...] = ()

    def walk(self) -> list[ParamRange]:
        """This parameter and every one under its branches, in the file's order."""
        return [self, *(sub for _, subs in self.branches for p in subs for sub in p.walk())]

    def active(self, value: Any) -> tuple[ParamRange, ...]:
        """The parameters that exist when this one is ``value`` (none for a plain parameter)."""
        return next((subs for v, subs in self.branches if v == value), ())

    @property
    def log(self) -> bool:
        return self.kind == "loguniform"

    @property
    def bounds(self) -> tuple[float, float]:
        """(``low``, ``high``) of a numeric or milestone range; ValueError for one without them."""
        if self.low is None or self.high is None:
            raise ValueError(f"`{self.name}` is a {self.kind} range, which has no low and high")
        return self.low, self.high

    @property
    def numeric(self) -> bool:
        return self.kind in NUMERIC_KINDS

    def to_json(self) -> dict[str, Any]:
        """The space file's form: ``{kind: args}``."""
        if self.kind == "milestones":
            assert self.count is not None
            return {"milestones": {"count": list(self.count), "low": self.low, "high": self.high}}
        if self.branches:
            return {self.kind: {v: {p.name: p.to_json() for p in subs}
                                for v, subs in self.branches}}
        if self.kind in ("choice", "grid"):
            return {self.kind: [list(c) if isinstance(c, tuple) else c for c in self.choices]}
        if self.numeric:
            return {self.kind: [self.low, self.high]}
        return {}

    @classmethod
    def from_json(cls, name: str, defn: Any) -> ParamRange:
        """From the space file's form (schema 2), or schema 1's ``{milestones: [cmin, cmax, low,
        high]}``; anything unreadable is "unrecorded"."""
        if not (isinstance(defn, Mapping) and len(defn) == 1):
            return cls(name, "unrecorded")
        ((kind, args),) = defn.items()
        try:
            if kind == "milestones":
                if isinstance(args, Mapping):
                    count = args["count"]
                    cmin, cmax = (count, count) if isinstance(count, int) else count
                    return cls(name, kind, float(args["low"]), float(args["high"]),
                               count=(int(cmin), int(cmax)))
                cmin, cmax, low, high = args
                return cls(name, kind, float(low), float(high), count=(int(cmin), int(cmax)))
            if kind in ("choice", "grid") and isinstance(args, Mapping):
                branches = tuple((v, tuple(cls.from_json(str(n), d) for n, d in (subs or {}).items()))
                                 for v, subs in args.items())
                return cls(name, kind, choices=tuple(args), branches=branches)
            if kind in ("choice", "grid"):
                return cls(name, kind, choices=tuple(_frozen(v) for v in args))
            if kind in NUMERIC_KINDS:
                low, high = args
                return cls(name, kind, float(low), float(high))
        except (TypeError, ValueError, KeyError):
            pass
        return cls(name, "unrecorded")

    def describe(self) -> str:
        """The range in words, as the run README and the report say it."""
        if self.kind == "milestones":
            assert self.count is not None and self.low is not None and self.high is not None
            lo, hi = self.count
            n = f"{lo}" if lo == hi else f"{lo}-{hi}"
            return (f"{n} LR drop{'s' if hi > 1 else ''} between {_percent(self.low)} and "
                    f"{_percent(self.high)} of the budget")
        if self.kind in ("choice", "grid"):
            return f"{self.kind} of {', '.join(_text(c) for c in self.choices)}"
        if self.numeric:
            both = " (both included)" if self.kind == "randint" else ""
            return f"{self.kind} [{_text(self.low)}, {_text(self.high)}]{both}"
        return "range not recorded"

    # --- scalars where a plot needs them -------------------------------------------------------
    def scalar_names(self) -> list[str]:
        """The scalars a plot or an importance shows for this parameter: the parameter itself, or
        for a milestone list its count (when it varies), its first and (when there can be more
        than one) its last drop."""
        if self.kind != "milestones":
            return [self.name]
        assert self.count is not None
        names = [f"{self.name}/count"] if self.count[0] < self.count[1] else []
        names.append(f"{self.name}/first")
        if self.count[1] > 1:
            names.append(f"{self.name}/last")
        return names

    def scalars(self, value: Any) -> dict[str, Any]:
        """``value`` (this parameter's value in one trial) as `scalar_names`' values; a missing
        or unreadable value gives None."""
        if self.kind != "milestones":
            return {self.name: value}
        marks = milestone_list(value)
        out: dict[str, Any] = {}
        for name in self.scalar_names():
            part = name.rsplit("/", 1)[1]
            if marks is None:
                out[name] = None
            elif part == "count":
                out[name] = len(marks)
            else:
                out[name] = (marks[0] if part == "first" else marks[-1]) if marks else None
        return out

    def scalar_range(self, name: str) -> ParamRange:
        """The range of one of `scalar_names` (a milestone count is a choice of its counts)."""
        if self.kind != "milestones" or name == self.name:
            return self
        assert self.count is not None
        if name.endswith("/count"):
            return ParamRange(name, "choice", choices=tuple(range(self.count[0], self.count[1] + 1)))
        return ParamRange(name, "uniform", self.low, self.high)


def active(params: Sequence[ParamRange], values: Mapping[str, Any]) -> list[ParamRange]:
    """The parameters a trial with these values has: every top-level one, and under a
    conditional choice the ones of its chosen branch."""
    out: list[ParamRange] = []
    for p in params:
        out.append(p)
        if p.branches and p.name in values:
            out.extend(p.active(_frozen(values[p.name])))
    return out


def milestone_list(value: Any) -> list[float] | None:
    """A milestone list as plain floats (from a list, a tuple or a Parquet array); None when it is
    none."""
    if value is None or isinstance(value, str | bytes | Mapping):
        return None
    try:
        marks = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return marks if all(math.isfinite(m) for m in marks) else None


# --- the record ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    epochs: int  # per full trial: ASHA's max_t
    epoch_samples: int  # training samples per epoch
    validation_interval: int  # epochs between validations


@dataclass(frozen=True)
class SchedulerPlan:
    type: str  # asha, fifo, hyperband, median, pbt
    grace_period: int | None = None
    reduction_factor: int | None = None
    rungs: tuple[int, ...] = ()  # ASHA's decision epochs (empty for the others)


@dataclass(frozen=True)
class SearchPlan:
    algorithm: str  # optuna (TPE), random, grid
    seed: int | None = None
    n_startup_trials: int | None = None


@dataclass(frozen=True)
class BestTrial:
    """The winner as the search's own summary saw it (analysis ranks the trials itself)."""

    trial_id: str
    best_psnr: float
    best_epoch: int
    bicubic_psnr: float | None
    params: Mapping[str, Any]  # its searched values, user form
    path: str


@dataclass(frozen=True)
class RunRecord:
    name: str
    command: tuple[str, ...]
    space_file: str | None
    # The space document as the run started, command-line overrides applied: a resume rebuilds
    # the search from this copy, never from the file, which may have been edited since.
    space: Mapping[str, Any] | None
    params: tuple[ParamRange, ...]
    budget: Budget | None
    scheduler: SchedulerPlan
    search: SearchPlan | None
    evaluation: str | None
    # The source document's defaults at this run's budget, on its data: the reference run, and
    # what the analysis and the retraining compare the winner against.
    default_config: Mapping[str, Any] | None
    versions: Mapping[str, str] = field(default_factory=dict)
    metric: str = "psnr"
    mode: str = "max"
    ray_session_dir: str | None = None  # the driver's Ray session: the only place repair reads
    ray_node_id: str | None = None  # the local Ray node the driver started (None: it joined one)
    started: str | None = None
    finished: str | None = None  # None: running or interrupted
    best_trial: BestTrial | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)  # command-line values applied
    schema: int = SCHEMA

    @property
    def searched(self) -> list[str]:
        """Every searched name, those under a conditional choice's branches included."""
        return list(dict.fromkeys(p.name for top in self.params for p in top.walk()))

    def param(self, name: str) -> ParamRange | None:
        return next((p for top in self.params for p in top.walk() if p.name == name), None)

    def replace(self, **changes: Any) -> RunRecord:
        return replace(self, **changes)

    # --- JSON ------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "name": self.name,
            "command": list(self.command),
            "space_file": self.space_file,
            "space": _plain(self.space),
            "overrides": _plain(self.overrides),
            "params": {p.name: p.to_json() for p in self.params},
            "budget": asdict(self.budget) if self.budget else None,
            "metric": self.metric,
            "mode": self.mode,
            "scheduler": {**asdict(self.scheduler), "rungs": list(self.scheduler.rungs)},
            "search": asdict(self.search) if self.search else None,
            "evaluation": self.evaluation,
            "default_config": _plain(self.default_config),
            "versions": dict(self.versions),
            "ray": {"session_dir": self.ray_session_dir, "node_id": self.ray_node_id},
            "started": self.started,
            "finished": self.finished,
            "best_trial": _plain(asdict(self.best_trial)) if self.best_trial else None,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str) -> RunRecord:
        """Schema 2 as `to_json` writes it, or schema 1 (no ``schema`` key)."""
        schema = d.get("schema", 1)
        if schema == 1:
            return _from_v1(d)
        if schema != SCHEMA:
            raise RunFolderError(f"{where}: schema {schema!r} is newer than this espcn-tune reads "
                              f"({SCHEMA}); upgrade espcn-tune to read this run")
        try:
            return _from_v2(d)
        except (TypeError, ValueError, KeyError) as e:
            raise RunFolderError(f"{where}: unreadable run record ({type(e).__name__}: {e})") from None


# --- the file ------------------------------------------------------------------------------------
def path(run_dir: Path) -> Path:
    """The record's path: ``META_FILE``, or the legacy name where only that exists."""
    new, legacy = Path(run_dir) / META_FILE, Path(run_dir) / LEGACY_META_FILE
    return legacy if not new.is_file() and legacy.is_file() else new


def exists(run_dir: Path) -> bool:
    return path(run_dir).is_file()


def read(run_dir: Path) -> RunRecord:
    """The run's record; `RunFolderError` (an InputError) when the folder is not a run."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunFolderError(f"{run_dir}: no such folder")
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: is a file, but a run folder (runs/NAME) was expected")
    where = path(run_dir)
    if not where.is_file():
        raise RunFolderError(f"{run_dir}: not an espcn-tune run folder (there is no "
                          f"{META_FILE}){_nested_run_hint(run_dir)}")
    try:
        d = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{where}: unreadable run record ({e})") from None
    if not isinstance(d, dict):
        raise RunFolderError(f"{where}: expected a JSON object, got {type(d).__name__}")
    return RunRecord.from_json(d, str(where))


def write(run_dir: Path, record: RunRecord) -> None:
    """Replace the record atomically (a kill leaves the old record or the new one); a run recorded
    under the legacy name moves to ``META_FILE``."""
    run_dir = Path(run_dir)
    tmp = run_dir / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(record.to_json(), indent=2, default=str), encoding="utf-8")
    os.replace(tmp, run_dir / META_FILE)
    (run_dir / LEGACY_META_FILE).unlink(missing_ok=True)


# --- readers -------------------------------------------------------------------------------------
def _from_v2(d: Mapping[str, Any]) -> RunRecord:
    budget, search, ray = d.get("budget"), d.get("search"), d.get("ray") or {}
    return RunRecord(
        **_same_in_both(d),
        space=d.get("space"),
        params=_params(d.get("params")),
        budget=Budget(*(int(budget[k]) for k in ("epochs", "epoch_samples",
                                                 "validation_interval"))) if budget else None,
        search=_search(search),
        ray_session_dir=ray.get("session_dir"),
        ray_node_id=ray.get("node_id"),
    )


def _from_v1(d: Mapping[str, Any]) -> RunRecord:
    spec = _mapping(d.get("spec"))
    ranges = _mapping(spec.get("params"))
    searched = d.get("searched")
    if not isinstance(searched, list):
        searched = list(ranges)
    budget: list[Any] = [d.get(k) for k in ("max_epochs", "epoch_samples", "validation_interval")]
    space = d.get("space_document")
    return RunRecord(
        **_same_in_both(d),
        space=space if isinstance(space, Mapping) else None,
        params=tuple(ParamRange.from_json(str(n), ranges.get(n)) for n in searched),
        budget=Budget(*(int(v) for v in budget)) if None not in budget else None,
        search=_search(spec.get("search")),
        ray_session_dir=d.get("ray_session_dir"),
        ray_node_id=d.get("ray_node_id"),
        schema=1,
    )


def _same_in_both(d: Mapping[str, Any]) -> dict[str, Any]:
    """The fields schemas 1 and 2 keep under the same key in the same form."""
    sched = _mapping(d.get("scheduler"))
    return {
        "name": str(d.get("name") or ""),
        "command": tuple(str(c) for c in d.get("command") or ()),
        "space_file": d.get("space_file"),
        "scheduler": SchedulerPlan(str(sched.get("type", "asha")), sched.get("grace_period"),
                                   sched.get("reduction_factor"),
                                   tuple(int(r) for r in sched.get("rungs") or ())),
        "evaluation": d.get("evaluation"),
        "default_config": d.get("default_config"),
        "versions": dict(d.get("versions") or {}),
        "metric": str(d.get("metric", "psnr")),
        "mode": str(d.get("mode", "max")),
        "started": d.get("started"),
        "finished": d.get("finished"),
        "best_trial": _best(d.get("best_trial")),
        "overrides": dict(d.get("overrides") or {}),
    }


def _mapping(v: Any) -> Mapping[str, Any]:
    """``v`` where it is a mapping, else an empty one (an old record's section may be absent)."""
    return v if isinstance(v, Mapping) else {}


def _search(search: Any) -> SearchPlan | None:
    if not isinstance(search, Mapping):
        return None
    return SearchPlan(str(search.get("algorithm", "optuna")), search.get("seed"),
                      search.get("n_startup_trials"))


def _params(section: Any) -> tuple[ParamRange, ...]:
    if not isinstance(section, Mapping):
        return ()
    return tuple(ParamRange.from_json(str(n), defn) for n, defn in section.items())


def _best(best: Any) -> BestTrial | None:
    if not isinstance(best, Mapping) or "trial_id" not in best:
        return None
    return BestTrial(str(best["trial_id"]), float(best["best_psnr"]), int(best["best_epoch"]),
                     None if best.get("bicubic_psnr") is None else float(best["bicubic_psnr"]),
                     dict(best.get("params") or {}), str(best.get("path", "")))


def _frozen(v: Any) -> Any:
    """A choice value as a hashable one (a list of milestones becomes a tuple)."""
    return tuple(_frozen(x) for x in v) if isinstance(v, list | tuple) else v


def _plain(v: Any) -> Any:
    """Mappings and tuples as JSON's dicts and lists."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.4g}%"


def float_text(v: float) -> str:
    """A float as short text that still reads as one: ``1.0``, not ``1`` (an integer, for a
    choice of ``[1.0, 2.0]``); ``0.0001``, ``1e-05``, ``inf``."""
    text = f"{v:g}"
    return text if any(c in text for c in ".eni") else f"{text}.0"


def _text(v: Any) -> str:
    if isinstance(v, float):
        return float_text(v)
    if isinstance(v, Sequence) and not isinstance(v, str):
        return "[" + ", ".join(_text(x) for x in v) + "]"
    return str(v).lower() if isinstance(v, bool) else str(v)


def _nested_run_hint(folder: Path) -> str:
    """Point at run folders one level down: a user who passes ``runs/`` means one of them."""
    try:
        runs = sorted(p.name for p in folder.iterdir() if exists(p))
    except OSError:
        return ""
    if not runs:
        return ""
    shown = ", ".join(str(folder / r) for r in runs[:5])
    more = f" and {len(runs) - 5} more" if len(runs) > 5 else ""
    return f"; run folders inside it: {shown}{more}"
