"""How far another seed moves a trial: the noise that ASHA's cut and the `tied` column sit in.

    flock /tmp/espcn-heavy.lock python bench/seed_noise.py RUN_DIR TRIAL TRIAL [--seeds 0 1 2 3 4]
        [--intervals 1] [--json out.json]

Trains each named trial of a finished run again from its own ``trial_config.json`` with each
seed (the search trains every trial with the run's one seed: the same patches, the same initial
weights), for ``--intervals`` validation intervals (1: up to ASHA's first rung), one torch thread
each as a trial has, two at a time, and prints each one's validation PSNR. Seed 0 of a run made
with seed 0 repeats the search's own number to the last digit (a check of the harness). Then, per
seed, the gap between the two trials: its spread over the seeds says whether their order at that
rung holds when the patch stream and initial weights change.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _train(config: dict, seed: int, intervals: int) -> list[float]:
    import torch

    from trainable.config import TrainConfig
    from trainable.loop import Trainer
    from trainable.store import open_split

    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict({**config, "seed": seed})
    trainer = Trainer(cfg, open_split(cfg.data_spec, "train"), open_split(cfg.data_spec, "val"))
    return [trainer.run_interval().psnr for _ in range(intervals)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("trials", nargs=2, help="two trial ids (the 8-character suffix)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--intervals", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    configs = {}
    for t in args.trials:
        (folder,) = args.run_dir.glob(f"trial_*_{t}")
        configs[t] = json.loads((folder / "trial_config.json").read_text())
    jobs = [(t, s) for s in args.seeds for t in args.trials]
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {job: pool.submit(_train, configs[job[0]], job[1], args.intervals)
                   for job in jobs}
        psnr = {job: f.result() for job, f in futures.items()}
    a, b = args.trials
    print(f"validation PSNR after {args.intervals} interval(s), dB")
    print(f"{'seed':>4}  {a:>9}  {b:>9}  {a + ' - ' + b:>20}")
    gaps = []
    for s in args.seeds:
        pa, pb = psnr[(a, s)][-1], psnr[(b, s)][-1]
        gaps.append(pa - pb)
        print(f"{s:>4}  {pa:9.4f}  {pb:9.4f}  {pa - pb:+20.4f}")
    spread = {t: statistics.stdev(psnr[(t, s)][-1] for s in args.seeds) for t in args.trials}
    print(f"std over seeds: {a} {spread[a]:.4f}, {b} {spread[b]:.4f}; the gap "
          f"{statistics.fmean(gaps):+.4f} +- {statistics.stdev(gaps):.4f} (mean +- std), "
          f"{sum(g > 0 for g in gaps)} of {len(gaps)} seeds with {a} ahead")
    if args.json:
        args.json.write_text(json.dumps({
            "run_dir": str(args.run_dir), "intervals": args.intervals,
            "psnr": {f"{t}/{s}": v for (t, s), v in psnr.items()},
            "std": spread, "gaps": gaps}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
