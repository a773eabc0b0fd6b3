"""The GPU benchmark: one prepared script, cut at ``--budget-s`` (480 s) on a card. Measured on an
H100 before the graph and fused parts existed: the smoke and the nine compile-off rows took under
a minute, each packing run about 90 s at twice the samples it trains now. The graph and fused
rows have not been timed on a card: what does not fit the budget is listed as skipped.

    python bench/gpu.py --out gpu.json                 # on a CUDA machine
    python bench/gpu.py --device cpu --quick            # the CPU check the test suite runs

In order, until ``--budget-s`` is spent (what does not fit is listed as skipped):

1. correctness smoke: 200 fp16 steps (fp32 on the CPU), save, resume in a fresh trainer, finish;
   compared with one uninterrupted run, parameter by parameter (pass: bit-exact, cuDNN pinned to
   deterministic algorithms);
2. steps/s, data-time share and peak CUDA memory at batch 16, 32 and 64 across fp32, fp16 and
   bf16, compile off;
3. the whole step as a CUDA graph (``cuda_graph: true``, trainable/graphed.py): steps/s of one
   trial at batch 16 per precision, beside step 2's eager rows;
4. fused trials (trainable/fused.py): aggregate training samples/s of a group of 8, 32 and 64
   members at batch 16: fp16 eager, fp16 and bf16 as one CUDA graph per group (the second
   interval's rate: the first carries start-up and capture), with peak memory;
5. aggregate samples/s with 1, 8 and 16 trials packed on one card (``--gpus-per-trial 1/N``)
   through the real ``python -m tune.run`` on a short grid space: the sum over trials of each
   trial's median training samples/s (validation excluded), all trials running at once;
6. compile on, AMP at batch 16 first, as far as the budget allows (compiling costs tens of
   seconds per configuration, and the goals above do not depend on it).

It prints one table and writes the figures as JSON (``--out``, rewritten after each figure); a
part that raises is listed as failed and the rest still run. It exits 1 when the smoke run is not
bit-exact or any part failed. ``--quick`` shrinks every part to a few seconds; on the CPU it
skips what needs a GPU (fp16/bf16, compile, fractional packing, capture) and says so in the
table; it runs the graph and fused parts small and without capture (``graphed._CAPTURE =
False``: the same static-buffer code, eagerly), and one CPU trial through ``tune.run`` only with
``--pack`` (starting Ray costs most of a minute here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

# This checkout's packages and the sibling benchmarks, whatever is installed.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from train_step import measure  # noqa: E402
from tune_overhead import run_search  # noqa: E402

from trainable import graphed  # noqa: E402
from trainable import sampler as sampler_module  # noqa: E402
from trainable.config import DataSpec, TrainConfig  # noqa: E402
from trainable.fused import FusedTrainer  # noqa: E402
from trainable.loop import Trainer  # noqa: E402
from trainable.store import open_split  # noqa: E402

AMP = {"fp32": dict(use_amp=False), "fp16": dict(use_amp=True, amp_dtype="float16"),
       "bf16": dict(use_amp=True, amp_dtype="bfloat16")}

PACK_SPACE = """\
params:
  model_lr: {{grid: {lrs}}}
config: {{batch_size: 16, {amp}}}
budget: {{epochs: {epochs}, epoch_samples: {epoch_samples}, validation_interval: 1}}
scheduler: {{type: fifo}}
search: {{algorithm: grid}}
include_defaults: false
max_concurrent: {n}
"""


class _Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def smoke(data, device: str, steps: int, batch: int, amp: str, tmp: Path) -> dict[str, Any]:
    """``steps`` updates straight, against ``steps // 2``, save, load into a fresh trainer, finish."""
    train, val = data
    cfg = TrainConfig(data="unused", batch_size=batch, epochs=2, epoch_samples=steps // 2 * batch,
                      validation_interval=1, device=device, num_threads=1, **AMP[amp])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    straight = Trainer(cfg, train, val)
    straight.train_until(cfg.total_samples)
    first = Trainer(cfg, train, val)
    first.train_until(cfg.epoch_samples)
    first.save(tmp / "smoke.pt")
    resumed = Trainer(cfg.replace(seed=cfg.seed + 1), train, val)  # the checkpoint must win
    resumed.load(tmp / "smoke.pt")
    resumed.train_until(cfg.total_samples)
    torch.backends.cudnn.deterministic = False
    diff = max((a.float() - b.float()).abs().max().item()
               for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True))
    return {"steps": steps, "amp": amp, "batch": batch, "max_abs_param_diff": diff,
            "bit_exact": diff == 0.0, "scaler_enabled": straight.scaler.is_enabled()}


