"""Operator calls per training step: what bounds a step on a GPU, counted on any machine.

    python bench/step_ops.py [--batch 16 64] [--device cpu]

On an H100 this network's step is bound by launching kernels, not by the card (BENCHMARKS.md,
"GPU": ~300 steps/s at batch 16 whatever the batch size or precision). Each PyTorch operator
call is one launch there, so the number of calls per step is the figure to bring down, and it
can be counted without a GPU: this runs the device-gather sampler and CUDA's optimizer settings
(fused Adam) on the CPU, and counts every operator call with a TorchDispatchMode, split into the
patch draw and the update (forward, backward, optimizer, GradScaler). The draw is averaged over
whole device chunks (the chunk's draw spread over its batches). Counts, not times: they are the
same on every machine.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainable import sampler as sampler_module  # noqa: E402
from trainable.config import TrainConfig  # noqa: E402
from trainable.loop import Trainer, train_step  # noqa: E402
from trainable.store import open_split  # noqa: E402

AMP = {"fp32": dict(use_amp=False), "bf16": dict(use_amp=True, amp_dtype="bfloat16"),
       "fp16": dict(use_amp=True, amp_dtype="float16")}


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count(batch: int, amp: str, device: str, data, patch: int = 32) -> dict[str, float]:
    train, val = data
    cfg = TrainConfig(data="unused", batch_size=batch, patch_size=patch, residual=True, optimizer="adam",
                      weight_decay=0.0, num_threads=1, device=device, **AMP[amp])
    trainer = Trainer(cfg, train, val)
    if trainer.device.type == "cpu":  # the optimizer a CUDA trainer builds
        trainer.optimizer = torch.optim.Adam(trainer.model.parameters(), lr=cfg.model_lr, fused=True)
    per_chunk = trainer.sampler.chunk_batches(batch)
    stream = trainer.sampler.batches(1 + 2 * per_chunk, batch)

    def step(b) -> None:
        train_step(trainer._step_model, trainer.optimizer, trainer.scaler, [b],
                   autocast=trainer._autocast, grad_clip=cfg.grad_clip)

    step(next(stream))  # warm-up: optimizer state, scaler, the first chunk
    draw, update = _Count(), _Count()
    for _ in range(2 * per_chunk):  # one whole chunk's draw is counted, from the second
        with draw:
            b = next(stream)
        with update:
            step(b)
    n = 2 * per_chunk
    return {"batch": batch, "amp": amp, "chunk_batches": per_chunk,
            "draw_ops": sum(draw.calls.values()) / n, "update_ops": sum(update.calls.values()) / n}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--data", default="builtin")
    p.add_argument("--patch", type=int, default=32, help="LR patch size (the shipped spaces' 32)")
    args = p.parse_args(argv)
    sampler_module._GATHER = "torch"  # the device path, on the CPU too
    data_arg = args.data if args.data == "builtin" else str(Path(args.data).resolve())
    data = (open_split(data_arg, "train", scale=4), open_split(data_arg, "val", scale=4))
    print(f"{'batch':>5} {'amp':>5} {'chunk':>6} {'draw ops':>9} {'update ops':>11} {'total':>6}")
    for b in args.batch:
        for amp in AMP:
            r = count(b, amp, args.device, data, args.patch)
            print(f"{b:>5} {amp:>5} {r['chunk_batches']:>6} {r['draw_ops']:>9.1f} "
                  f"{r['update_ops']:>11.1f} {r['draw_ops'] + r['update_ops']:>6.1f}")


if __name__ == "__main__":
    main()
