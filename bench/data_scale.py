"""Vimeo90K at scale: a synthetic septuplet tree of N sequences in the official layout, and what the
data path costs on it, with the projection to the full septuplet and triplet sets.

    flock /tmp/espcn-heavy.lock python bench/data_scale.py --sequences 10000 --json out.json

The tree (``--root``, deleted at the end unless ``--keep``) is ``sequences/%05d/%04d/im1..im7.png``
(448x256 RGB, about 233 kB each: a 1/f-like scene with sensor noise, moving a few pixels a frame)
in folders of 754 sequences (72,436 / 96, as in the real set), every 9th sequence in
``sep_testlist.txt`` (10.8%, as 7,824 of 72,436), the rest in ``sep_trainlist.txt``. Only
``--pool`` distinct septuplets are encoded; every sequence is a byte copy of one of them, in its
own files (decoding and reading cost what unique frames would; only the pixels repeat).

Measured, each in a fresh process where the page cache matters (a file is evicted from it with
``posix_fadvise(DONTNEED)`` and checked with ``fincore``):

- ``stamp``: the per-frame stamp (a stat of every frame) and the header check of every frame;
- ``gil``: the share of a decoding thread's time that holds the GIL (a pure-Python thread beside
  it counts how often it gets the GIL), with the frames read as before issue 25
  (``np.asarray(im.convert("RGB"))``) and as now (:func:`trainable.sources.read_y`);
- ``build``: each split's cache build (``python -m trainable.data build``), the cache size, and the
  per-clip cost with one decoder, with 2 processes and with 2 threads;
- ``check``: ``python -m trainable.data check`` (every frame decoded, nothing written);
- ``first_step``: a new process's open of train and val, a Trainer, and its first update, with the
  cache evicted and then in memory;
- ``samples``: patches per second from the train cache (batch 16), in memory and evicted, with
  the maps' MADV_RANDOM and with it undone (MADV_NORMAL, as before issue 25);
- ``validation``: one validation interval on the val split (1 torch thread, as a trial with one
  CPU), split into data, model, SSIM and the rest, and the bicubic baseline computed and cached;
- ``test``: the end-of-run test scoring, sampled to the default ``test_clips`` and in full;
- ``bad``: ``python -m tune.run`` on the tree with a missing test list, and with a truncated and a
  garbage frame planted in the middle of train: the seconds to its exit 2.

``--phases`` runs a subset; ``validation`` also runs against an older checkout
(``PYTHONPATH=/path/to/old python bench/data_scale.py --phases validation --keep``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

W, H, T = 448, 256, 7
PER_FOLDER = 754  # 72,436 sequences in 96 folders
TEST_EVERY = 9  # 7,824 of 72,436 are test
FULL = {"septuplet": {"train_list": 64612, "test": 7824, "frames": 7},
        "triplet": {"train_list": 51313, "test": 3782, "frames": 3}}
PHASES = ("stamp", "gil", "build", "check", "first_step", "samples", "validation", "test", "bad")


# --- the tree ----------------------------------------------------------------------------------
def _scene(rng: np.random.Generator, pad: int = 32) -> np.ndarray:
    """A 1/f-like RGB scene: eight octaves of bicubically enlarged noise, each 0.95 of the last."""
    from PIL import Image

    h, w = H + 2 * pad, W + 2 * pad
    img = np.zeros((h, w, 3), np.float32)
    for octave in range(1, 9):
        n = 2**octave
        base = (rng.random((min(n, h) + 1, min(n, w) + 1, 3)) * 255).astype(np.uint8)
        up = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
        img += np.asarray(up, np.float32) / 255 * 0.95**octave
    return (img - img.min()) / (img.max() - img.min()) * 255


def septuplet(rng: np.random.Generator, size: tuple[int, int] = (W, H)) -> list[bytes]:
    """Seven PNGs (bytes) of one moving scene with sensor noise (sigma 3.5): about 233 kB each at
    448x256, as Vimeo90K's frames are."""
    from PIL import Image

    scene, pad = _scene(rng), 32
    dx, dy = rng.integers(-3, 4, 2)
    frames = []
    for k in range(T):
        x0, y0 = pad + dx * k // 2, pad + dy * k // 2
        f = scene[y0 : y0 + H, x0 : x0 + W] + rng.normal(0, 3.5, (H, W, 3))
        img = Image.fromarray(np.clip(np.rint(f), 0, 255).astype(np.uint8))
        if size != (W, H):
            img = img.resize(size, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        frames.append(buf.getvalue())
    return frames


def write_tree(root: Path, sequences: int, pool: int, seed: int = 0,
               size: tuple[int, int] = (W, H)) -> dict[str, Any]:
    """The official septuplet layout with ``sequences`` sequences; returns what was written."""
    rng = np.random.default_rng(seed)
    clips = [septuplet(rng, size) for _ in range(min(pool, sequences))]
    train, test = [], []
    for i in range(sequences):
        name = f"{i // PER_FOLDER + 1:05d}/{i % PER_FOLDER + 1:04d}"
        folder = root / "sequences" / name
        folder.mkdir(parents=True, exist_ok=True)
        for k, data in enumerate(clips[i % len(clips)], 1):
            (folder / f"im{k}.png").write_bytes(data)
        (test if i % TEST_EVERY == TEST_EVERY - 1 else train).append(name)
    (root / "sep_trainlist.txt").write_text("".join(n + "\n" for n in train))
    (root / "sep_testlist.txt").write_text("".join(n + "\n" for n in test))
    frame_bytes = [len(f) for c in clips for f in c]
    return {"sequences": sequences, "train_list": len(train), "test_list": len(test),
            "pool": len(clips), "mean_frame_bytes": round(float(np.mean(frame_bytes))),
            "png_bytes": sum(len(f) for i in range(sequences) for f in clips[i % len(clips)])}


def frame_files(root: Path) -> list[Path]:
    return sorted((root / "sequences").glob("*/*/im*.png"))


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache (written pages first reach the disk)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident(paths: list[Path]) -> float:
    """Share of the files' bytes in the page cache (fincore), 0..1."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "-o", "RES,SIZE",
                          *map(str, paths)], capture_output=True, text=True, check=True).stdout
    res = size = 0
    for line in out.split("\n"):
        if line.strip():
            r, s = line.split()
            res, size = res + int(r), size + int(s)
    return res / max(size, 1)


def touch(paths: list[Path]) -> None:
    """Read the files once, so they are in the page cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


# --- measurements in this process (run as a child of the orchestrator) --------------------------
def _spec(args: dict[str, Any]) -> Any:
    from trainable.config import DataSpec

    return DataSpec(args["root"], 4, None, args["cache"])


def child_stamp(args: dict[str, Any]) -> dict[str, Any]:
    from trainable.sources import open_source

    source = open_source(args["root"], scale=4)
    out: dict[str, Any] = {}
    for split in ("train", "test"):
        t = time.perf_counter()
        source.fingerprint(split)
        out[f"{split}_stamp_s"] = time.perf_counter() - t
        t = time.perf_counter()
        out[f"{split}_clips"] = len(source.plan(split))
        out[f"{split}_plan_s"] = time.perf_counter() - t
    return out


def child_first_step(args: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    from trainable.config import TrainConfig
    from trainable.loop import Trainer
    from trainable.store import open_split

    cfg = TrainConfig(data=args["root"], cache_dir=args["cache"], use_amp=False, num_threads=1,
                      epochs=1, epoch_samples=16)
    t1 = time.perf_counter()
    train, val = open_split(cfg.data_spec, "train"), open_split(cfg.data_spec, "val")
    t2 = time.perf_counter()
    trainer = Trainer(cfg, train, val)
    trainer.train_until(cfg.samples_per_update)
    t3 = time.perf_counter()
    return {"import_s": t1 - t0, "open_s": t2 - t1, "first_step_s": t3 - t2,
            "total_s": t3 - t0}


def child_samples(args: dict[str, Any]) -> dict[str, Any]:
    """Patches per second (batch 16) in ``bursts`` of ``batches``; with ``evict``, the train cache
    is dropped from memory before every burst (this process's own mapped pages too), so each
    burst starts as a cache far larger than memory would always be."""
    import mmap

    import torch

    from trainable.sampler import PatchSampler
    from trainable.store import advise, open_split

    torch.set_num_threads(1)
    train = open_split(_spec(args), "train")
    arrays = [a for g in train.groups for a in (g.hr, g.lr)]
    if args["advice"] == "normal":  # as before issue 25: the kernel's read-around on every fault
        for a in arrays:
            advise(a, "normal")
    sampler = PatchSampler(train, frames=3, patch_size=17, seed=args["seed"],
                           device=torch.device("cpu"))
    elapsed, read, n = 0.0, 0, 0
    for _ in range(args["bursts"]):
        if args["evict"]:
            for a in arrays:
                a._mmap.madvise(mmap.MADV_DONTNEED)  # type: ignore[union-attr]
            evict([Path(a.filename) for a in arrays])  # type: ignore[union-attr]
        before = _read_bytes()
        t = time.perf_counter()
        for _ in range(args["batches"]):
            sampler.sample(16)
        elapsed += time.perf_counter() - t
        read += _read_bytes() - before
        n += args["batches"] * 16
    return {"samples_per_s": n / elapsed, "samples": n, "read_kb_per_sample": read / n / 1e3}


def _read_bytes() -> int:
    """Bytes this process has caused to be read from storage (/proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def child_validation(args: dict[str, Any]) -> dict[str, Any]:
    """One validation interval (1 thread), timed by part; works on older checkouts too."""
    import torch

    from trainable import evaluate
    from trainable.metrics import psnr, ssim, to_uint8
    from trainable.model import EarlyFusionESPCN
    from trainable.store import open_split

    torch.set_num_threads(args.get("threads", 1))
    val = open_split(_spec(args), "val")
    model = EarlyFusionESPCN(3, 4).eval()
    dev = torch.device("cpu")
    parts = {"data": 0.0, "model": 0.0, "ssim": 0.0, "psnr": 0.0}
    t0 = time.perf_counter()
    with torch.no_grad():
        windows = evaluate._windows(val, 3, dev)
        while True:
            a = time.perf_counter()
            try:
                lr, hr = next(windows)
            except StopIteration:
                break
            b = time.perf_counter()
            sr = to_uint8(model(lr).clamp(0, 1)[:, 0])
            c = time.perf_counter()
            psnr(sr, hr, 0)
            d = time.perf_counter()
            ssim(sr, hr, 0)
            e = time.perf_counter()
            parts["data"] += b - a
            parts["model"] += c - b
            parts["psnr"] += d - c
            parts["ssim"] += e - d
    by_part = time.perf_counter() - t0
    t = time.perf_counter()
    evaluate.score_model(model, val, frames=3, crop_border=0, device=dev)
    interval = time.perf_counter() - t
    t = time.perf_counter()
    evaluate.score_bicubic(val, frames=3, crop_border=0, device=dev)
    bicubic = time.perf_counter() - t
    out = {"frames": val.num_targets, "parts_s": parts, "parts_total_s": by_part,
           "interval_s": interval, "bicubic_s": bicubic}
    cached = getattr(evaluate, "bicubic_scores", None)
    if cached is not None:  # issue 25: computed once per machine, then read from the cache
        for key in ("bicubic_first_s", "bicubic_cached_s"):
            t = time.perf_counter()
            cached(val, frames=3, crop_border=0, device=dev)
            out[key] = time.perf_counter() - t
    return out


def child_test(args: dict[str, Any]) -> dict[str, Any]:
    import torch

    from trainable.config import TrainConfig
    from trainable.evaluate import bicubic_scores, score_model
    from trainable.model import EarlyFusionESPCN
    from trainable.store import open_split, sampled

    torch.set_num_threads(args["threads"])
    test = open_split(_spec(args), "test")
    model = EarlyFusionESPCN(3, 4).eval()
    dev = torch.device("cpu")
    out: dict[str, Any] = {"threads": args["threads"], "test_clips_default": TrainConfig().test_clips}
    for label, data in (("sampled", sampled(test, TrainConfig().test_clips)), ("full", test)):
        t = time.perf_counter()
        score_model(model, data, frames=3, crop_border=0, device=dev)
        m = time.perf_counter() - t
        t = time.perf_counter()
        bicubic_scores(data, frames=3, crop_border=0, device=dev)
        b = time.perf_counter() - t
        out[label] = {"clips": data.num_clips, "scope": data.scope, "model_s": m,
                      "bicubic_first_s": b}
    return out


def child_gil(args: dict[str, Any]) -> dict[str, Any]:
    """1 - (a spinning thread's count beside one decoding thread) / (its count alone): the share
    of the time the decoder holds the GIL, which bounds what threads can gain (1 / share)."""
    import threading

    import torch
    from PIL import Image

    from trainable.imaging import downscale, rgb_to_y
    from trainable.sources import read_y

    torch.set_num_threads(1)
    sys.setswitchinterval(1e-4)  # the spinner hands the GIL back quickly
    paths = [Path(p) for p in args["paths"]]

    def before() -> None:  # issue 25's "double copy": convert, then tobytes
        for k in range(0, len(paths), T):
            hr = np.stack([rgb_to_y(np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8))
                           for p in paths[k : k + T]])
            downscale(hr, 4)

    def now() -> None:
        for k in range(0, len(paths), T):
            downscale(np.stack([read_y(p) for p in paths[k : k + T]]), 4)

    def spin(seconds: float, busy: Any) -> int:
        count, stop = [0], threading.Event()

        def run() -> None:
            while not stop.is_set():
                for _ in range(1000):
                    count[0] += 1

        thread = threading.Thread(target=run)
        thread.start()
        t = time.perf_counter()
        while time.perf_counter() - t < seconds:
            busy()
        elapsed = time.perf_counter() - t
        stop.set()
        thread.join()
        return int(count[0] / elapsed)

    out: dict[str, Any] = {}
    for _ in range(2):  # interleaved: the shared machine's noise hits both alike
        alone = spin(2.0, lambda: time.sleep(0.01))
        for name, fn in (("before", before), ("now", now)):
            t = time.perf_counter()
            fn()
            solo = (time.perf_counter() - t) / (len(paths) / T)
            held = 1 - spin(4.0, fn) / alone
            out.setdefault(name, []).append({"gil_share": held, "ms_per_clip": 1e3 * solo})
    return out


CHILDREN = {"gil": child_gil, "stamp": child_stamp, "first_step": child_first_step, "samples": child_samples,
            "validation": child_validation, "test": child_test}


# --- the orchestrator ---------------------------------------------------------------------------
def _child(name: str, **args: Any) -> dict[str, Any]:
    line = subprocess.run([sys.executable, __file__, "_child", name, json.dumps(args)],
                          check=True, capture_output=True, text=True).stdout.strip().splitlines()
    result: dict[str, Any] = json.loads(line[-1])
    return result


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    t = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return time.perf_counter() - t, run.returncode, run.stderr


def _cache_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/*.npy"))


def _du(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sequences", type=int, default=3000)
    p.add_argument("--root", type=Path, default=Path("/tmp/espcn-data-scale"))
    p.add_argument("--pool", type=int, default=48, help="distinct septuplets encoded")
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--subset", type=int, default=600,
                   help="clips of the per-clip cost builds (1 decoder; 2 threads; 2 processes)")
    p.add_argument("--keep", action="store_true", help="keep the tree and its caches")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    phases = [s for s in args.phases.split(",") if s]
    tree, cache = args.root / "tree", args.root / "cache"
    res: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                           "python": platform.python_version()}
    env = {**os.environ, "ESPCN_TUNE_CACHE": str(cache)}
    try:
        if not (tree / "sep_trainlist.txt").is_file():
            t = time.perf_counter()
            res["tree"] = write_tree(tree, args.sequences, args.pool)
            res["tree"]["write_s"] = time.perf_counter() - t
            print("tree:", res["tree"], flush=True)
        frames = frame_files(tree)
        common = {"root": str(tree), "cache": str(cache)}
        if "stamp" in phases:
            res["stamp_warm"] = _child("stamp", **common)
            evict(frames)
            res["stamp_cold_pages"] = {"resident_before": resident(frames[:2000]),
                                       **_child("stamp", **common)}
            print("stamp:", res["stamp_warm"], res["stamp_cold_pages"], flush=True)
        if "gil" in phases:
            touch(frames[: 7 * 20])
            res["gil"] = _child("gil", paths=[str(p) for p in frames[: 7 * 20]])
            print("gil:", res["gil"], flush=True)
        if "build" in phases:
            res["build"] = _build(tree, cache, frames, args.subset, env)
            print("build:", res["build"], flush=True)
        if "check" in phases:
            evict(frames)
            secs, rc, err = _timed([sys.executable, "-m", "trainable.data", "check", "--data",
                                    str(tree), "-q"], env)
            res["check"] = {"seconds": secs, "rc": rc, "clips": _list_len(tree)}
            print("check:", res["check"], err[-300:], flush=True)
        if "first_step" in phases:
            npy = _cache_files(cache)
            evict(npy)
            cold = _child("first_step", **common)
            warm = _child("first_step", **common)
            res["first_step"] = {"cold": cold, "warm": warm}
            print("first step:", res["first_step"], flush=True)
        if "samples" in phases:
            res["samples"] = _samples(common, cache)
            print("samples:", res["samples"], flush=True)
        if "validation" in phases:
            res["validation"] = _child("validation", **common)
            print("validation:", res["validation"], flush=True)
        if "test" in phases:
            res["test"] = {str(n): _child("test", threads=n, **common) for n in (1, 2)}
            print("test:", res["test"], flush=True)
        if "bad" in phases:
            res["bad"] = _bad(tree, args.root)
            print("bad:", res["bad"], flush=True)
        res["projection"] = project(res)
        print(json.dumps(res["projection"], indent=1))
    finally:
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)


def _list_len(tree: Path) -> dict[str, int]:
    return {n: len((tree / f"sep_{n}list.txt").read_text().split()) for n in ("train", "test")}


def _build(tree: Path, cache: Path, frames: list[Path], subset: int,
           env: dict[str, str]) -> dict[str, Any]:
    """The per-clip cost on a subset (1 decoder, 2 threads, 2 processes), then the whole tree."""
    out: dict[str, Any] = {}
    sub = tree.parent / "subset"
    names = (tree / "sep_trainlist.txt").read_text().split()[:subset]
    (sub / "sequences").mkdir(parents=True, exist_ok=True)
    for n in names:
        (sub / "sequences" / n).parent.mkdir(parents=True, exist_ok=True)
        if not (sub / "sequences" / n).exists():
            (sub / "sequences" / n).symlink_to(tree / "sequences" / n)
    (sub / "sep_testlist.txt").write_text("".join(n + "\n" for n in names))
    (sub / "sep_trainlist.txt").write_text("".join(n + "\n" for n in names[:2]))
    # One torch thread (the LR resampling) so "1 decoder" is one core's cost per clip.
    code = ("import sys, time, torch, trainable.store as s; from trainable.config import DataSpec\n"
            "torch.set_num_threads(1); s.PROCESS_MIN_CLIPS = {m}\n"
            "t = time.perf_counter(); d = s.open_split(DataSpec(sys.argv[1], 4, None, sys.argv[2]),"
            " 'test', workers={w}); print(time.perf_counter() - t)")
    for label, workers, min_clips in (("1 decoder", 1, 10**9), ("2 threads", 2, 10**9),
                                      ("2 processes", 2, 1)):
        evict(frames)
        c = tree.parent / f"cache-{workers}-{min_clips}"
        secs = float(subprocess.run(
            [sys.executable, "-c", code.format(m=min_clips, w=workers), str(sub), str(c)],
            check=True, capture_output=True, text=True).stdout.split()[-1])
        out[label] = {"clips": len(names), "seconds": secs, "ms_per_clip": 1e3 * secs / len(names)}
        shutil.rmtree(c, ignore_errors=True)
    shutil.rmtree(sub, ignore_errors=True)
    evict(frames)
    secs, rc, err = _timed([sys.executable, "-m", "trainable.data", "build", "--data", str(tree),
                            "-q"], env)
    if rc:
        raise SystemExit(f"build failed ({rc}): {err[-2000:]}")
    meta = {m.parent.name.split("-")[2]: json.loads(m.read_text())
            for m in cache.glob("*/meta.json")}
    clips = {s: sum(g["hr_shape"][0] for g in m["groups"]) for s, m in meta.items()}
    out["whole"] = {"seconds": secs, "clips": clips,
                    "split_seconds": {s: m["seconds"] for s, m in meta.items()},
                    "cache_bytes": _du(cache),
                    "bytes_per_clip": _du(cache) / max(1, sum(clips.values()))}
    secs2, rc, _ = _timed([sys.executable, "-m", "trainable.data", "build", "--data", str(tree),
                           "-q"], env)
    out["whole"]["again_s"] = secs2  # every split cached: the stamps and the maps only
    return out


def _samples(common: dict[str, Any], cache: Path) -> dict[str, Any]:
    npy = [p for p in _cache_files(cache) if "-train-" in p.parent.name]
    out: dict[str, Any] = {"train_cache_bytes": sum(p.stat().st_size for p in npy)}
    for advice in ("normal", "random"):
        for state in ("evicted", "in RAM"):
            if state == "in RAM":
                touch(npy)
            res = _child("samples", advice=advice, bursts=8, batches=32, seed=len(out),
                         evict=state == "evicted", **common)
            out[f"{advice}, {state}"] = res
    out["resident_after"] = resident(npy)
    return out


def _bad(tree: Path, root: Path) -> dict[str, Any]:
    """tune.run on the tree made bad three ways: the seconds to its exit 2, with a fresh cache."""
    out: dict[str, Any] = {}
    names = (tree / "sep_trainlist.txt").read_text().split()
    mid = tree / "sequences" / names[len(names) // 2]
    later = tree / "sequences" / names[3 * len(names) // 4]
    saved = {p: p.read_bytes() for p in (mid / "im3.png", later / "im5.png")}
    testlist = (tree / "sep_testlist.txt").read_bytes()

    def run(label: str) -> None:
        cache = root / f"bad-cache-{len(out)}"
        env = {**os.environ, "ESPCN_TUNE_CACHE": str(cache)}
        secs, rc, err = _timed([sys.executable, "-m", "tune.run", "--space", "smoke", "--data",
                                str(tree), "--storage", str(root / "bad-runs"), "--name",
                                f"bad{len(out)}"], env)
        out[label] = {"seconds": secs, "rc": rc,
                      "error": [ln for ln in err.splitlines() if ln.startswith(("error", "  "))][:4]}
        shutil.rmtree(cache, ignore_errors=True)

    try:
        (tree / "sep_testlist.txt").unlink()
        run("missing test list")
        (tree / "sep_testlist.txt").write_bytes(testlist)
        (mid / "im3.png").write_bytes(saved[mid / "im3.png"][: 60_000])  # truncated
        (later / "im5.png").write_bytes(os.urandom(200_000))  # garbage
        evict(frame_files(tree))
        run("truncated + garbage frame, PNGs evicted")
        run("truncated + garbage frame, PNGs in RAM")
    finally:
        (tree / "sep_testlist.txt").write_bytes(testlist)
        for path, data in saved.items():
            path.write_bytes(data)
        shutil.rmtree(root / "bad-runs", ignore_errors=True)
    return out


def project(res: dict[str, Any]) -> dict[str, Any]:
    """Linear in clips (the issue's 200 / 1,000 / 3,000-sequence runs found every cost linear):
    the measured per-clip costs times the full sets' clip counts."""
    out: dict[str, Any] = {}
    build, tree = res.get("build"), res.get("tree")
    if not build:
        return out
    one = build["1 decoder"]["ms_per_clip"] / 1e3  # seconds of one core per septuplet clip
    whole = build["whole"]
    n_clips = sum(whole["clips"].values())
    for name, full in FULL.items():
        share = full["frames"] / 7  # decoding and cache bytes scale with frames per clip
        train = full["train_list"] * (1 - 5 / 96)  # 5 of 96 folders held out for val
        clips = train + 200 + full["test"]
        out[name] = {
            "clips": round(clips),
            "cache_gb": clips * whole["bytes_per_clip"] * share / 1e9,
            "build_min_here": clips * whole["seconds"] / n_clips * share / 60,
            "build_min_16_cores_linear": clips * one * share / 16 / 60,
            "png_gb": (clips * (tree or {}).get("mean_frame_bytes", 233_000) * full["frames"] / 1e9),
        }
        out[name]["read_mb_s_16_cores"] = (out[name]["png_gb"] * 1e3
                                           / (out[name]["build_min_16_cores_linear"] * 60))
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        print(json.dumps(CHILDREN[sys.argv[2]](json.loads(sys.argv[3]))))
    else:
        main()
