"""`train(cfg, out)`: the one way to train one configuration, to its full budget, into a folder.

`python -m trainable` and `python -m analysis.retrain` both call it. It writes into ``out``: the
resolved ``config.yaml`` and the command line (``command.txt``), TensorBoard logs (``tb/``), the
full training state (``checkpoint.pt``, resumable with ``resume=``), the best validated weights as a
weights-only state dict (``model.pt``) and ``summary.json``, which scores those weights against
bicubic on the validation and test splits (the test split sampled to ``test_clips`` clips, and said
so). It returns the same numbers as a `Summary`.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from trainable.config import TrainConfig
from trainable.errors import ConfigError
from trainable.evaluate import (
    Convention,
    bicubic_conventions,
    convention,
    model_predictor,
    score_conventions,
    source_convention,
)

if TYPE_CHECKING:
    from trainable.loop import Trainer
    from trainable.result import ValidationResult
    from trainable.store import SplitData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitScores:
    """The best validated weights on one split, beside bicubic through the same scoring."""

    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float
    gain_db: float  # psnr - bicubic_psnr
    frames: int
    clips: int = 0  # clips scored
    scope: str = "full"  # "full", or "sampled N of M clips" (`trainable.store.SplitData.scope`)
    # The same weights and frames scored as the source repository's test.py scores (border crop
    # = scale, output not rounded: trainable.evaluate.source_convention).
    source: SplitScores | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"psnr": self.psnr, "ssim": self.ssim,
                             "bicubic_psnr": self.bicubic_psnr, "bicubic_ssim": self.bicubic_ssim,
                             "gain_db": self.gain_db, "frames": self.frames, "clips": self.clips,
                             "scope": self.scope}
        if self.source is not None:
            d["source_convention"] = {k: v for k, v in self.source.to_dict().items()
                                      if k not in ("frames", "clips", "scope")}
        return d


@dataclass(frozen=True)
class Summary:
    """What one training run ended with; `to_dict` is ``summary.json``."""

    out: Path
    # "completed" | "diverged" | "stopped_early" (early_stop_patience) | "running" (a budget that
    # ended between validations)
    status: str
    epochs: int
    samples: int
    evaluation: str  # the scoring convention (`trainable.evaluate.convention`)
    # The source repository's (each split's `source_convention` scores)
    source_evaluation: str
    train_seconds: float
    # None when nothing was scored: the run diverged or never wrote a model.pt
    val: SplitScores | None = None
    test: SplitScores | None = None  # also None with no_test
    best_epoch: int | None = None
    early_stop_patience: int = 0  # validations without a new best that stop the run; 0: off

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"status": self.status, "epochs": self.epochs,
                             "samples": self.samples, "evaluation": self.evaluation,
                             "source_evaluation": self.source_evaluation}
        for name in ("val", "test"):
            scores = getattr(self, name)
            if scores is not None:
                d[name] = scores.to_dict()
        if self.best_epoch is not None:
            d["best_epoch"] = self.best_epoch
        if self.early_stop_patience:
            d["early_stop_patience"] = self.early_stop_patience
        d["train_seconds"] = self.train_seconds
        return d


def train(cfg: TrainConfig, out: str | Path, *, resume: str | Path | None = None,
          allow_budget_change: bool = False, no_test: bool = False,
          command: Sequence[str] | None = None) -> Summary:
    """Train ``cfg`` into the folder ``out`` and score its best validated weights.

    ``resume``: a ``checkpoint.pt`` of an earlier run of the same config (only RUN_ONLY keys may
    differ; a different ``epochs`` only with ``allow_budget_change``). ``command``: the command
    line recorded in ``command.txt`` (default: the ``python -m trainable`` line that reproduces
    this call). Raises InputError (ConfigError, DataError) on bad input, before writing anything
    where the input alone shows it.
    """
    from trainable.graphed import check_device
    from trainable.loop import Trainer, resolve_device
    from trainable.store import open_split

    out = Path(out)
    saved = None
    if resume is not None:
        saved = _read_checkpoint(Path(resume))
        cfg = _resumable_config(cfg, saved, str(resume), allow_budget_change)
    elif allow_budget_change:
        raise ConfigError("--allow-budget-change only applies with --resume")
    check_device(cfg, resolve_device(cfg.device))  # before anything is written
    if command is None:
        command = _equivalent_command(out, resume, allow_budget_change, no_test)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (out / "command.txt").write_text(shlex.join(command) + "\n")

    def split(name: str) -> SplitData:
        return open_split(cfg.data_spec, name)

    train_data, val = split("train"), split("val")
    if not no_test:
        split("test")  # a missing or bad test split refused now, not after the training
    # open_split has logged the data's description once already.
    log.info("data: %d train clips, %d val clips", train_data.num_clips, val.num_clips)
    trainer = Trainer(cfg, train_data, val, log_dir=out / "tb")
    if resume is not None and saved is not None:
        try:
            trainer.load_state_dict(saved)
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file is bad input, not a crash
            raise ConfigError(f"--resume {resume}: not a readable checkpoint of this "
                              f"trainer ({_first_line(e)})") from None
        if trainer.samples_seen > cfg.total_samples:
            raise ConfigError(f"--resume {resume}: the checkpoint has trained "
                              f"{trainer.samples_seen} samples, more than the budget of "
                              f"{cfg.total_samples} (`epochs` {cfg.epochs})")
        _write_resumed_model(trainer, Path(resume), out / "model.pt")
        log.info("resumed from %s at epoch %d", resume, trainer.epoch)

    def on_validation(result: ValidationResult, tr: Trainer) -> None:
        tr.save(out / "checkpoint.pt")
        if result.status != "diverged" and result.best_epoch == result.epoch:
            torch.save(tr.model.state_dict(), out / "model.pt")

    start = time.perf_counter()
    trainer.run(on_validation)
    trainer.close()
    scores = _score(cfg, trainer, out, no_test, split)
    summary = Summary(out=out, status=trainer.status, epochs=trainer.epoch,
                      early_stop_patience=cfg.early_stop_patience,
                      samples=trainer.samples_seen, evaluation=convention(cfg.crop_border),
                      source_evaluation=source_convention(cfg.scale).describe(),
                      train_seconds=round(time.perf_counter() - start, 1), **scores)
    (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
    return summary


def _equivalent_command(out: Path, resume: str | Path | None, allow_budget_change: bool,
                        no_test: bool) -> list[str]:
    line = ["python", "-m", "trainable", "--config", str(out / "config.yaml"), "--out", str(out)]
    if resume is not None:
        line += ["--resume", str(resume)]
    if allow_budget_change:
        line.append("--allow-budget-change")
    if no_test:
        line.append("--no-test")
    return line


# Settings of where and how fast a run trains, not of what it trains: a resume may change them.
RUN_ONLY = frozenset({"device", "num_threads", "cache_dir", "test_clips"})


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"--resume {path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt, foreign or unsafe: bad input, never run
        raise ConfigError(f"--resume {path}: not a readable checkpoint of this trainer "
                          f"({_first_line(e)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise ConfigError(f"--resume {path}: not a checkpoint of this trainer (no `config`)")
    return state


def _resumable_config(cfg: TrainConfig, state: dict[str, Any], path: str,
                      allow_budget_change: bool) -> TrainConfig:
    """The config to resume with: the current one, which must train what the checkpoint trained.

    Any key other than RUN_ONLY that differs is refused. A different `epochs` is refused unless
    ``allow_budget_change``; then the milestones (fractions of the budget) are rescaled so each
    stays at the same sample count, ``m * old / new``, and any that falls at or past the new
    budget is dropped; the warm-up's end, the cosine's end and the restart period move the same
    way (`TrainConfig.rescaled_budget`): the schedule already run is kept and the LR never jumps
    where the run already trained."""
    old = TrainConfig.from_dict(state["config"], where=f"--resume {path}'s config").to_dict()
    new = cfg.to_dict()
    differ = [k for k in new if k not in RUN_ONLY and k != "epochs" and new[k] != old.get(k)]
    if differ:
        listed = "; ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in differ)
        raise ConfigError(f"--resume {path}: the config differs from the checkpoint's ({listed}); "
                          f"only {', '.join(sorted(RUN_ONLY))} may change on resume")
    if new["epochs"] == old["epochs"]:
        return cfg
    if not allow_budget_change:
        raise ConfigError(f"--resume {path}: `epochs` is {new['epochs']}, but the checkpoint's "
                          f"run has {old['epochs']}; pass --allow-budget-change to change the "
                          "budget (LR milestones keep their positions in samples)")
    rescaled = cfg.rescaled_budget(old["epochs"])
    log.warning("budget %d -> %d epochs: every LR schedule position keeps its sample count "
                "(milestones %s -> %s)", old["epochs"], new["epochs"],
                _listed(cfg.lr_scheduler_milestones), _listed(rescaled.lr_scheduler_milestones))
    return rescaled


def _listed(milestones: tuple[float, ...] | None) -> list[float] | None:
    return None if milestones is None else list(milestones)


def _write_resumed_model(trainer: Trainer, checkpoint: Path, model_path: Path) -> None:
    """model.pt holds the best validated weights so far, so a resume that finds no new best still
    writes (and scores) them: the earlier run's model.pt beside the checkpoint, or the
    checkpoint's own weights when its last validation was the best."""
    beside = checkpoint.parent / "model.pt"
    if beside.resolve() == model_path.resolve():
        return  # resuming in the same folder: its model.pt is already the best
    if beside.is_file():
        shutil.copy2(beside, model_path)
    elif trainer.best_epoch == trainer.epoch:
        torch.save(trainer.model.state_dict(), model_path)
    else:
        log.warning("%s: no model.pt beside the checkpoint; model.pt holds the checkpoint's "
                    "weights of epoch %d, not the best ones of epoch %d, until a new best",
                    checkpoint, trainer.epoch, trainer.best_epoch)
        torch.save(trainer.model.state_dict(), model_path)


