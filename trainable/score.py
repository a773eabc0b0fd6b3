"""``python -m trainable.score --weights W [--config C.yaml] [--data D] [--split test]``: score
any weights file (an export's .pt, a trainer checkpoint, a source-repository ``g_best.pth.tar``)
on a split against bicubic, in our convention and in the source repository's (border crop = the
scale, output not rounded: `trainable.evaluate.source_convention`).

Frames and scale come from the tensors; ``residual`` and the data from ``--config`` (a source
checkpoint needs none: its network is always plain). Exit status 0, or 2 on bad input (one line
naming the file and the rule).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainable.config import DataSpec
from trainable.config_file import load_config
from trainable.errors import InputError
from trainable.evaluate import (
    Convention,
    bicubic_predictor,
    model_predictor,
    score_conventions,
    source_convention,
)
from trainable.loop import resolve_device
from trainable.store import open_split
from trainable.weights import model_from_file


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainable.score",
                                description="Score a weights file on a split, beside bicubic, in "
                                            "our convention and the source repository's.")
    p.add_argument("--weights", type=Path, required=True, metavar="W",
                   help="an export's .pt, a trainer checkpoint, or a source-repository "
                        "checkpoint (.pth.tar)")
    p.add_argument("--config", type=Path, metavar="C.yaml",
                   help="the config beside the weights (residual, data); not needed for a "
                        "source-repository checkpoint")
    p.add_argument("--data", help="'builtin', a Vimeo90K root or a folder of clips (default: the "
                                  "config's, else builtin)")
    p.add_argument("--split", choices=("val", "test"), default="test")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = p.parse_args(argv)
    try:
        lines = _evaluate(args.weights, args.config, args.data, args.split, args.device)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def _evaluate(weights: Path, config_path: Path | None, data: str | None, split: str,
              device_name: str) -> list[str]:
    cfg = None if config_path is None else load_config(config_path, [])
    model = model_from_file(weights, cfg, config_path)
    source = data or (cfg.data if cfg is not None else "builtin")
    data_lr = cfg.data_lr if cfg is not None and data is None else None
    frames, scale = model.frames, model.scale
    split_data = open_split(DataSpec(source, scale, data_lr,
                                     None if cfg is None else cfg.cache_dir), split)
    device = resolve_device(device_name, "`--device`")
    model.to(device).eval()
    ours = Convention(cfg.crop_border if cfg is not None else 0)
    theirs = source_convention(scale)
    m = score_conventions(model_predictor(model), split_data, frames=frames, device=device,
                          conventions=(ours, theirs))
    b = score_conventions(bicubic_predictor(frames, scale), split_data, frames=frames,
                          device=device, conventions=(ours, theirs))
    lines = [f"weights: {weights} (frames {frames}, scale {scale}, residual {model.residual})",
             f"data: {split_data.source}, {split} split, {m[0].frames} frames"]
    for name, c, mine, bic in (("ours", ours, m[0], b[0]),
                               ("source repository's test.py", theirs, m[1], b[1])):
        lines.append(f"{name} ({c.describe()}): PSNR {mine.psnr:.3f} dB  SSIM {mine.ssim:.4f}  |  "
                     f"bicubic {bic.psnr:.3f} dB  SSIM {bic.ssim:.4f}  |  gain "
                     f"{mine.psnr - bic.psnr:+.3f} dB")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
