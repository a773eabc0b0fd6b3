"""Synthetic run folders in exactly the shape ``python -m tune.run`` writes (see analysis/).

``write_small_run`` builds six hand-made trials that cover every outcome; ``write_synthetic_run``
builds many random ones (timing, scale); ``make_legacy`` turns a run into what the code before
the typed run record wrote (schema 1, Ray's own folder names, the searcher's scalars in
params.json). None of them needs Ray. The record is built through `analysis.record`, the trial
folders through `analysis.run_folder`'s writers where the search uses them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from analysis import record
from analysis.record import Budget, ParamRange, RunRecord, SchedulerPlan, SearchPlan
from analysis.run_folder import TrialState, trial_dirname, write_trial_state
from trainable.config import TrainConfig

# The searched parameters, as the space file and the run record give them.
MILESTONE_HIGH = 0.9
PARAMS = (
    ParamRange("model_lr", "loguniform", 1e-4, 1e-1),
    ParamRange("lr_scheduler_gamma", "uniform", 0.05, 0.5),
    ParamRange("lr_scheduler_milestones", "milestones", 0.05, MILESTONE_HIGH, count=(2, 2)),
    ParamRange("batch_size", "choice", choices=(8, 16, 32)),
)
SEARCHED = [p.name for p in PARAMS]
# What a plot or an importance shows of them: a two-drop milestone list as its first and last.
SCALARS = ["model_lr", "lr_scheduler_gamma", "lr_scheduler_milestones/first",
           "lr_scheduler_milestones/last", "batch_size"]
BICUBIC_PSNR = 23.82
BICUBIC_SSIM = 0.6548
EVALUATION = ("PSNR/SSIM on Y (BT.601 studio range), centre frame, output rounded to 8 bits, "
              "border crop 0")
T0 = 1_795_000_000.0  # POSIX seconds of the run's start


def budget(max_epochs: int = 4) -> dict[str, Any]:
    return {"epochs": max_epochs, "epoch_samples": 512, "validation_interval": 1, "data": "builtin"}


def default_config(max_epochs: int = 4) -> dict[str, Any]:
    return TrainConfig.from_dict(budget(max_epochs)).to_dict()


def trial_id(index: int) -> str:
    """Ray 2.60's trial ids are 8 hex digits."""
    return f"3f2a1{index:03d}"


def trial_dir(run_dir: Path, trial: str | int) -> Path:
    """A trial's folder (by id or index), whatever it is named (``make_legacy`` renames them)."""
    tid = trial_id(trial) if isinstance(trial, int) else trial
    return next(p for p in run_dir.iterdir() if p.is_dir() and tid in p.name)


def trial_config(params: dict[str, Any], max_epochs: int = 4) -> dict[str, Any]:
    return TrainConfig.from_dict({**budget(max_epochs), **params}).to_dict()