def _score(cfg: TrainConfig, trainer: Trainer, out: Path, no_test: bool,
           split: Callable[[str], SplitData]) -> dict[str, Any]:
    """The best validated weights, as saved in model.pt, scored on val (and on at most
    ``test_clips`` clips of test, evenly spread); bicubic from the split's cache after the first
    run on the machine (`trainable.evaluate.bicubic_conventions`)."""
    from trainable.store import sampled

    if trainer.status == "diverged" or not (out / "model.pt").exists():
        return {}
    device = trainer.device
    trainer.model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    splits = {"val": trainer.val_data}
    if not no_test:
        splits["test"] = sampled(split("test"), cfg.test_clips)
    scores: dict[str, Any] = {"best_epoch": trainer.best_epoch}
    ours, theirs = Convention(cfg.crop_border), source_convention(cfg.scale)
    trainer.model.eval()
    for name, data in splits.items():
        shown = f"scoring {name} ({data.scope})" if name == "test" else None
        m, m_src = score_conventions(model_predictor(trainer.model), data, frames=cfg.frames,
                                     device=device, conventions=(ours, theirs), progress=shown)
        b, b_src = bicubic_conventions(data, frames=cfg.frames, device=device,
                                       conventions=(ours, theirs),
                                       progress=shown and f"{shown}, bicubic")
        source = SplitScores(psnr=m_src.psnr, ssim=m_src.ssim, bicubic_psnr=b_src.psnr,
                             bicubic_ssim=b_src.ssim, gain_db=m_src.psnr - b_src.psnr,
                             frames=m_src.frames)
        scores[name] = SplitScores(psnr=m.psnr, ssim=m.ssim, bicubic_psnr=b.psnr,
                                   bicubic_ssim=b.ssim, gain_db=m.psnr - b.psnr, frames=m.frames,
                                   clips=data.num_clips, scope=data.scope, source=source)
    return scores
