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

    python bench/step_ops.py --fused 1 2 8 32 [--batch 16]

adds a fused group's rows (trainable/fused.py, issue 16): operator calls per *member-update* (one
optimizer update of one member) for groups of N members, each member with its own seed and
learning rate. The draw is counted over one whole device chunk of every member (its windows and
each member's own chunk draw), the update over two updates at ``--update-patch`` (8 by default:
an update's operator calls do not depend on the patch size, and a small patch keeps fp16/bf16
on the CPU quick). Calls that only make views (detach, unbind, view, ...) launch no kernel on a
GPU: the column "of them views" says how many of the total are such.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainable import sampler as sampler_module  # noqa: E402
from trainable.config import (
    DataSpec,  # noqa: E402
    TrainConfig,  # noqa: E402
)
from trainable.fused import FusedTrainer  # noqa: E402
from trainable.loop import Trainer, train_step  # noqa: E402
from trainable.store import open_split  # noqa: E402

AMP = {"fp32": dict(use_amp=False), "bf16": dict(use_amp=True, amp_dtype="bfloat16"),
       "fp16": dict(use_amp=True, amp_dtype="float16")}


# Calls that make a view or hand a tensor on: no kernel on a GPU.
_VIEWS = {"aten.detach", "aten.view", "aten._unsafe_view", "aten.unbind", "aten.select",
          "aten.slice", "aten.expand", "aten.unsqueeze", "aten.squeeze", "aten.alias",
          "aten.lift_fresh"}


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


def count_fused(members: int, amp: str, device: str, data, batch: int = 16, patch: int = 32,
                update_patch: int = 8) -> dict[str, float]:
    """Operator calls per member-update of a fused group of ``members``."""
    train, val = data

    def group(p: int) -> FusedTrainer:
        cfg = TrainConfig(data="unused", batch_size=batch, patch_size=p, residual=True,
                          optimizer="adam", weight_decay=0.0, num_threads=1, device=device,
                          **AMP[amp])
        g = FusedTrainer(cfg, train, val, members, grouped=True)  # a card's form, on any device
        for i in range(members):
            g.add(i, cfg.replace(seed=i, model_lr=1e-3 * (1 + i % 4)))
        return g

    everyone = list(range(members))
    drawing = group(patch)
    streams = drawing._streams
    per = streams.per
    for i in everyone:  # at the second chunk of every member's stream, as the solo count
        streams.assign(i, i, per)
    draw = _Count()
    with draw:
        for _ in range(per):
            streams.next_batches(everyone, 1, horizon=per)
    updating = group(update_patch)
    update = _Count()
    for step in range(3):  # a warm-up, then two counted
        batches = updating._streams.next_batches(everyone, 1, horizon=3)
        with update if step else contextlib.nullcontext():
            updating._update(batches, everyone)
    draw_ops, update_ops = sum(draw.calls.values()) / per, sum(update.calls.values()) / 2
    views = (sum(v for k, v in draw.calls.items() if k in _VIEWS) / per
             + sum(v for k, v in update.calls.items() if k in _VIEWS) / 2)
    return {"members": members, "amp": amp, "chunk_batches": per, "window": streams.window,
            "draw_ops": draw_ops, "update_ops": update_ops,
            "per_member": (draw_ops + update_ops) / members, "views": views}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--data", default="builtin")
    p.add_argument("--patch", type=int, default=32, help="LR patch size (the shipped spaces' 32)")
    p.add_argument("--fused", type=int, nargs="*", default=[],
                   help="also count fused groups of these sizes (e.g. 1 2 8 32)")
    p.add_argument("--update-patch", type=int, default=8,
                   help="LR patch size the fused update is counted at (calls do not depend on it)")
    p.add_argument("--no-solo", action="store_true", help="only the fused rows")
    args = p.parse_args(argv)
    sampler_module._GATHER = "torch"  # the device path, on the CPU too
    data_arg = args.data if args.data == "builtin" else str(Path(args.data).resolve())
    data = (open_split(DataSpec(data_arg), "train"), open_split(DataSpec(data_arg), "val"))
    if not args.no_solo:
        print(f"{'batch':>5} {'amp':>5} {'chunk':>6} {'draw ops':>9} {'update ops':>11} {'total':>6}")
        for b in args.batch:
            for amp in AMP:
                r = count(b, amp, args.device, data, args.patch)
                print(f"{b:>5} {amp:>5} {r['chunk_batches']:>6} {r['draw_ops']:>9.1f} "
                      f"{r['update_ops']:>11.1f} {r['draw_ops'] + r['update_ops']:>6.1f}")
    if args.fused:
        print(f"fused groups, batch {args.batch[0]}, calls per group update and per member-update:")
        print(f"{'N':>3} {'amp':>5} {'chunk':>6} {'window':>7} {'draw':>6} {'update':>7} "
              f"{'total':>6} {'of them views':>14} {'per member-update':>18}")
        for n in args.fused:
            for amp in AMP:
                r = count_fused(n, amp, args.device, data, args.batch[0], args.patch,
                                args.update_patch)
                total = r["draw_ops"] + r["update_ops"]
                print(f"{n:>3} {amp:>5} {r['chunk_batches']:>6} {r['window']:>7} "
                      f"{r['draw_ops']:>6.1f} {r['update_ops']:>7.1f} {total:>6.1f} "
                      f"{r['views']:>14.1f} {r['per_member']:>18.2f}")


if __name__ == "__main__":
    main()
