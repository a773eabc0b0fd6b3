"""One short trial's worth of training on the CPU, either as a fused group of N members in this
process or as one solo trial: the two commands that an outside timer runs side by side to
compare fused N = 2 in one process with 2 trials packed as 2 processes (issue 16, item 4).

    python bench/fused_cpu.py fused --members 2 [--threads 2]
    python bench/fused_cpu.py solo --seed 0 [--threads 1]     # run two of these at once

Each trains the shipped spaces' base recipe (residual, Adam lr 1e-3, no weight decay, batch 16,
32x32 LR patches, fp32) on the built-in clips for ``--epochs`` epochs of ``--epoch-samples``
samples per trial (member), validating at the end, and prints its own training samples per
second. A solo trial samples as a CPU trial does today (numpy, on a background thread); a fused
group gathers on its device path, here the CPU. The whole process is what is compared:
start-up (torch import, the frame cache), training and validation.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["fused", "solo"])
    p.add_argument("--members", type=int, default=2, help="fused: the group's size")
    p.add_argument("--seed", type=int, default=0, help="solo: the trial's seed")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--epoch-samples", type=int, default=768)
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default: 2 fused, 1 solo)")
    args = p.parse_args(argv)

    from trainable.config import DataSpec, TrainConfig
    from trainable.store import open_split

    threads = args.threads or (2 if args.mode == "fused" else 1)
    cfg = TrainConfig(residual=True, optimizer="adam", model_lr=1e-3, weight_decay=0.0,
                      lr_scheduler_milestones=(0.7,), batch_size=16, patch_size=32,
                      use_amp=False, epochs=args.epochs, epoch_samples=args.epoch_samples,
                      validation_interval=args.epochs, num_threads=threads, device="cpu",
                      seed=args.seed)
    train, val = open_split(DataSpec(), "train"), open_split(DataSpec(), "val")
    start = time.perf_counter()
    if args.mode == "solo":
        from trainable.loop import Trainer

        trainer = Trainer(cfg, train, val)
        result = trainer.run()
        psnr = {0: result.psnr}
        samples, train_rate = result.samples, result.samples_per_s
    else:
        from trainable.fused import FusedTrainer

        group = FusedTrainer(cfg, train, val, args.members)
        for i in range(args.members):
            group.add(i, cfg.replace(seed=i))
        psnr, rates = {}, {}
        while any(not group.done(i) for i in range(args.members)):
            results = group.run_interval()
            psnr.update({i: r.psnr for i, r in results.items()})
            rates.update({i: r.samples_per_s for i, r in results.items()})
        train_rate = sum(rates.values())  # each member's rate over the group's shared time
        samples = sum(group.samples_seen(i) for i in range(args.members))
    seconds = time.perf_counter() - start
    print(f"{args.mode}: {samples} samples in {seconds:.1f} s (training and validation): "
          f"{samples / seconds:.0f} samples/s; training alone (last interval) {train_rate:.0f} "
          f"samples/s; {threads} threads; val PSNR "
          + ", ".join(f"{v:.3f}" for v in psnr.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