def throughput(data, device: str, batch: int, amp: str, compiled: bool, seconds: float,
               graph: bool = False) -> dict[str, Any]:
    train, val = data
    cfg = TrainConfig(data="unused", batch_size=batch, epochs=1000, device=_named(device, graph),
                      num_threads=1, compile=compiled, cuda_graph=graph, **AMP[amp])
    trainer = Trainer(cfg, train, val)
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(trainer.device)
    steps_per_s, data_share = measure(trainer, seconds)
    peak = torch.cuda.max_memory_allocated(trainer.device) / 2**20 if cuda else None
    step = trainer._graphed
    row = {"batch": batch, "amp": amp, "compile": compiled, "steps_per_s": steps_per_s,
           "samples_per_s": steps_per_s * batch, "data_share": data_share, "peak_mib": peak}
    if graph:  # whether the updates really were replays (not the uncaptured CPU check)
        row["captured"] = bool(step is not None and step.captured)
        row["eager_updates"] = step.eager_updates if step is not None else None
    del trainer, step
    if cuda:
        torch.cuda.empty_cache()
    return row


def fused(data, device: str, members: int, amp: str, graph: bool, epoch_samples: int
          ) -> dict[str, Any]:
    """A group of ``members`` at batch 16, each its own LR and seed: two intervals of
    ``epoch_samples`` per member; the second's training rate (validation excluded), summed."""
    train, val = data
    cfg = TrainConfig(data="unused", batch_size=16, epochs=2, epoch_samples=epoch_samples,
                      validation_interval=1, device=_named(device, graph), num_threads=1,
                      cuda_graph=graph, **AMP[amp])
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    group = FusedTrainer(cfg, train, val, members)
    for i in range(members):
        group.add(i, cfg.replace(seed=i, model_lr=round(1e-3 * 0.97**i, 8)))
    start = time.perf_counter()
    group.run_interval()  # start-up, the draw's first window, the capture
    first_s = time.perf_counter() - start
    rate = sum(r.samples_per_s for r in group.run_interval().values())
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    row: dict[str, Any] = {
        "members": members, "amp": amp, "graph": graph, "aggregate_samples_per_s": rate,
        "per_member_samples_per_s": rate / members, "first_interval_s": first_s,
        "peak_mib": peak, "finished": sum(group.done(i) for i in range(members))}
    if group._graph is not None:
        row["replays"], row["eager_updates"] = group._graph.replays, group._graph.eager_updates
    del group
    if cuda:
        torch.cuda.empty_cache()
    return row


