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
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from trainable.config import TrainConfig
from trainable.errors import ConfigError, InputError
from trainable.evaluate import convention, score_bicubic, score_model

log = logging.getLogger("trainable")


def load_config(path: str | Path | None, overrides: list[str]) -> TrainConfig:
    values: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the config file ({e.strerror})") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not a UTF-8 text file (byte {e.start}); a config file "
                              "must be YAML text") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}: invalid YAML{at}: {getattr(e, 'problem', e)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        values.update(loaded or {})
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML "
                              f"({getattr(e, 'problem', None) or e})") from None
    return TrainConfig.from_dict(values, where=where)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainable", description=__doc__.split("\n")[0])
    p.add_argument("--config", help="YAML file of TrainConfig keys (defaults for the rest)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable)")
    p.add_argument("--out", help="output folder (default: runs/train/<config>-<time>)")
    p.add_argument("--resume", help="continue from a checkpoint.pt written by an earlier run")
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
    if args.resume:
        if not Path(args.resume).is_file():
            raise ConfigError(f"--resume {args.resume}: no such checkpoint file")
        try:
            trainer.load(args.resume)
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file is bad input, not a crash
            text = str(e).strip()
            first = text.splitlines()[0] if text else type(e).__name__
            raise ConfigError(f"--resume {args.resume}: not a readable checkpoint of this "
                              f"trainer ({first})") from None
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
