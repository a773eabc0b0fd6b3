"""The Ray Tune function trainable: a thin wrapper around :class:`trainable.loop.Trainer`.

Each validation becomes one ``tune.report`` with a checkpoint of the full training state, so ASHA
sees PSNR once per validation interval (``time_attr="epoch"``: epochs of a fixed sample count,
never optimizer steps) and a retried or resumed trial continues from its newest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune

from trainable.config import TrainConfig
from trainable.loop import Trainer, ValidationResult
from trainable.store import open_split

# What a trial that diverged (NaN/inf loss) or could not fit in memory reports as its PSNR/SSIM:
# finite, so ASHA stops it and Optuna records it as a bad trial (a NaN would leave the Optuna
# trial RUNNING forever and is never stopped by ASHA). Documented in the README.
WORST_PSNR = 0.0
WORST_SSIM = 0.0

CHECKPOINT_FILE = "trainer.pt"


def run_trial(params: dict[str, Any], *, spec: Any, cpus: float) -> None:
    """Train one configuration: ``spec.trial_config(params)`` for the budget, reporting each
    validation to Tune. ``spec`` is a :class:`tune.space.SearchSpec`."""
    cfg: TrainConfig = spec.trial_config(params)
    cfg = cfg.replace(num_threads=max(1, int(cpus)))
    trial_dir = Path(tune.get_context().get_trial_dir())
    (trial_dir / "trial_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    info = _placement()

    train = open_split(cfg.data, "train", scale=cfg.scale, data_lr=cfg.data_lr,
                       cache_dir=cfg.cache_dir)
    val = open_split(cfg.data, "val", scale=cfg.scale, data_lr=cfg.data_lr,
                     cache_dir=cfg.cache_dir)
    try:
        trainer = Trainer(cfg, train, val)
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                trainer.load(Path(d) / CHECKPOINT_FILE)
        trainer.run(lambda result, tr: _report(result, tr, cfg))
    except torch.OutOfMemoryError as e:
        # Fractional GPUs are bookkeeping only: a trial that does not fit ends as infeasible and
        # the search goes on.
        tune.report({**_worst(cfg), "status": "infeasible", "reason": str(e).split("\n")[0]})
    finally:
        # Where and when each run of this trial happened: shows GPU packing and node placement.
        info["finished"] = time.time()
        with open(trial_dir / "placement.jsonl", "a") as f:
            f.write(json.dumps(info) + "\n")


def _placement() -> dict[str, Any]:
    import ray

    return {"started": time.time(), "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cuda_available": torch.cuda.is_available()}


def _worst(cfg: TrainConfig) -> dict[str, Any]:
    return {"epoch": cfg.epochs, "samples": 0, "max_epochs": cfg.epochs, "psnr": WORST_PSNR,
            "ssim": WORST_SSIM, "best_psnr": WORST_PSNR, "trial_config": cfg.to_dict()}


def _report(result: ValidationResult, trainer: Trainer, cfg: TrainConfig) -> None:
    metrics = result.to_dict()
    metrics["trial_config"] = cfg.to_dict()
    if result.status == "diverged":
        # A finite worst case; the loop ends after this report, so does the trial.
        metrics.update(psnr=WORST_PSNR, ssim=WORST_SSIM, gain_db=WORST_PSNR - result.bicubic_psnr,
                       best_psnr=max(result.best_psnr, WORST_PSNR))
        if not math.isfinite(metrics["loss"]):
            metrics["loss"] = None
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        trainer.save(Path(d) / CHECKPOINT_FILE)
        (Path(d) / "meta.json").write_text(json.dumps(
            {"epoch": result.epoch, "psnr": result.psnr, "ssim": result.ssim,
             "trial_config": cfg.to_dict()}))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
