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

That folder looks like a trial's to ``analysis``: ``trial_config.json``, ``result.json`` (one line
per validation, the keys a trial reports; no ``params.json``: nothing was sampled) and its
latest training state in ``checkpoint_latest/`` (``trainer.pt`` + ``meta.json``), which a resumed
search continues from.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from analysis.run_folder import REFERENCE_DIR, RESULT_FILE, TRIAL_CONFIG_FILE
from trainable.config import TrainConfig

log = logging.getLogger(__name__)

REFERENCE_ID = REFERENCE_DIR
_CHECKPOINT = "checkpoint_latest"
_STATE = "trainer.pt"

def reference_config(base: TrainConfig) -> TrainConfig:
    """The source document's defaults with the run's budget, data and hardware settings."""
    return base.source_defaults()


def reference_dir(run_dir: Path) -> Path:
    return Path(run_dir) / REFERENCE_DIR


def is_finished(run_dir: Path) -> bool:
    rows = _read_results(reference_dir(run_dir) / RESULT_FILE)
    return bool(rows) and rows[-1].get("status") in ("completed", "diverged")


def latest(run_dir: Path) -> dict[str, Any] | None:
    """The reference's newest result line, or None before its first validation."""
    rows = _read_results(reference_dir(run_dir) / RESULT_FILE)
    return rows[-1] if rows else None


def train_reference(cfg: TrainConfig, out: str, gpus: float = 0.0) -> dict[str, Any] | None:
    """Train ``cfg`` to the end of its budget in ``out``, continuing from the state a killed search
    left there. Returns the last result line. Runs inside a Ray task (no Tune session) with one
    trial's resources; ``gpus`` below 1 caps its CUDA memory at that share, as a trial's."""
    from trainable.loop import Trainer
    from trainable.store import open_split
    from tune.trial import cap_gpu_memory

    cap_gpu_memory(gpus)

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TRIAL_CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2))
    train = open_split(cfg.data, "train", scale=cfg.scale, data_lr=cfg.data_lr,
                       cache_dir=cfg.cache_dir)
    val = open_split(cfg.data, "val", scale=cfg.scale, data_lr=cfg.data_lr,
                     cache_dir=cfg.cache_dir)
    # Its curves beside the trials' in `tensorboard --logdir RUN_DIR`.
    trainer = Trainer(cfg, train, val, log_dir=folder / "tb")
    state = folder / _CHECKPOINT / _STATE
    if state.is_file():
        trainer.load(state)
        log.info("reference run continues from epoch %d", trainer.epoch)

    def on_validation(result, tr: Trainer) -> None:
        # The state first, then the results rewritten from the state's own history: a kill
        # between the two leaves a state whose history the next start writes out again.
        _save_state(tr, result, folder)
        _write_results(folder, tr.history, cfg)

    _write_results(folder, trainer.history, cfg)
    trainer.run(on_validation)
    trainer.close()
    return trainer.history[-1] if trainer.history else None


def _save_state(trainer, result, folder: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint.", dir=folder))
    trainer.save(tmp / _STATE)
    (tmp / "meta.json").write_text(json.dumps({"epoch": result.epoch, "psnr": result.psnr,
                                               "ssim": result.ssim}))
    final = folder / _CHECKPOINT
    old = folder / ".checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _write_results(folder: Path, history: list[dict[str, Any]], cfg: TrainConfig) -> None:
    lines = []
    for row in history:
        row = {**row, "trial_id": REFERENCE_ID, "trial_config": cfg.to_dict(),
               "training_iteration": len(lines) + 1}
        lines.append(json.dumps(row) + "\n")
    tmp = folder / (RESULT_FILE + ".tmp")
    tmp.write_text("".join(lines))
    os.replace(tmp, folder / RESULT_FILE)


def _read_results(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
