"""The reference run: the source document's own configuration, trained once per search at the
run's budget and on its data, so every winner is shown next to what the user would have had
without searching.

The reference is the source document's defaults (plain network, SGD 1e-2 with momentum 0.9 and
weight decay 1e-4, milestones at 10% and 80%, gamma 0.1, batch 16, 17-pixel patches), with only
the run's budget, data, seed and hardware settings taken from the space. Where that configuration
lies inside the searched space (every fixed setting equal to the defaults', every searched range
holding the defaults' value), it runs as the search's first trial and TPE learns from it. Where it
does not (the shipped spaces search on top of a better base recipe), it runs beside the search as
a Ray task that TPE and ASHA never see, in ``RUN_DIR/reference/``.

That folder looks like a trial's to ``analysis``, written by the same writers
(`analysis.run_folder`): ``trial_config.json``, ``params.json`` (its values of the searched
parameters; nothing was sampled), ``placement.jsonl``, ``result.json`` (one line per validation,
the keys a trial reports, with the time stamps Ray adds to a trial's), TensorBoard event files
written by Ray's own logger as for a trial (`tune.ray_edge.loggers.FolderLogger`: the same tags,
and HParams) and its latest training state in ``checkpoint_latest/`` (``trainer.pt`` +
``meta.json``), which a resumed search continues from.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis import result_row, run_folder
from analysis.record import ParamRange
from analysis.result_row import ResultRow
from analysis.run_folder import REFERENCE_DIR
from trainable.config import TrainConfig
from trainable.result import ValidationResult

if TYPE_CHECKING:
    from trainable.loop import Trainer
    from tune.trial import Attempt

log = logging.getLogger(__name__)

REFERENCE_ID = REFERENCE_DIR
_CHECKPOINT = "checkpoint_latest"
_STATE = run_folder.CHECKPOINT_STATE

def reference_config(base: TrainConfig) -> TrainConfig:
    """The source document's defaults with the run's budget, data and hardware settings."""
    return base.source_defaults()


def reference_dir(run_dir: Path) -> Path:
    return Path(run_dir) / REFERENCE_DIR


def is_finished(run_dir: Path) -> bool:
    rows = run_folder.read_results(reference_dir(run_dir))
    return bool(rows) and rows[-1].status in ("completed", "diverged")


def validations(run_dir: Path) -> list[ResultRow]:
    """The reference's result lines so far, in order."""
    return run_folder.read_results(reference_dir(run_dir))


def latest(run_dir: Path) -> ResultRow | None:
    """The reference's newest result line, or None before its first validation."""
    rows = validations(run_dir)
    return rows[-1] if rows else None


def train_reference(cfg: TrainConfig, out: str, params: Sequence[ParamRange] = (),
                    gpus: float = 0.0) -> dict[str, Any] | None:
    """Train ``cfg`` to the end of its budget in ``out``, continuing from the state a killed search
    left there. Returns its last result row, as result.json holds it (what the Ray task hands
    back; Ray 2.60's typing of ``.remote`` takes a dataclass return for another arity). Runs
    inside a Ray task (no Tune session) with one trial's resources; ``gpus`` below 1 caps its
    CUDA memory at that share, as a trial's.
    ``params`` are the search's parameters: their values here go to params.json and HParams."""
    from tune.trial import attempt, cap_gpu_memory, placement

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    info = {**placement(), "gpu_memory_fraction": cap_gpu_memory(gpus)}
    with attempt(folder, info) as this:
        return _train_reference(cfg, folder, params, this, started=info["started"])


def _train_reference(cfg: TrainConfig, folder: Path, params: Sequence[ParamRange], this: Attempt,
                     started: float) -> dict[str, Any] | None:
    from trainable.loop import Trainer
    from trainable.store import open_split
    from tune.ray_edge.loggers import FolderLogger

    values = cfg.to_dict()
    searched = {p.name: values[p.name] for p in params}
    run_folder.write_trial_config(folder, values)
    run_folder.write_params(folder, searched)
    train = open_split(cfg.data_spec, "train")
    val = open_split(cfg.data_spec, "val")
    trainer = Trainer(cfg, train, val)
    state = folder / _CHECKPOINT / _STATE
    if state.is_file():
        trainer.load(state)
        this.note(resumed_from_epoch=trainer.epoch)
        log.info("reference run continues from epoch %d", trainer.epoch)
    # Seconds since this start, as Ray counts a trial's time_total_s from its function's start.
    stamps = _Stamps(run_folder.read_results(folder), start=started)
    # Its curves beside the trials' in `tensorboard --logdir RUN_DIR`, under the trials' tags.
    tensorboard = FolderLogger(tuple(params), folder, searched)

    def on_validation(result: ValidationResult, tr: Trainer) -> None:
        # The state first, then the results rewritten from the state's own history: a kill
        # between the two leaves a state whose history the next start writes out again.
        stamps.add(result.epoch)
        _save_state(tr, result, folder)
        rows = _write_results(folder, tr.history, cfg, stamps)
        tensorboard.result(rows[-1])

    _write_results(folder, trainer.history, cfg, stamps)
    try:
        trainer.run(on_validation)
    finally:
        tensorboard.end()
        trainer.close()
    rows = run_folder.read_results(folder)
    return rows[-1].to_json() if rows else None


class _Stamps:
    """When each validation happened (``timestamp``) and after how many seconds of this run's
    training (``time_total_s``), as Ray stamps a trial's results; kept across a resume from the
    result.json written before it."""

    def __init__(self, rows: list[ResultRow], start: float | None = None) -> None:
        self.by_epoch = {r.epoch: (r.timestamp, r.time_total_s) for r in rows}
        done = [t for _, t in self.by_epoch.values() if isinstance(t, int | float)]
        self.before = max(done, default=0.0)  # seconds trained before this start
        self.start = time.time() if start is None else start

    def add(self, epoch: int) -> None:
        now = time.time()
        self.by_epoch[epoch] = (now, round(self.before + now - self.start, 3))


def _save_state(trainer: Trainer, result: ValidationResult, folder: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint.", dir=folder))
    trainer.save(tmp / _STATE)
    run_folder.write_checkpoint_meta(tmp, result.epoch, result.psnr, result.ssim)
    final = folder / _CHECKPOINT
    old = folder / ".checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _write_results(folder: Path, history: list[dict[str, Any]], cfg: TrainConfig,
                   stamps: _Stamps) -> list[ResultRow]:
    """The whole result.json from the trainer's history (its validations, as its checkpoint
    holds them); returns its rows, stamped as Ray stamps a trial's."""
    rows = []
    for i, row in enumerate(result_row.rows(history), 1):
        stamp, total = stamps.by_epoch.get(row.epoch, (None, None))
        rows.append(dataclasses.replace(row, trial_id=REFERENCE_ID, trial_config=cfg.to_dict(),
                                        training_iteration=i, timestamp=stamp,
                                        time_total_s=total))
    run_folder.write_results(folder, rows)
    return rows