def write_meta(run_dir: Path, *, max_epochs: int = 4, finished: bool = True,
               rungs: list[int] | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record.write(run_dir, RunRecord(
        name=run_dir.name,
        command=("python", "-m", "tune.run", "--space", "smoke.yaml"),
        space_file="/somewhere/smoke.yaml",
        space=None,
        params=PARAMS,
        budget=Budget(max_epochs, 512, 1),
        scheduler=SchedulerPlan("asha", 1, 2, tuple(rungs if rungs is not None else [1, 2])),
        search=SearchPlan("optuna", 0, 2),
        evaluation=EVALUATION,
        default_config=default_config(max_epochs),
        versions={"python": "3.11.9", "torch": "2.13.0", "ray": "2.60.0", "optuna": "5.0.0"},
        started="2026-11-26T10:00:00Z",
        finished="2026-11-26T10:30:00Z" if finished else None,
    ))


def write_trial(run_dir: Path, index: int, params: dict[str, Any], psnrs: list[float], *,
                max_epochs: int = 4, statuses: list[str] | None = None, error: bool = False,
                checkpoint_epochs: tuple[int, ...] = (), start: float | None = None,
                psnr_frames: list[list[float]] | None = None,
                failures: int | None = None) -> Path:
    """One trial folder; ``psnr_frames``, one list per report, is left out of the reports when
    None (runs from before per-frame PSNR). ``failures``: the driver's trial_state.json, as it
    writes it after that many failed attempts (the trial ended in error when ``error``); None:
    none, as for a trial no failure touched or a run from before the driver wrote it."""
    tid = trial_id(index)
    tdir = run_dir / trial_dirname(index, tid)
    tdir.mkdir(parents=True)
    (tdir / "params.json").write_text(json.dumps(params))
    config = trial_config(params, max_epochs)
    start = T0 + 10.0 * index if start is None else start
    lines, best, best_epoch = [], -1.0, 0
    for i, psnr in enumerate(psnrs):
        epoch = i + 1
        if psnr > best:
            best, best_epoch = psnr, epoch
        status = statuses[i] if statuses else ("completed" if epoch == max_epochs else "running")
        elapsed = 5.0 * epoch
        lines.append({
            "epoch": epoch, "samples": 512 * epoch, "psnr": psnr, "ssim": 0.6 + psnr / 200,
            "bicubic_psnr": BICUBIC_PSNR, "bicubic_ssim": BICUBIC_SSIM,
            "gain_db": psnr - BICUBIC_PSNR, "best_psnr": best, "best_epoch": best_epoch,
            "loss": 0.01 / epoch, "lr": params["model_lr"], "samples_per_s": 100.0,
            "data_time_share": 0.05, "status": status, "max_epochs": max_epochs,
            "trial_config": config, "trial_id": tid, "training_iteration": epoch,
            "time_total_s": elapsed, "time_this_iter_s": 5.0, "timestamp": int(start + elapsed),
            "done": status != "running", "date": "2026-11-26_10-00-00", "config": params,
        })
        if psnr_frames is not None:
            lines[-1]["psnr_frames"] = psnr_frames[i]
    (tdir / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if error or failures:
        (tdir / "error.txt").write_text("Traceback (most recent call last):\n  ...\n"
                                        "RuntimeError: CUDA error: an illegal memory access\n")
    if failures is not None:
        write_trial_state(tdir, TrialState(failures, errored=error))
    for k, epoch in enumerate(checkpoint_epochs):
        write_checkpoint(tdir / f"checkpoint_{k:06d}", epoch, psnrs[epoch - 1], config,
                         seed=index * 100 + epoch)
    return tdir


def write_checkpoint(cdir: Path, epoch: int, psnr: float, config: dict[str, Any],
                     seed: int) -> None:
    import numpy as np
    import torch

    from trainable.model import EarlyFusionESPCN

    torch.manual_seed(seed)
    model = EarlyFusionESPCN(config["frames"], config["scale"], config["residual"])
    cdir.mkdir(parents=True)
    torch.save({
        "model": model.state_dict(), "optimizer": {}, "scaler": {},
        # As Trainer.state_dict keeps them: the sampler's numpy RNG as plain Python ints.
        "sampler": {"rng": np.random.Generator(np.random.PCG64(seed)).bit_generator.state},
        "torch_rng": torch.get_rng_state(),
        "samples_seen": 512 * epoch, "epoch": epoch, "config": config, "history": [psnr],
    }, cdir / "trainer.pt")
    (cdir / "meta.json").write_text(json.dumps(
        {"epoch": epoch, "psnr": psnr, "ssim": 0.6 + psnr / 200, "trial_config": config}))


DEFAULTS = {"model_lr": 0.01, "lr_scheduler_gamma": 0.1, "lr_scheduler_milestones": [0.1, 0.8],
            "batch_size": 16}
WINNER = trial_id(1)
ERRORED = trial_id(5)


def write_small_run(root: Path, name: str = "smoke", *, finished: bool = True) -> Path:
    """Six trials over 4 epochs, ASHA rungs at epochs 1 and 2.

    Trial 0 defaults, completed (best 25.6 at epoch 2, last 25.2); 1 the winner, completed
    (26.8); 2 stopped at rung 1 (23.0); 3 stopped at rung 2 (24.6); 4 diverged at epoch 2 (best
    23.5, last 0.0); 5 errored with the highest PSNR of all (27.5).
    """
    run = root / name
    write_meta(run, finished=finished)
    p = {"model_lr": 0.02, "lr_scheduler_gamma": 0.05, "lr_scheduler_milestones": [0.5, 0.8],
         "batch_size": 32}
    write_trial(run, 0, DEFAULTS, [24.0, 25.6, 25.1, 25.2], checkpoint_epochs=(2, 4))
    write_trial(run, 1, p, [24.5, 25.5, 26.3, 26.8], checkpoint_epochs=(4,))
    write_trial(run, 2, {**p, "model_lr": 1e-4, "batch_size": 8}, [23.0])
    write_trial(run, 3, {**p, "model_lr": 3e-3, "lr_scheduler_gamma": 0.3}, [24.2, 24.6],
                checkpoint_epochs=(2,))
    write_trial(run, 4, {**p, "model_lr": 0.09, "lr_scheduler_milestones": [0.6, 0.85]},
                [23.5, 0.0],
                statuses=["running", "diverged"])
    write_trial(run, 5, {**p, "model_lr": 0.05, "batch_size": 16}, [27.0, 27.5], error=True,
                checkpoint_epochs=(2,))
    return run


def write_synthetic_run(root: Path, name: str, n_trials: int, n_reports: int,
                        seed: int = 0, early_stops: bool = True) -> Path:
    """Random trials, one error in 20, no checkpoints (fast to write); with ``early_stops`` about
    70% stop at a rung as under ASHA, else every trial reports ``n_reports`` times."""
    rng = random.Random(seed)
    run = root / name
    rungs = [r for r in (1, 2, 4, 8, 16, 32) if r < n_reports]
    write_meta(run, max_epochs=n_reports, rungs=rungs)
    for i in range(n_trials):
        first = round(rng.uniform(0.05, 0.7), 6)
        params = DEFAULTS if i == 0 else {
            "model_lr": 10 ** rng.uniform(-4, -1), "lr_scheduler_gamma": rng.uniform(0.05, 0.5),
            "lr_scheduler_milestones": [first, round(first + rng.random() * (MILESTONE_HIGH - first), 6)],
            "batch_size": rng.choice([8, 16, 32])}
        stopped = early_stops and rng.random() >= 0.3
        length = rng.choice(rungs or [n_reports]) if stopped else n_reports
        ceiling = 24 + 3 * rng.random()
        psnrs = [round(ceiling - 2.0 / (e + 1) + rng.gauss(0, 0.05), 3) for e in range(length)]
        write_trial(run, i, params, psnrs, max_epochs=n_reports, error=(i % 20 == 19),
                    start=T0 + 3.0 * i)
    return run


def make_legacy(run_dir: Path) -> Path:
    """Turn a run written here into what the code before the typed record wrote: a schema-1
    record (a flat dict, milestones as [count_min, count_max, low, high]), Ray's own trial folder
    names, and the searcher's scalars in params.json (milestones as lr_milestone_1 and
    lr_milestone_2_rel)."""
    rec = record.read(run_dir)
    spec = {"params": {p.name: p.to_json() for p in rec.params}}
    spec["params"]["lr_scheduler_milestones"] = {"milestones": [2, 2, 0.05, MILESTONE_HIGH]}
    spec["flat_params"] = ["model_lr", "lr_scheduler_gamma", "lr_milestone_1",
                           "lr_milestone_2_rel", "batch_size"]
    spec["search"] = {"algorithm": "optuna", "seed": 0, "n_startup_trials": 2}
    assert rec.budget is not None
    v1 = {"name": rec.name, "command": list(rec.command), "space_file": rec.space_file,
          "spec": spec, "searched": rec.searched, "metric": "psnr", "mode": "max",
          "max_epochs": rec.budget.epochs, "epoch_samples": rec.budget.epoch_samples,
          "validation_interval": rec.budget.validation_interval,
          "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2,
                        "rungs": list(rec.scheduler.rungs)},
          "evaluation": rec.evaluation, "default_config": rec.default_config,
          "versions": dict(rec.versions), "started": rec.started, "finished": rec.finished}
    (run_dir / record.META_FILE).write_text(json.dumps(v1, indent=2))
    for tdir in sorted(p for p in run_dir.iterdir() if p.name.startswith("trial_")):
        index, tid = tdir.name.split("_")[1:]
        params = json.loads((tdir / "params.json").read_text())
        first, last = params.pop("lr_scheduler_milestones")
        params.update(lr_milestone_1=first,
                      lr_milestone_2_rel=round((last - first) / (MILESTONE_HIGH - first), 9))
        (tdir / "params.json").write_text(json.dumps(params))
        tdir.rename(run_dir / f"run_trial_{tid}_{int(index)}_model_lr={params['model_lr']:.4g}"
                              f"_2026-11-26_10-00-{int(index) % 60:02d}")
    return run_dir


# A conditional space: the schedule family, each with its own parameters (issue 19).
CONDITIONAL = (
    ParamRange("lr_schedule", "choice", choices=("multistep", "cosine"), branches=(
        ("multistep", (ParamRange("lr_scheduler_gamma", "uniform", 0.05, 0.5),)),
        ("cosine", (ParamRange("lr_min_fraction", "loguniform", 1e-3, 1e-1),)))),
    ParamRange("model_lr", "loguniform", 1e-4, 1e-1),
)


def write_conditional_run(root: Path, name: str = "schedules") -> Path:
    """Six trials of a conditional space: three multistep, three cosine; the winner a cosine
    trial whose floor sits at the bottom of its range."""
    run = root / name
    write_meta(run)
    rec = record.read(run)
    record.write(run, rec.replace(params=CONDITIONAL))
    trials = [
        ({"lr_schedule": "multistep", "lr_scheduler_gamma": 0.1, "model_lr": 0.01}, 25.0),
        ({"lr_schedule": "multistep", "lr_scheduler_gamma": 0.3, "model_lr": 0.003}, 25.8),
        ({"lr_schedule": "multistep", "lr_scheduler_gamma": 0.49, "model_lr": 0.001}, 26.1),
        ({"lr_schedule": "cosine", "lr_min_fraction": 0.0011, "model_lr": 0.002}, 27.0),
        ({"lr_schedule": "cosine", "lr_min_fraction": 0.02, "model_lr": 0.02}, 26.5),
        ({"lr_schedule": "cosine", "lr_min_fraction": 0.05, "model_lr": 0.0005}, 24.9),
    ]
    for i, (params, best) in enumerate(trials):
        write_trial(run, i, params, [best - 1.0, best - 0.5, best - 0.2, best])
    return run


REFERENCE_PSNRS = [16.2, 18.6, 18.5, 18.47]  # best at epoch 2, last at epoch 4 of 4


def write_reference(run_dir: Path, psnrs: list[float] | None = None, *,
                    start: float = T0) -> Path:
    """The reference run's folder as `tune.reference` writes it (the same writers): the source
    document's defaults beside the search, its result.json stamped as Ray stamps a trial's."""
    from analysis import result_row, run_folder

    folder = run_dir / run_folder.REFERENCE_DIR
    folder.mkdir(parents=True)
    config = trial_config(DEFAULTS)
    run_folder.write_trial_config(folder, config)
    run_folder.write_params(folder, DEFAULTS)
    rows, best, best_epoch = [], -1.0, 0
    for i, psnr in enumerate(psnrs or REFERENCE_PSNRS):
        epoch = i + 1
        if psnr > best:
            best, best_epoch = psnr, epoch
        rows.append({
            "epoch": epoch, "samples": 512 * epoch, "max_epochs": len(psnrs or REFERENCE_PSNRS),
            "psnr": psnr, "ssim": 0.5 + psnr / 200, "bicubic_psnr": BICUBIC_PSNR,
            "bicubic_ssim": BICUBIC_SSIM, "gain_db": psnr - BICUBIC_PSNR, "best_psnr": best,
            "best_epoch": best_epoch, "loss": 0.05 / epoch, "lr": 0.01,
            "status": "completed" if epoch == len(psnrs or REFERENCE_PSNRS) else "running",
            "trial_id": run_folder.REFERENCE_DIR, "trial_config": config,
            "training_iteration": epoch, "timestamp": start + 7.0 * epoch,
            "time_total_s": 7.0 * epoch})
    run_folder.write_results(folder, result_row.rows(rows))
    write_checkpoint(folder / "checkpoint_latest", len(rows), rows[-1]["psnr"], config, seed=7)
    return folder


def write_run_with_reference(root: Path, name: str = "withref") -> Path:
    """Four searched trials and the reference run beside them (no trial ran the defaults).

    Trial 0 completed (26.8, the winner); 1 stopped at rung 1; 2 stopped at rung 2; 3 completed.
    The reference starts with the run and reaches its best (18.6) at epoch 2 of 4."""
    run = root / name
    write_meta(run)
    p = {"model_lr": 0.02, "lr_scheduler_gamma": 0.05, "lr_scheduler_milestones": [0.5, 0.8],
         "batch_size": 32}
    write_trial(run, 0, p, [24.5, 25.5, 26.3, 26.8], checkpoint_epochs=(4,))
    write_trial(run, 1, {**p, "model_lr": 1e-4}, [20.0])
    write_trial(run, 2, {**p, "model_lr": 3e-3}, [22.0, 23.0])
    write_trial(run, 3, {**p, "model_lr": 5e-2, "batch_size": 8}, [23.0, 24.0, 24.5, 25.0])
    write_reference(run)
    return run
