"""Training throughput on the built-in clips: optimizer steps per second and the share of each
step spent sampling patches, per batch size and AMP setting, measured side by side in one run.

    python bench/train_step.py [--batch 16 64] [--seconds 20] [--threads 2]

Each configuration first warms up for a few steps, then trains for ``--seconds``; the
configurations are interleaved over ``--rounds`` so machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics

import torch

from trainable.config import DataSpec, TrainConfig
from trainable.loop import Trainer
from trainable.store import open_split


def measure(trainer: Trainer, seconds: float) -> tuple[float, float]:
    """-> (steps per second, data-time share) over about ``seconds`` of training."""
    cfg = trainer.cfg
    trainer.train_until(trainer.samples_seen + 5 * cfg.samples_per_update)  # warm-up
    probe = trainer.train_until(trainer.samples_seen + 20 * cfg.samples_per_update)
    steps = max(20, int(seconds * probe.updates / probe.seconds))
    stats = trainer.train_until(trainer.samples_seen + steps * cfg.samples_per_update)
    return stats.updates / stats.seconds, stats.data_seconds / stats.seconds


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    p.add_argument("--amp", choices=["on", "off", "both"], default="both")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    amps = {"on": [True], "off": [False], "both": [False, True]}[args.amp]
    train = open_split(DataSpec(), "train")
    val = open_split(DataSpec(), "val")
    trainers = {}
    for bs in args.batch:
        for amp in amps:
            cfg = TrainConfig(batch_size=bs, use_amp=amp, num_threads=args.threads,
                              device=args.device, epochs=1000)
            trainers[(bs, amp)] = Trainer(cfg, train, val)
    runs: dict[tuple[int, bool], list[tuple[float, float]]] = {k: [] for k in trainers}
    for _ in range(args.rounds):
        for key, tr in trainers.items():
            runs[key].append(measure(tr, args.seconds))
    device = trainers[next(iter(trainers))].device
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"torch threads, device {device}, torch {torch.__version__}")
    print(f"{'batch':>5} {'AMP':>5} {'steps/s':>9} {'samples/s':>10} {'data share':>11}")
    rows = []
    for (bs, amp), vals in runs.items():
        sps = statistics.median(v[0] for v in vals)
        share = statistics.median(v[1] for v in vals)
        rows.append({"batch": bs, "amp": amp, "steps_per_s": sps, "data_share": share})
        print(f"{bs:>5} {('bf16' if device.type == 'cpu' else 'fp16') if amp else 'off':>5} "
              f"{sps:>9.1f} {sps * bs:>10.0f} {100 * share:>10.1f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
