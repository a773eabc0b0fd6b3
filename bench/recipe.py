"""Which base recipe trains best in a fixed budget: several configurations trained side by side
on the built-in clips, each scored on val and test against bicubic.

    python bench/recipe.py bench/configs/recipe_*.yaml [--set key=value ...] [--workers 2]
        [--json out.json]

Each YAML file holds ``TrainConfig`` keys (a list of such mappings under ``variants:`` gives
several named runs per file). Runs go ``--workers`` at a time, one torch thread each, so the
machine's two cores train two runs at once; budgets are in samples, so noise changes how long a
run takes, not what it computes. Validation runs once, at the end (``validation_interval`` =
``epochs``) unless a file sets it; the scores are the final weights'.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml


def _variants(path: Path, overrides: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    doc = yaml.safe_load(path.read_text()) or {}
    if "variants" not in doc:
        return [(path.stem, {**doc, **overrides})]
    base = {k: v for k, v in doc.items() if k != "variants"}
    return [(f"{path.stem}:{v.pop('name')}", {**base, **v, **overrides}) for v in doc["variants"]]


def _train(name: str, values: dict[str, Any]) -> dict[str, Any]:
    import torch

    from trainable.config import TrainConfig
    from trainable.evaluate import score_bicubic, score_model
    from trainable.loop import Trainer
    from trainable.store import open_split

    torch.set_num_threads(1)
    values = {"num_threads": 1, "use_amp": False, **values}
    values.setdefault("validation_interval", values.get("epochs", TrainConfig.epochs))
    cfg = TrainConfig.from_dict(values, where=name)
    train, val = (open_split(cfg.data_spec, s) for s in ("train", "val"))
    start = time.perf_counter()
    trainer = Trainer(cfg, train, val)
    last = trainer.run()
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {"name": name, "status": trainer.status, "seconds": round(seconds, 1),
                           "samples": trainer.samples_seen, "loss": last.loss if last else None}
    for split, data in (("val", val), ("test", open_split(cfg.data_spec, "test"))):
        m = score_model(trainer.model, data, frames=cfg.frames, crop_border=cfg.crop_border,
                        device=trainer.device)
        b = score_bicubic(data, frames=cfg.frames, crop_border=cfg.crop_border,
                          device=trainer.device)
        out[split] = {"psnr": round(m.psnr, 4), "bicubic": round(b.psnr, 4),
                      "gain": round(m.psnr - b.psnr, 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("configs", nargs="+", type=Path)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    runs = [v for path in args.configs for v in _variants(path, overrides)]
    print(f"machine: {platform.processor() or platform.machine()}; {len(runs)} runs, "
          f"{args.workers} at a time, 1 torch thread each", flush=True)
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(_train, name, values) for name, values in runs]
        results = []
        for f in futures:
            r = f.result()
            results.append(r)
            print(f"{r['name']:<34} {r['status']:<9} {r['samples']:>7} samples {r['seconds']:>6.0f} s"
                  f"  val {r['val']['psnr']:.3f} ({r['val']['gain']:+.3f})"
                  f"  test {r['test']['psnr']:.3f} ({r['test']['gain']:+.3f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
