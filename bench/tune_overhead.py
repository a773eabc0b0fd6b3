"""One trial inside Ray Tune against the same training loop run bare, side by side.

    python bench/tune_overhead.py [--epochs 6] [--rounds 2]

Both train the same configuration (built-in clips, batch 16, fp32, 1 torch thread, 1 CPU per
trial) for the same number of epochs; the ratio compares training throughput (samples per second
over the training intervals, validation excluded, as each validation result reports it). It also
times `python -m tune.run` from the command to its first reported result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainable.config import DataSpec, TrainConfig
from trainable.loop import Trainer
from trainable.store import open_split

SPACE = """\
params:
  model_lr: {{grid: [1.0e-2]}}
config: {{batch_size: 16, use_amp: false}}
budget: {{epochs: {epochs}, epoch_samples: 4096, validation_interval: 1}}
scheduler: {{type: fifo}}
search: {{algorithm: grid}}
include_defaults: false
max_concurrent: 1
"""


def bare(epochs: int) -> list[float]:
    cfg = TrainConfig(batch_size=16, use_amp=False, epochs=epochs, epoch_samples=4096,
                      validation_interval=1, num_threads=1)
    trainer = Trainer(cfg, open_split(DataSpec(), "train"), open_split(DataSpec(), "val"))
    results: list[float] = []
    trainer.run(lambda r, _: results.append(r.samples_per_s))
    return results


def run_search(space_text: str, storage: Path, name: str, *extra: str
               ) -> tuple[list[list[dict]], float]:
    """``python -m tune.run`` on a space written from ``space_text`` -> (each trial's result rows,
    seconds from the command to its first reported result)."""
    space = storage / f"{name}.yaml"
    space.write_text(space_text)
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "tune.run", "--space", str(space), "--storage",
                             str(storage), "--name", name, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    first = None
    tail: list[str] = []
    for line in proc.stdout:
        tail = [*tail[-20:], line]
        if first is None and line.startswith("[epoch"):
            first = time.time() - start
    if proc.wait() != 0:
        raise RuntimeError(f"tune.run exited {proc.returncode}:\n{''.join(tail)}")
    trials = sorted(p for p in (storage / name).iterdir() if (p / "result.json").exists())
    rows = [[json.loads(x) for x in (t / "result.json").read_text().splitlines() if x.strip()]
            for t in trials]
    return rows, first or float("nan")


def in_tune(epochs: int, storage: Path, name: str) -> tuple[list[float], float]:
    rows, first = run_search(SPACE.format(epochs=epochs), storage, name)
    return [r["samples_per_s"] for r in rows[0]], first


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    ratios, firsts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            # Drop the first interval of each: start-up (imports, page cache) is not throughput.
            b = statistics.median(bare(args.epochs)[1:])
            t, first = in_tune(args.epochs, Path(tmp), f"overhead{k}")
            t = statistics.median(t[1:])
            ratios.append(t / b)
            firsts.append(first)
            print(f"round {k}: bare {b:.0f} samples/s, in Tune {t:.0f} samples/s, ratio "
                  f"{t / b:.3f}; command to first result {first:.1f} s", flush=True)
    print(f"median ratio (Tune / bare): {statistics.median(ratios):.3f}; median time to first "
          f"result: {statistics.median(firsts):.1f} s")


if __name__ == "__main__":
    main()