def packing(n: int, cuda: bool, data: str, epochs: int, epoch_samples: int, tmp: Path
            ) -> dict[str, Any]:
    lrs = [round(1e-2 * 0.9**k, 6) for k in range(n)]
    amp = "use_amp: true, amp_dtype: float16" if cuda else "use_amp: false"
    space = PACK_SPACE.format(lrs=lrs, amp=amp, epochs=epochs, epoch_samples=epoch_samples, n=n)
    extra = ["--data", data, "--cpus-per-trial", "1", "--max-concurrent", str(n)]
    if cuda:
        extra += ["--gpus-per-trial", f"{1 / n:.6g}"]
    start = time.perf_counter()
    trials, _ = run_search(space, tmp, f"pack{n}", *extra)
    rates = []
    for rows in trials:
        rows = [r for r in rows if r.get("samples_per_s")]
        # The first interval carries start-up (page cache, CUDA context, graph capture).
        rates.append(statistics.median(r["samples_per_s"] for r in (rows[1:] or rows)))
    return {"trials": n, "finished": len(trials), "aggregate_samples_per_s": sum(rates),
            "wall_s": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a check that the script runs")
    p.add_argument("--data", default="builtin", help="'builtin', a Vimeo90K root or clip folders")
    p.add_argument("--budget-s", type=float, default=480.0, help="stop starting new parts after this")
    p.add_argument("--out", help="write the figures here as JSON")
    p.add_argument("--pack", action="store_true",
                   help="with --device cpu --quick: run the packing part too (starts Ray, ~1 min)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; run with --device cpu --quick", file=sys.stderr)
        return 2
    cuda = args.device == "cuda"
    budget = _Budget(args.budget_s)
    data_arg = args.data if args.data == "builtin" else str(Path(args.data).resolve())
    data = (open_split(DataSpec(data_arg), "train"), open_split(DataSpec(data_arg), "val"))
    skipped: list[str] = []
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__, "quick": args.quick, "skipped": skipped}

    failed: list[str] = []
    report["failed"] = failed

    def done(part: str, row: dict[str, Any]) -> None:
        # Each figure as it comes, and the JSON so far: a run cut off by its time limit keeps them.
        print(part, json.dumps(row), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))

    def attempt(what: str, fn, *a) -> dict[str, Any] | None:
        # One broken part must not hide the others' figures: record it, go on, exit 1 at the end.
        try:
            return fn(*a)
        except Exception as e:  # noqa: BLE001 - reported in the table and the JSON
            traceback.print_exc()
            failed.append(f"{what}: {type(e).__name__}: {e}"[:500])
            return None

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        report["throughput"], report["packing"] = [], []
        report["graph"], report["fused"] = [], []
        report["smoke"] = attempt("smoke", smoke, data, args.device, 20 if args.quick else 200,
                                  8 if args.quick else 16, "fp16" if cuda else "fp32", tmp_path)
        done("smoke", report["smoke"] or {})

        batches = [16] if args.quick else [16, 32, 64]
        amps = list(AMP) if cuda else ["fp32"]
        if not cuda:
            skipped.append("fp16/bf16 throughput: CPU autocast is not the GPU path (see "
                           "bench/train_step.py)")
            skipped.append("compile: needs CUDA here (CPU inductor compile takes minutes on 2 cores)")
        seconds = 0.5 if args.quick else 3.0

        def step(b: int, a: str, compiled: bool, needs_s: float) -> None:
            what = f"throughput batch {b} {a} compile {'on' if compiled else 'off'}"
            if budget.left() < needs_s:
                skipped.append(f"{what}: time budget")
            elif row := attempt(what, throughput, data, args.device, b, a, compiled, seconds):
                report["throughput"].append(row)
                done("step", row)

        for b in batches:
            for a in amps:
                step(b, a, False, 10.0)

        if not cuda:
            skipped.append("capture: needs CUDA; the graph and fused parts ran their code "
                           "uncaptured, as a check")
        with _uncaptured(not cuda):
            for a in amps:
                what = f"graph batch 16 {a}"
                if budget.left() < 15.0:
                    skipped.append(f"{what}: time budget")
                elif row := attempt(what, throughput, data, args.device, 16, a, False, seconds,
                                    True):
                    report["graph"].append(row)
                    done("graph", row)
            sizes = [8, 32, 64] if cuda else [2]
            kinds = ([("fp16", False), ("fp16", True), ("bf16", True)] if cuda
                     else [("fp32", False), ("fp32", True)])
            # Per member: 2 x 6,400 samples (400 updates an interval); 2 x 64 on the CPU.
            per = 64 if args.quick or not cuda else 6400
            for n in sizes:
                for a, g in kinds:
                    what = f"fused {n} {a} graph {'on' if g else 'off'}"
                    if budget.left() < 30.0:
                        skipped.append(f"{what}: time budget")
                    elif row := attempt(what, fused, data, args.device, n, a, g, per):
                        report["fused"].append(row)
                        done("fused", row)

        counts = [1, 8, 16] if cuda else [1] if args.pack else []
        if not cuda:
            skipped.append("packing 8/16 trials per card: needs a GPU" + (
                " (1 trial ran on the CPU)" if args.pack else "; 1 on the CPU with --pack"))
        for n in counts:
            if budget.left() < 30.0:
                skipped.append(f"packing {n} trials: time budget")
                continue
            # 3 x 32,768 samples: ~30 s of training for one trial at the H100's ~3,600/s.
            epochs, epoch_samples = (1, 256) if args.quick or not cuda else (3, 32768)
            if row := attempt(f"packing {n}", packing, n, cuda, data_arg, epochs, epoch_samples,
                              tmp_path):
                report["packing"].append(row)
                done("packing", row)

        # Last, with what is left: the AMP settings at the goal's batch first.
        order = sorted(((b, a) for b in batches for a in amps),
                       key=lambda ba: (ba[0] != 16, ba[1] == "fp32", ba[0]))
        for b, a in order if cuda else []:
            step(b, a, True, 60.0)

    print(_table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0 if report["smoke"] and report["smoke"]["bit_exact"] and not failed else 1


def _named(device: str, graph: bool) -> str:
    # A config refuses cuda_graph with `device: cpu`; on a machine without CUDA, "auto" resolves
    # to the CPU and lets the uncaptured check run.
    return "auto" if graph and device == "cpu" else device


@contextlib.contextmanager
def _uncaptured(on: bool) -> Iterator[None]:
    """Off CUDA: trainable.graphed's code without capture, on the device gather's torch path
    (what a CPU can check of it; tests/test_graph.py does the same)."""
    before = graphed._CAPTURE, sampler_module._GATHER
    if on:
        graphed._CAPTURE, sampler_module._GATHER = False, "torch"
    try:
        yield
    finally:
        graphed._CAPTURE, sampler_module._GATHER = before


def _table(r: dict[str, Any]) -> str:
    s = r["smoke"] or {"steps": 0, "amp": "-", "max_abs_param_diff": float("nan"), "bit_exact": False}
    smoke_setting = f"{s['steps']} {s['amp']} steps, resume"
    smoke_diff = f"max |d| {s['max_abs_param_diff']:.1e}"
    lines = [f"device: {r['device']}, torch {r['torch']}{' (quick)' if r['quick'] else ''}",
             f"{'part':<10} {'setting':<26} {'steps/s':>9} {'samples/s':>10} {'data':>6} "
             f"{'peak MiB':>9}",
             f"{'smoke':<10} {smoke_setting:<26} {'bit-exact' if s['bit_exact'] else 'DIFFERS':>9} "
             f"{smoke_diff:>17}"]
    for t in r["throughput"]:
        setting = f"b{t['batch']} {t['amp']} compile {'on' if t['compile'] else 'off'}"
        peak = f"{t['peak_mib']:.0f}" if t["peak_mib"] is not None else "n/a"
        lines.append(f"{'step':<10} {setting:<26} {t['steps_per_s']:>9.1f} "
                     f"{t['samples_per_s']:>10.0f} {100 * t['data_share']:>5.1f}% {peak:>9}")
    for t in r.get("graph", []):
        setting = f"b{t['batch']} {t['amp']} " + ("captured" if t["captured"] else "uncaptured")
        peak = f"{t['peak_mib']:.0f}" if t["peak_mib"] is not None else "n/a"
        lines.append(f"{'graph':<10} {setting:<26} {t['steps_per_s']:>9.1f} "
                     f"{t['samples_per_s']:>10.0f} {100 * t['data_share']:>5.1f}% {peak:>9}")
    for f in r.get("fused", []):
        setting = f"{f['members']} x b16 {f['amp']} graph {'on' if f['graph'] else 'off'}"
        peak = f"{f['peak_mib']:.0f}" if f["peak_mib"] is not None else "n/a"
        lines.append(f"{'fused':<10} {setting:<26} {'':>9} {f['aggregate_samples_per_s']:>10.0f} "
                     f"{'':>6} {peak:>9}  {f['per_member_samples_per_s']:.0f}/member")
    base = next((p["aggregate_samples_per_s"] for p in r["packing"] if p["trials"] == 1), None)
    for p in r["packing"]:
        gain = f"x{p['aggregate_samples_per_s'] / base:.2f}" if base else ""
        setting = f"{p['trials']} trials/card"
        lines.append(f"{'packing':<10} {setting:<26} {gain:>9} "
                     f"{p['aggregate_samples_per_s']:>10.0f} {'':>6} {'':>9}  "
                     f"{p['finished']}/{p['trials']} done in {p['wall_s']:.0f} s")
    lines += [f"skipped: {s}" for s in r["skipped"]]
    lines += [f"FAILED: {s}" for s in r["failed"]]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
