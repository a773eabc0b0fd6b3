"""``python -m trainable --config FILE.yaml``: one full training run (the source document's train.py).

Writes into the output folder: the resolved ``config.yaml`` and the command line, TensorBoard logs
(``tb/``), the full training state (``checkpoint.pt``, resumable with ``--resume``), the best
weights as a weights-only state dict (``model.pt``) and ``summary.json``; prints PSNR/SSIM against
bicubic on the validation and test splits.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from trainable.config import TrainConfig
from trainable.errors import ConfigError, InputError
from trainable.evaluate import convention, score_bicubic, score_model
from trainable.yaml_io import parse_yaml, read_yaml

log = logging.getLogger("trainable")


def load_config(path: str | Path | None, overrides: list[str]) -> TrainConfig:
    """The file's keys (or the defaults) with each ``--set KEY=VALUE`` on top, validated once."""
    values: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        loaded = read_yaml(Path(path), "config file")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        values.update(loaded or {})
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        values[key.strip()] = parse_yaml(raw, f"--set {item!r}", lines=False)
    if overrides:
        where += " with --set"
    return TrainConfig.from_dict(values, where=where)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainable", description=__doc__.split("\n")[0])
    p.add_argument("--config", help="YAML file of TrainConfig keys (defaults for the rest)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable)")
    p.add_argument("--out", help="output folder (default: runs/train/<config>-<time>)")
    p.add_argument("--resume", help="continue from a checkpoint.pt written by an earlier run "
                                    "(same config; only device, num_threads, cache_dir may change)")
    p.add_argument("--allow-budget-change", action="store_true",
                   help="with --resume: allow a different `epochs`; LR milestones keep their "
                        "positions in samples, so the learning rate never goes back up")
    p.add_argument("--no-test", action="store_true", help="skip scoring the test split")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    try:
        return _run(args, argv if argv is not None else sys.argv[1:])
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from trainable.loop import Trainer
    from trainable.store import open_split

    cfg = load_config(args.config, args.set)
    saved = None
    if args.resume:
        saved = _read_checkpoint(Path(args.resume))
        cfg = _resumable_config(cfg, saved, args.resume, args.allow_budget_change)
    elif args.allow_budget_change:
        raise ConfigError("--allow-budget-change only applies with --resume")
    stem = Path(args.config).stem if args.config else "defaults"
    out = Path(args.out or f"runs/train/{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (out / "command.txt").write_text(shlex.join(["python", "-m", "trainable", *argv]) + "\n")

    def split(name: str):
        return open_split(cfg.data, name, scale=cfg.scale, data_lr=cfg.data_lr,
                          cache_dir=cfg.cache_dir)

    train, val = split("train"), split("val")
    log.info("data: %s; %d train clips, %d val clips", train.source, train.num_clips, val.num_clips)
    trainer = Trainer(cfg, train, val, log_dir=out / "tb")
    if saved is not None:
        try:
            trainer.load_state_dict(saved)
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file is bad input, not a crash
            raise ConfigError(f"--resume {args.resume}: not a readable checkpoint of this "
                              f"trainer ({_first_line(e)})") from None
        if trainer.samples_seen > cfg.total_samples:
            raise ConfigError(f"--resume {args.resume}: the checkpoint has trained "
                              f"{trainer.samples_seen} samples, more than the budget of "
                              f"{cfg.total_samples} (`epochs` {cfg.epochs})")
        _write_resumed_model(trainer, Path(args.resume), out / "model.pt")
        log.info("resumed from %s at epoch %d", args.resume, trainer.epoch)

    def on_validation(result, tr: Trainer) -> None:
        tr.save(out / "checkpoint.pt")
        if result.status != "diverged" and result.best_epoch == result.epoch:
            torch.save(tr.model.state_dict(), out / "model.pt")

    start = time.perf_counter()
    last = trainer.run(on_validation)
    trainer.close()
    summary = _summarise(cfg, trainer, out, args.no_test, split)
    summary["train_seconds"] = round(time.perf_counter() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(summary, out)
    return 1 if last is not None and last.status == "diverged" else 0


# Settings of where and how fast a run trains, not of what it trains: a resume may change them.
RUN_ONLY = frozenset({"device", "num_threads", "cache_dir"})


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
    budget is dropped: the schedule already run is kept and the LR never goes back up."""
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
    ratio = old["epochs"] / new["epochs"]
    kept = tuple(round(m * ratio, 9) for m in cfg.lr_scheduler_milestones if m * ratio < 1)
    log.warning("budget %d -> %d epochs: LR milestones %s -> %s (same sample counts)",
                old["epochs"], new["epochs"], list(cfg.lr_scheduler_milestones), list(kept))
    return cfg.replace(lr_scheduler_milestones=kept)


def _write_resumed_model(trainer, checkpoint: Path, model_path: Path) -> None:
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


def _summarise(cfg: TrainConfig, trainer, out: Path, no_test: bool, split) -> dict[str, Any]:
    device = trainer.device
    summary: dict[str, Any] = {"status": trainer.status, "epochs": trainer.epoch,
                               "samples": trainer.samples_seen,
                               "evaluation": convention(cfg.crop_border)}
    if trainer.status == "diverged" or not (out / "model.pt").exists():
        return summary
    # Score the best validated weights, as saved.
    trainer.model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    splits = {"val": trainer.val_data} if no_test else {"val": trainer.val_data, "test": split("test")}
    for name, data in splits.items():
        m = score_model(trainer.model, data, frames=cfg.frames, crop_border=cfg.crop_border,
                        device=device)
        b = score_bicubic(data, frames=cfg.frames, crop_border=cfg.crop_border, device=device)
        summary[name] = {"psnr": m.psnr, "ssim": m.ssim, "bicubic_psnr": b.psnr,
                         "bicubic_ssim": b.ssim, "gain_db": m.psnr - b.psnr, "frames": m.frames}
    summary["best_epoch"] = trainer.best_epoch
    return summary


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    print(f"status: {summary['status']} after {summary['epochs']} epochs "
          f"({summary['samples']} samples)")
    print(f"evaluation: {summary['evaluation']}")
    for name in ("val", "test"):
        s = summary.get(name)
        if s and math.isfinite(s["psnr"]):
            print(f"{name:>5}: PSNR {s['psnr']:.3f} dB  SSIM {s['ssim']:.4f}  |  bicubic "
                  f"{s['bicubic_psnr']:.3f} dB  SSIM {s['bicubic_ssim']:.4f}  |  gain "
                  f"{s['gain_db']:+.3f} dB  ({s['frames']} frames)")
    print(f"outputs: {out}")


if __name__ == "__main__":
    raise SystemExit(main())
