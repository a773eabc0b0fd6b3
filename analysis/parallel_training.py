"""Several trainings at once, one process each, sharing the machine's cores; a progress line for
every validation of each.

`analysis.retrain` trains the winner and the defaults (times the seeds). Where the cores allow
the trainings run side by side, one process per core (``spawn``: a fresh interpreter, no forked
torch thread pool), each with ``cores // processes`` torch threads, set in the process: the
configs keep ``num_threads`` 0, so the ``config.yaml`` each training writes trains on any machine
as it is. On one core they run one after the other in this process. What it buys depends on
the trainings' lengths: for one seed on 2 cores nothing (the winner's longer training loses its
second thread; BENCHMARKS.md, "Retraining side by side"), with several seeds they pair up.

Each validation is logged as ``python -m trainable`` logs it (`trainable.loop.log_result`),
prefixed with the training's label, on stderr; warnings of the trainer too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TypeVar

from trainable.config import TrainConfig

Result = TypeVar("Result")


@dataclass(frozen=True)
class Job:
    label: str  # what its progress lines start with: "winner seed 1000"
    config: TrainConfig
    out: Path


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan(jobs: int, cores: int | None = None) -> tuple[int, int]:
    """(processes, torch threads each) for ``jobs`` trainings on ``cores``."""
    cores = usable_cores() if cores is None else cores
    processes = max(1, min(jobs, cores))
    return processes, max(1, cores // processes)


def run_all(jobs: Sequence[Job], train: Callable[[TrainConfig, Path], Result],
            say: Callable[[str], None], cores: int | None = None) -> list[Result]:
    """``train(job.config, job.out)`` for every job (a module-level function or a partial of
    one: it is sent to another process), in parallel where the cores allow; the results in the
    jobs' order. An exception of one training is raised here."""
    processes, threads = plan(len(jobs), cores)
    if processes == 1:
        say(f"training {len(jobs)} configuration(s) one after the other in this process")
        out = []
        for i, job in enumerate(jobs, 1):
            say(f"[{i}/{len(jobs)}] {job.label} ({job.config.epochs} epochs) into {job.out}")
            out.append(_run_one(job, train, 0))
        return out
    say(f"training {len(jobs)} configurations {processes} at a time, one process each with "
        f"{threads} thread(s) ({processes * threads} cores); a line per validation of each")
    with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
        futures = []
        for i, job in enumerate(jobs, 1):
            say(f"[{i}/{len(jobs)}] {job.label} ({job.config.epochs} epochs) into {job.out}")
            futures.append(pool.submit(_run_one, job, train, threads))
        return [f.result() for f in futures]


# --- private helpers -----------------------------------------------------------------------------
def _run_one(job: Job, train: Callable[[TrainConfig, Path], Result], threads: int) -> Result:
    """One training, its validations logged under its label; ``threads`` > 0 sets torch's."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"%(asctime)s [{job.label}] %(message)s", "%H:%M:%S"))
    handler.addFilter(lambda r: r.name == "trainable.loop" or r.levelno >= logging.WARNING)
    trainer_log = logging.getLogger("trainable")
    level, propagate = trainer_log.level, trainer_log.propagate
    trainer_log.addHandler(handler)
    trainer_log.setLevel(logging.INFO)
    trainer_log.propagate = False
    try:
        return train(job.config, job.out)
    finally:
        trainer_log.removeHandler(handler)
        trainer_log.setLevel(level)
        trainer_log.propagate = propagate
