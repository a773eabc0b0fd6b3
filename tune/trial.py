"""The Ray Tune function trainable: a thin wrapper around :class:`trainable.loop.Trainer`.

Each validation becomes one ``tune.report`` with a checkpoint of the full training state, so ASHA
sees PSNR once per validation interval (``time_attr="epoch"``: epochs of a fixed sample count,
never optimizer steps) and a retried or resumed trial continues from its newest checkpoint.

The trial's own files (``trial_config.json``, ``placement.jsonl`` with one line per attempt;
`analysis.run_folder` writes them) go straight into its folder in the run folder, beside Ray's
``result.json`` and checkpoints: ``get_trial_dir()`` is a local staging folder in Ray 2.60 that
reaches the run folder only for a trial on a fresh actor (with ``reuse_actors`` the files of
every later trial on that actor were lost; measured).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from ray import tune

from analysis import run_folder
from analysis.result_row import ResultRow
from analysis.run_folder import CHECKPOINT_STATE
from trainable.config import TrainConfig
from trainable.loop import Trainer
from trainable.result import ValidationResult
from trainable.store import open_split
from tune._spec_types import SearchSpec
from tune.ray_edge import trials as ray_trials

# What a trial that diverged (NaN/inf loss) or could not fit in memory reports as its PSNR/SSIM:
# finite, so ASHA stops it and Optuna records it as a bad trial (a NaN would leave the Optuna
# trial RUNNING forever and is never stopped by ASHA). Documented in the README.
WORST_PSNR = 0.0
WORST_SSIM = 0.0


def run_trial(params: dict[str, Any], *, spec: SearchSpec, cpus: float,
              run_dir: str | None = None) -> None:
    """Train one configuration: ``spec.trial_config(params)`` for the budget, reporting each
    validation to Tune. ``spec`` is a :class:`tune.space.SearchSpec`; ``run_dir`` the run folder
    (Ray's experiment folder on a file system every node sees)."""
    cfg: TrainConfig = spec.trial_config(params)
    cfg = cfg.replace(num_threads=max(1, int(cpus)))
    trial_dir = ray_trials.trial_folder(run_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    run_folder.write_trial_config(trial_dir, cfg.to_dict())
    info = {**placement(), "gpu_memory_fraction": cap_gpu_memory(spec.gpus_per_trial)}
    with attempt(trial_dir, info) as this:
        train = open_split(cfg.data_spec, "train")
        val = open_split(cfg.data_spec, "val")
        try:
            trainer = Trainer(cfg, train, val)
            checkpoint = tune.get_checkpoint()
            with checkpoint.as_directory() if checkpoint else nullcontext() as given:
                start = ray_trials.resume_checkpoint(Path(given) if given else None, trial_dir)
                if start is not None:
                    trainer.load(start)
                    this.note(resumed_from_epoch=trainer.epoch)
            trainer.run(lambda result, tr: report_validation(result, cfg, tr.save))
        except torch.OutOfMemoryError as e:
            # Ray's fractional GPUs are bookkeeping only; cap_gpu_memory makes the share a limit,
            # so a trial that does not fit in it ends as infeasible and the search goes on.
            report_infeasible(cfg, str(e).split("\n")[0])


class Attempt:
    """One attempt of a trial (a start, a retry after a failure, a resume): its line in
    ``placement.jsonl``."""

    def __init__(self, folder: Path, info: dict[str, Any]) -> None:
        self.folder = folder
        self.number = run_folder.start_attempt(folder, info)

    def note(self, **fields: Any) -> None:
        """Add what the attempt learnt (the epoch it resumed from, its engine) to its line now,
        so that the line keeps it even when the attempt is killed."""
        run_folder.update_attempt(self.folder, self.number, fields)


@contextmanager
def attempt(folder: Path, info: dict[str, Any]) -> Iterator[Attempt]:
    """Where and when each attempt of a trial ran (node, devices, pid): its line is written as
    it starts, so an attempt killed with its node keeps it, and closed as it ends (``finished``,
    and the ``error`` that ended it, if one did). Ray stops a trial's function by raising
    SystemExit in it: an end, not an error."""
    this = Attempt(folder, info)
    end: dict[str, Any] = {}
    try:
        yield this
    except Exception as e:
        end["error"] = (f"{type(e).__name__}: {e}".strip().splitlines() or [""])[0][:300]
        raise
    finally:
        this.note(**end, finished=time.time())


def report_infeasible(cfg: TrainConfig, reason: str) -> None:
    """The one ``tune.report`` of a trial that could not train (out of memory, alone or in a
    fused group): worst-case scores at the full budget (`ResultRow.infeasible`), so ASHA stops
    it, Optuna records a bad trial and the analysis calls it ``infeasible``, with ``reason``."""
    tune.report(ResultRow.infeasible(cfg.to_dict(), reason, psnr=WORST_PSNR,
                                     ssim=WORST_SSIM).to_json())


def cap_gpu_memory(gpus_per_trial: float) -> float | None:
    """With N trials packed on a card (``gpus_per_trial`` 1/N), cap this process's CUDA memory at
    its share, so an oversize trial hits torch.OutOfMemoryError itself instead of starving its
    neighbours. Returns the fraction set (None: no CUDA or a whole card)."""
    if not 0 < gpus_per_trial < 1 or not torch.cuda.is_available():
        return None
    # Ray sets CUDA_VISIBLE_DEVICES to the trial's card: it is device 0 here.
    torch.cuda.set_per_process_memory_fraction(gpus_per_trial, 0)
    return gpus_per_trial


def placement() -> dict[str, Any]:
    """Where this process runs: node (Ray's id, its IP, the machine's name), pid, the CUDA
    device it sees, when it started."""
    import ray

    cuda = torch.cuda.is_available()
    return {"started": time.time(), "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cuda_available": cuda,
            "cuda_device_name": torch.cuda.get_device_name(0) if cuda else None}


def report_validation(result: ValidationResult, cfg: TrainConfig,
                      save_state: Callable[[Path], None]) -> None:
    """One ``tune.report`` of a validation, with a checkpoint that ``save_state(path)`` writes
    (a Trainer's full state, whoever trained it: a solo trial or a fused group's member)."""
    row = ResultRow.of(result, trial_config=cfg.to_dict())
    if result.status == "diverged":
        # A finite worst case; the loop ends after this report, so does the trial.
        row = dataclasses.replace(row, psnr=WORST_PSNR, ssim=WORST_SSIM,
                                  gain_db=WORST_PSNR - result.bicubic_psnr,
                                  best_psnr=max(result.best_psnr, WORST_PSNR))
        tune.report(row.to_json())
        return
    with tempfile.TemporaryDirectory() as d:
        save_state(Path(d) / CHECKPOINT_STATE)
        run_folder.write_checkpoint_meta(Path(d), result.epoch, result.psnr, result.ssim,
                                         cfg.to_dict())
        tune.report(row.to_json(), checkpoint=tune.Checkpoint.from_directory(d))
