"""``python -m trainable --config FILE.yaml``: one full training run (the source document's train.py).

A thin command line over `trainable.train`, which writes into the output folder the resolved
``config.yaml``, this command line (``command.txt``), TensorBoard logs (``tb/``), the full training
state (``checkpoint.pt``, resumable with ``--resume``), the best weights as a weights-only state
dict (``model.pt``) and ``summary.json``. This prints PSNR/SSIM against bicubic on the validation
and test splits.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from trainable.config_file import load_config
from trainable.errors import InputError
from trainable.training import train


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
    cfg = load_config(args.config, args.set)
    stem = Path(args.config).stem if args.config else "defaults"
    out = Path(args.out or f"runs/train/{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = train(cfg, out, resume=args.resume, allow_budget_change=args.allow_budget_change,
                    no_test=args.no_test, command=["python", "-m", "trainable", *argv])
    _print_summary(summary.to_dict(), out)
    step = _next_step(out)
    if step:
        print(step)
    return 1 if summary.status == "diverged" else 0


def _next_step(out: Path) -> str | None:
    """The command that applies the best weights to a video; None where none were written."""
    from trainable.upscale import command_line

    if not (out / "model.pt").is_file():
        return None
    return "upscale a video:  " + command_line(out / "model.pt", out / "config.yaml", "VIDEO",
                                               out / "upscaled.mp4", compare=True)


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    print(f"status: {summary['status']} after {summary['epochs']} epochs "
          f"({summary['samples']} samples)")
    if summary["status"] == "stopped_early":
        print(f"stopped early: no new best validation in {summary['early_stop_patience']} "
              f"validations (early_stop_patience); the best was epoch {summary.get('best_epoch')}")
    print(f"evaluation: {summary['evaluation']}")
    for name in ("val", "test"):
        s = summary.get(name)
        if s and math.isfinite(s["psnr"]):
            print(f"{name:>5}: PSNR {s['psnr']:.3f} dB  SSIM {s['ssim']:.4f}  |  bicubic "
                  f"{s['bicubic_psnr']:.3f} dB  SSIM {s['bicubic_ssim']:.4f}  |  gain "
                  f"{s['gain_db']:+.3f} dB  ({s['frames']} frames, {s.get('scope', 'full')})")
            src = s.get("source_convention")
            if src:
                print(f"{'':>5}  as the source repository's test.py scores ("
                      f"{summary['source_evaluation']}): PSNR {src['psnr']:.3f} dB  |  bicubic "
                      f"{src['bicubic_psnr']:.3f} dB  |  gain {src['gain_db']:+.3f} dB")
    print(f"outputs: {out}")


if __name__ == "__main__":
    raise SystemExit(main())
