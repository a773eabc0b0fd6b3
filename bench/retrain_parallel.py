"""Retraining a run's winner and defaults one after the other (torch's default threads, as
`analysis.retrain` did before issue 27) against side by side (`analysis.parallel_training`: one
process per training, the cores shared between them), on the same run folder, seeds and budget.

    python bench/retrain_parallel.py RUN_DIR --out DIR [--json out.json]

Each way retrains into its own folder under ``--out`` (``sequential/``, ``parallel/``) through
`analysis.retrain.retrain`, as ``python -m analysis.retrain`` does; the data is decoded into the
frame cache before either is timed. Prints, per way, the wall time and each config's test PSNR
(the same seeds: any difference is the thread count's floating-point order).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, required=True, help="folder for both ways' retrainings")
    p.add_argument("--json", type=Path, help="write the figures here too")
    args = p.parse_args(argv)

    from analysis import parallel_training, retrain
    from analysis.tables import load_run
    from trainable.store import open_split

    run = load_run(args.run_dir)
    for candidate in retrain.plan(run):  # decoded into the frame cache before any timing
        for split in ("train", "val", "test"):
            open_split(candidate.config.data_spec, split)
    cores = parallel_training.usable_cores()
    rows: list[dict[str, Any]] = []
    for way, forced in (("sequential", 1), ("parallel", cores)):
        # `plan` counts the cores it is given: one core is the one-after-the-other way, in this
        # process with torch's default threads (num_threads 0), as retraining ran before.
        original = parallel_training.usable_cores
        parallel_training.usable_cores = lambda n=forced: n
        try:
            start = time.perf_counter()
            report = retrain.retrain(run, out=args.out / way, force=True,
                                     progress=lambda m: print(m, file=sys.stderr, flush=True))
            seconds = time.perf_counter() - start
        finally:
            parallel_training.usable_cores = original
        processes, threads = parallel_training.plan(2, forced)
        rows.append({"way": way, "processes": processes,
                     "threads_each": threads if processes > 1 else "torch default",
                     "wall_s": round(seconds, 1),
                     **{f"{label}_test_psnr": c["test_psnr"]
                        for label, c in report["configs"].items()}})
        print(json.dumps(rows[-1]), flush=True)
    out = {"machine": platform.processor() or platform.machine(), "cores": cores,
           "run": str(args.run_dir), "rows": rows,
           "speedup": round(rows[0]["wall_s"] / rows[1]["wall_s"], 2)}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
