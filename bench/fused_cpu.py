"""One short trial's worth of training on the CPU, either as a fused group of N members in this
process or as one solo trial: the two commands that an outside timer runs side by side to
compare fused N = 2 in one process with 2 trials packed as 2 processes (issue 16, item 4).

    python bench/fused_cpu.py fused --members 2 [--threads 2]
    python bench/fused_cpu.py solo --seed 0 [--threads 1]     # run two of these at once
    python bench/fused_cpu.py forms --members 2 4 8 [--amp bf16] [--rounds 3]

Each trains the shipped spaces' base recipe (residual, Adam lr 1e-3, no weight decay, batch 16,
32x32 LR patches, fp32) on the built-in clips for ``--epochs`` epochs of ``--epoch-samples``
samples per trial (member), validating at the end, and prints its own training samples per
second. A solo trial samples as a CPU trial does today (numpy, on a background thread); a fused
group gathers on its device path, here the CPU. The whole process is what is compared:
start-up (torch import, the frame cache), training and validation.

``forms`` times a group's training alone (the interval's samples/s, all members together) in
its two forms side by side in this process, interval for interval in turn: ``grouped``, every
member's convolutions in one grouped kernel (a card's form, and what the CPU ran before issue 26)
and ``per member``, each member through its own network (the CPU's form since, bit for bit a
solo Trainer's). Same recipe, ``--amp bf16`` for the CPU's mixed precision.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["fused", "solo", "forms"])
    p.add_argument("--members", type=int, nargs="+", default=[2],
                   help="fused: the group's size (forms: sizes)")
    p.add_argument("--seed", type=int, default=0, help="solo: the trial's seed")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--epoch-samples", type=int, default=768)
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default: 2 fused, 1 solo)")
    p.add_argument("--amp", choices=["off", "bf16"], default="off", help="forms: precision")
    p.add_argument("--rounds", type=int, default=3, help="forms: intervals per form")
    args = p.parse_args(argv)

    from trainable.config import DataSpec, TrainConfig
    from trainable.store import open_split

    if args.mode == "forms":
        data = open_split(DataSpec(), "train"), open_split(DataSpec(), "val")
        print(f"{'N':>3} {'amp':>5} {'grouped samples/s':>18} {'per member samples/s':>21} "
              f"{'per member / grouped':>21}")
        for n in args.members:
            r = compare_forms(n, data, threads=args.threads or 1, amp=args.amp,
                              rounds=args.rounds, epoch_samples=args.epoch_samples)
            print(f"{n:>3} {args.amp:>5} {r['grouped']:>18.1f} {r['per_member']:>21.1f} "
                  f"{r['per_member'] / r['grouped']:>21.2f}")
        return 0
    threads = args.threads or (2 if args.mode == "fused" else 1)
    members = args.members[0]
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

        group = FusedTrainer(cfg, train, val, members)
        for i in range(members):
            group.add(i, cfg.replace(seed=i))
        psnr, rates = {}, {}
        while any(not group.done(i) for i in range(members)):
            results = group.run_interval()
            psnr.update({i: r.psnr for i, r in results.items()})
            rates.update({i: r.samples_per_s for i, r in results.items()})
        train_rate = sum(rates.values())  # each member's rate over the group's shared time
        samples = sum(group.samples_seen(i) for i in range(members))
    seconds = time.perf_counter() - start
    print(f"{args.mode}: {samples} samples in {seconds:.1f} s (training and validation): "
          f"{samples / seconds:.0f} samples/s; training alone (last interval) {train_rate:.0f} "
          f"samples/s; {threads} threads; val PSNR "
          + ", ".join(f"{v:.3f}" for v in psnr.values()))
    return 0


def compare_forms(members: int, data: tuple[Any, Any], *, threads: int, amp: str, rounds: int,
                  epoch_samples: int, batch: int = 16, patch: int = 32) -> dict[str, float]:
    """A group of ``members`` in both forms, one interval of ``epoch_samples`` per member at a
    time, in turn, ``rounds`` each: the median of each form's training samples/s (all members)."""
    from trainable.config import TrainConfig
    from trainable.fused import FusedTrainer

    cfg = TrainConfig(residual=True, optimizer="adam", model_lr=1e-3, weight_decay=0.0,
                      lr_scheduler_milestones=(0.7,), batch_size=batch, patch_size=patch,
                      use_amp=amp == "bf16", amp_dtype="bfloat16", epochs=rounds,
                      epoch_samples=epoch_samples, validation_interval=1, num_threads=threads,
                      device="cpu")
    groups = {}
    for form, grouped in (("grouped", True), ("per_member", False)):
        groups[form] = FusedTrainer(cfg, *data, members, grouped=grouped)
        for i in range(members):
            groups[form].add(i, cfg.replace(seed=i, model_lr=1e-3 * (1 + i % 4)))
    rates: dict[str, list[float]] = {form: [] for form in groups}
    for _ in range(rounds):
        for form, group in groups.items():
            results = group.run_interval()
            rates[form].append(sum(r.samples_per_s for r in results.values()))
    return {form: statistics.median(r) for form, r in rates.items()}


if __name__ == "__main__":
    raise SystemExit(main())
