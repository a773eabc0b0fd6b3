"""The ``--dry-run`` text: what a search-space file will make Ray do, in the budget's units."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

from analysis.record import float_text
from trainable.config import TrainConfig
from tune._spec_types import METRIC, MODE, TIME_ATTR, ParamRange, SearchSpec


def plan_lines(spec: SearchSpec) -> Iterator[str]:
    base = spec.base
    width = max(len(f.name) for f in fields(TrainConfig)) + 2
    yield f"Search space: {spec.path}"
    yield f"Objective:    {METRIC} ({MODE}), reported every {base.validation_interval} " \
          f"epoch(s); progress measured in `{TIME_ATTR}`"
    yield f"Searched parameters ({len(spec.params)}):"
    for p in spec.params:
        yield f"  {p.name:<{width}}{_distribution(p)}"
        for value, subs in p.branches:
            yield f"    if {p.name} is {_show(value)}:" + ("" if subs else " nothing more")
            for sub in subs:
                yield f"      {sub.name:<{width - 4}}{_distribution(sub)}"
    yield "Fixed settings that differ from TrainConfig defaults:"
    yield from _overrides(base, width) or ["  (none)"]
    yield (f"Budget:       {base.epochs} epochs x {base.epoch_samples:,} samples = "
           f"{base.total_samples:,} training samples per full trial; validation every "
           f"{base.validation_interval} epoch(s)")
    yield f"Scheduler:    {_scheduler(spec)}"
    yield f"Searcher:     {_searcher(spec)}"
    total = spec.total_trials()
    grid = f" ({spec.trials} samples over a {spec.grid_size()}-point grid)" \
        if spec.grid_size() > 1 else ""
    at_once = (f"{spec.fuse} per fused engine at a time" if spec.fuse > 1 else
               f"at most {spec.max_concurrent} at a time" if spec.scheduler != "hyperband" else
               "as many at a time as resources allow (a cap would keep HyperBand's brackets "
               "from filling)")
    yield (f"Trials:       {total}{grid}, {at_once}; at most "
           f"{total * base.total_samples:,} samples in all if no trial is stopped early")
    yield f"Resources:    {_resources(spec)}"
    if spec.fuse > 1:
        where = "GPU (one engine holds each card)" if spec.gpus_per_trial else "CPU engine"
        yield (f"Fusion:       up to {spec.fuse} trials of one shape trained as one network per "
               f"{where}; trials of another shape (batch, accumulation, patch, precision, "
               f"optimizer, residual) get groups of their own; the searcher keeps {spec.fuse} "
               "trials running per engine")
    # init_weights is a run setting: the reference fine-tunes from the same weights.
    start = f", from {base.init_weights}" if base.init_weights else ""
    if spec.reference_inside:
        shown = ", ".join(f"{p.name}={_show(getattr(base, p.name))}" for p in spec.params)
        yield f"Reference:    the source document's defaults, as the first trial ({shown}{start})"
    elif spec.include_defaults:
        yield ("Reference:    the source document's defaults (plain network, SGD 1e-2, "
               f"milestones [0.1, 0.8], gamma 0.1, batch 16{start}) trained once beside the "
               "search at this budget, in the resources of one trial; not a trial TPE learns "
               "from")
    else:
        yield "Reference:    none (include_defaults: false)"


def _distribution(p: ParamRange) -> str:
    if p.kind in ("choice", "grid"):
        return f"{p.kind} {_show(list(p.choices))}"
    return p.describe()


def _overrides(base: TrainConfig, width: int) -> list[str]:
    default = TrainConfig()
    return [f"  {f.name:<{width}}{_show(getattr(default, f.name))} -> {_show(getattr(base, f.name))}"
            for f in fields(TrainConfig) if getattr(base, f.name) != getattr(default, f.name)]


def _scheduler(spec: SearchSpec) -> str:
    epochs = spec.base.epochs
    if spec.scheduler == "asha":
        rungs = spec.rungs()
        where = (f"rungs at epochs {', '.join(map(str, rungs))}" if rungs
                 else "no rung before max_t, so it stops nothing")
        return (f"ASHA (grace {spec.grace_period}, reduction factor {spec.reduction_factor}, "
                f"max_t {epochs} epochs): {where}; at a rung a trial goes on only if it is in "
                f"the top 1/{spec.reduction_factor} of the results recorded there so far")
    if spec.scheduler == "hyperband":
        return (f"synchronous HyperBand (reduction factor {spec.reduction_factor}, max_t "
                f"{epochs} epochs): pauses trials at bracket milestones and resumes the best "
                "from their checkpoints")
    if spec.scheduler == "median":
        return (f"median stopping after {spec.grace_period} epoch(s): a trial below the median "
                "of the others' running averages at the same epoch is stopped")
    if spec.scheduler == "pbt":
        return (f"PBT every {spec.perturbation_interval} epochs: the bottom quarter restarts "
                "from a top-quarter trial's checkpoint with perturbed searched values")
    return f"FIFO: every trial runs all {epochs} epochs"


def _searcher(spec: SearchSpec) -> str:
    if spec.algorithm == "optuna":
        note = ("; every trial is a startup trial, so TPE never runs"
                if spec.n_startup_trials >= spec.trials else "")
        return (f"Optuna TPE (seed {spec.search_seed}, {spec.n_startup_trials} random startup "
                f"trials{note}); study journal kept in the run folder")
    if spec.algorithm == "random":
        return f"random sampling (seed {spec.search_seed})"
    return f"grid: {spec.grid_size()} points, each run {spec.trials} time(s)"


def _resources(spec: SearchSpec) -> str:
    cpus, gpus = spec.cpus_per_trial, spec.gpus_per_trial
    if spec.fuse > 1:
        return (f"{cpus:g} CPU{' and a whole GPU' if gpus else ''} per engine of fused trials "
                "(one engine per GPU, or one on the CPU); each trial itself holds a token CPU "
                "share")
    text = f"{cpus:g} CPU, {gpus:g} GPU per trial"
    if gpus == 0:
        text += " (CPU only)"
    elif gpus < 1:
        text += " (trials sharing a GPU each cap their CUDA memory at their fraction)"
    host = os.cpu_count() or 1
    if cpus > 0:
        fit = int(host // cpus)
        if spec.scheduler != "hyperband":
            fit = min(fit, spec.max_concurrent)
        text += f"; this machine's {host} CPUs fit {fit} trial(s) at once"
    return text


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, float):
        return float_text(value)
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "null"
    return str(value)
