"""Decoded clips, cached once per machine as uint8 ``.npy`` files and memory-mapped.

Every trial of a search reads the same frames; decoding PNGs or video in each of them would cost
more than training a small ESPCN. :func:`open_split` decodes a split once into
``<cache_root>/<key>/`` (``g<i>_hr.npy``, ``g<i>_lr.npy``, ``meta.json``) and maps the arrays
read-only, so every process on the machine shares one copy in the page cache.

The key hashes everything that changes the arrays (format version, source kind, resolved paths,
list and every frame file's size and mtime, scale, LR tree, split), so a frame replaced after a
build is noticed and its split built afresh. A build goes into a temporary folder that is renamed
into place, under an ``flock`` so concurrent trials decode only once. It decodes on every core
(processes for a big frame-file split: their decoding is not bound by one interpreter's GIL),
each worker writing its clips straight into the mapped arrays; it goes on past bad frames and
ends with one list of them all (:class:`~trainable.errors.BadFrames`). A progress bar shows it
on a terminal, a log line every 30 s elsewhere.

The training split is mapped with ``MADV_RANDOM``: patches are drawn from random clips, and the
kernel's default read-around (up to megabytes a fault) made each sample read far more than its
few pages once the cache no longer fitted in memory (BENCHMARKS.md, "Vimeo90K at full scale").

A cache folder also keeps what is computed once from its frames and is the same for every run
(:func:`keep` and :func:`recall`: the bicubic baseline's scores).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import mmap
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainable.config import DataSpec
from trainable.errors import BadFrames, DataError
from trainable.progress import Progress
from trainable.sources import (
    SPLITS,
    ClipDecoder,
    ClipSpec,
    Source,
    check_split,
    default_workers,
    log_once,
    open_source,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process lock, builds may race
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# 2: Vimeo val held out by sequence folder, built-in split gap and 3 val targets;
# 3: LR frames mirrored at the border as MATLAB's imresize does (issue 20), not cut off.
FORMAT_VERSION = 3
_META = "meta.json"
# A frame-file split of at least this many clips is decoded by worker processes (each costs about
# a second to start); a smaller one, or a video source, by threads in this process.
PROCESS_MIN_CLIPS = 256
_CHUNK_CLIPS = 16  # clips a worker decodes per task: the progress bar's step
# Names of what `keep` keeps in a cache folder (built here from numbers, never from input).
_KEPT = re.compile(r"[a-z0-9][a-z0-9_.-]*")


@dataclass(frozen=True)
class ClipGroup:
    """Clips of one (t, H, W) shape: read-only uint8 Y memmaps and their valid target frames."""

    hr: np.ndarray  # (n, t, H, W)
    lr: np.ndarray  # (n, t, H // scale, W // scale)
    centres: tuple[int, ...]  # frame indices within a clip that are targets for this split
    names: tuple[str, ...]  # one id per clip, e.g. "00001/0266" or "bikes/0003"


@dataclass(frozen=True)
class SplitData:
    split: str
    scale: int
    groups: tuple[ClipGroup, ...]
    source: str  # human-readable description, for logs and reports
    folder: Path | None = None  # its cache folder (None: not from the cache)
    # Clips in the whole split when this is an even sample of it (`sampled`); 0: the whole split.
    sampled_from: int = 0

    @property
    def num_clips(self) -> int:
        return sum(g.hr.shape[0] for g in self.groups)

    @property
    def scope(self) -> str:
        """``"full"``, or ``"sampled N of M clips"``: shown beside every score of the split."""
        if not self.sampled_from:
            return "full"
        return f"sampled {self.num_clips} of {self.sampled_from} clips"

    @property
    def num_targets(self) -> int:
        return sum(g.hr.shape[0] * len(g.centres) for g in self.groups)

    @property
    def max_frames(self) -> int:
        """The largest ``frames`` window every clip can hold: the shortest clip length."""
        return min(int(g.hr.shape[1]) for g in self.groups)


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$ESPCN_TUNE_CACHE``, else ``~/.cache/espcn-tune``."""
    chosen = cache_dir or os.environ.get("ESPCN_TUNE_CACHE") or "~/.cache/espcn-tune"
    return Path(chosen).expanduser()


def open_split(spec: DataSpec, split: str, *, workers: int | None = None) -> SplitData:
    """The ``split`` of the frames ``spec`` names: decoded once into a memory-mapped uint8 cache,
    then mapped (zero copy; shared by every process on the machine). ``workers``: decoders for a
    build (default: every core this process may use)."""
    check_split(split)
    source = open_source(spec.data, scale=spec.scale, data_lr=spec.data_lr)
    # The description is long (~150 characters) and the same for every split: said once per
    # process, by the first open of the source, not by every build and caller (issue 20).
    log_once(log, f"data: {source.description}")
    final = _cache_folder(spec, source, split)
    if not (final / _META).is_file():
        with _locked(final.parent / f"{final.name}.lock"):
            if not (final / _META).is_file():  # another process may have built it meanwhile
                _build(source, split, spec.scale, final, workers or default_workers())
    return _load(final, split, spec.scale)


def check_splits(spec: DataSpec, splits: Sequence[str] = SPLITS, *, decode: bool = False,
                 workers: int | None = None) -> dict[str, int]:
    """Check every split in ``splits`` at once, and say what is wrong with all of them in one
    BadFrames (a missing list file, or any other trouble before the frames, as its DataError).

    Without ``decode``, a split already in the cache is taken as it is (its key holds every
    frame's stamp) and any other is planned: its list, folders and every frame's header
    (seconds, not the minutes a build takes). With ``decode`` every frame of the splits is
    decoded once, in parallel, with a progress bar; nothing is written. Returns the clips per
    split."""
    for split in splits:
        check_split(split)
    source = open_source(spec.data, scale=spec.scale, data_lr=spec.data_lr)
    log_once(log, f"data: {source.description}")
    # Every split's key first (a missing list file is refused in seconds), then the frames.
    folders = {split: _cache_folder(spec, source, split) for split in splits}
    clips: dict[str, list[ClipSpec]] = {}
    counts: dict[str, int] = {}
    problems: list[str] = []
    for split, final in folders.items():
        if not decode and (final / _META).is_file():
            counts[split] = _load(final, split, spec.scale).num_clips
            continue
        try:
            clips[split] = source.plan(split)
        except BadFrames as e:
            problems += e.problems
            continue
        counts[split] = len(clips[split])
    what = f"{' + '.join(splits)} of {source.description}"
    if problems:
        raise BadFrames(problems, what)
    if decode:
        unique = list({c.name: c for split in splits for c in clips.get(split, [])}.values())
        problems = _decode_all(source, unique, None, workers or default_workers(),
                               f"checking {len(unique)} clips")
        if problems:
            raise BadFrames(problems, what, _listing(spec, "check", problems))
    return counts


def recall(data: SplitData, name: str) -> dict[str, Any] | None:
    """What `keep` kept as ``name`` with ``data``'s cache; None where nothing (readable) is."""
    path = _kept_path(data, name)
    if path is None:
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not there yet, or unreadable: computed again (and rewritten)
    return value if isinstance(value, dict) else None


def keep(data: SplitData, name: str, value: dict[str, Any]) -> None:
    """Keep ``value`` with ``data``'s cache folder as ``<name>.json`` for every later run on the
    machine: for what depends only on the split's frames (the bicubic baseline's scores). Kept
    nowhere for a split outside the cache, or in a cache folder this process may not write."""
    path = _kept_path(data, name)
    if path is None:
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(value, fh)
        os.replace(tmp, path)  # whole or not at all: concurrent trials may race to write it
    except OSError as e:
        log.info("not keeping %s with the cache %s: %s", name, data.folder, e)


def _kept_path(data: SplitData, name: str) -> Path | None:
    if not _KEPT.fullmatch(name):
        raise ValueError(f"{name!r} is not a name for a file kept with a cache")
    return None if data.folder is None else data.folder / f"{name}.json"


def sampled(data: SplitData, max_clips: int) -> SplitData:
    """``max_clips`` clips of ``data``, evenly spread over each clip-shape group; ``data`` itself
    when it has no more (or 0 is given). Nothing is copied: a group's pick is at most two strided
    views of its maps (steps ``q + 1`` then ``q``, for ``n = q * k + r`` clips), so the clips lie
    evenly to within one."""
    total = data.num_clips
    if max_clips <= 0 or total <= max_clips:
        return data
    sizes = [g.hr.shape[0] for g in data.groups]
    share = [min(n, max_clips * n // total) for n in sizes]
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):  # what flooring left over
        extra = min(max_clips - sum(share), sizes[i] - share[i])
        share[i] += max(0, extra)
    groups = []
    for g, n, k in zip(data.groups, sizes, share, strict=True):
        if k == 0:
            continue
        q, r = divmod(n, k)
        cut = r * (q + 1)  # the first r picks step q + 1, the other k - r step q
        for part in (slice(0, cut, q + 1), slice(cut, n, q)):
            if part.start < part.stop:
                groups.append(dataclasses.replace(g, hr=g.hr[part], lr=g.lr[part],
                                                  names=g.names[part]))
    return dataclasses.replace(data, groups=tuple(groups), sampled_from=total)


def _cache_folder(spec: DataSpec, source: Source, split: str) -> Path:
    root = cache_root(spec.cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the cache folder {root}: {e}; set cache_dir or "
                        "$ESPCN_TUNE_CACHE to a writable folder") from None
    return root / _cache_key(source, split, spec.scale, spec.data_lr)


def _cache_key(source: Source, split: str, scale: int, data_lr: str | None) -> str:
    blob = json.dumps({"version": FORMAT_VERSION, "kind": source.kind, "split": split,
                       "scale": scale, "data_lr": data_lr,
                       "fingerprint": source.fingerprint(split)}, sort_keys=True)
    return f"{source.kind}-{split}-x{scale}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed
        yield


def _group_plan(clips: list[ClipSpec]) -> dict[tuple[int, int, int], list[int]]:
    """Clip indices by (t, H, W), in order of first appearance."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, c in enumerate(clips):
        groups.setdefault((c.frames, c.height, c.width), []).append(i)
    return groups


def _build(source: Source, split: str, scale: int, final: Path, workers: int) -> None:
    start = time.perf_counter()
    log.info("Decoding the %s split into the cache %s", split, final)
    clips = source.plan(split)  # BadFrames: every frame whose header is wrong, in one list
    if not clips:
        raise DataError(f"the {split} split of {source.description} has no clips")
    groups = _group_plan(clips)
    need = sum(len(ix) * t * h * w * (1 + 1 / scale**2) for (t, h, w), ix in groups.items())
    free = shutil.disk_usage(final.parent).free
    if need > free:
        raise DataError(f"the {split} cache of {source.description} needs {need / 1e9:.1f} GB "
                        f"in {final.parent}, which has {free / 1e9:.1f} GB free; set cache_dir "
                        "or $ESPCN_TUNE_CACHE to a bigger disk")
    if final.exists():  # a half-removed leftover (meta.json is missing): start afresh
        shutil.rmtree(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        meta = _write_arrays(source, split, scale, clips, groups, tmp, workers)
        meta["seconds"] = round(time.perf_counter() - start, 3)
        # meta.json last: its presence is what marks a cache folder complete.
        (tmp / _META).write_text(json.dumps(meta, indent=1))
        tmp.chmod(0o755)  # mkdtemp makes it private; other users' trials may map it too
        os.replace(tmp, final)
    except BadFrames as e:
        shutil.rmtree(tmp, ignore_errors=True)
        listing = _write_listing(final.parent / f"bad-frames-{final.name}.txt", e.problems)
        raise BadFrames(e.problems, f"the {split} split of {source.description}",
                        listing) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("Cached %d %s clips (%d groups, %.2f GB) in %.1f s", len(clips), split, len(groups),
             need / 1e9, time.perf_counter() - start)


def _write_arrays(source: Source, split: str, scale: int, clips: list[ClipSpec],
                  groups: dict[tuple[int, int, int], list[int]], tmp: Path,
                  workers: int) -> dict[str, Any]:
    slots: list[tuple[str, str, int]] = [("", "", 0)] * len(clips)  # clip -> (hr, lr file, row)
    metas: list[dict[str, Any]] = []
    files: list[Path] = []
    for g, ((t, h, w), ix) in enumerate(groups.items()):
        hr_file, lr_file = f"g{g}_hr.npy", f"g{g}_lr.npy"
        for row, i in enumerate(ix):
            slots[i] = (str(tmp / hr_file), str(tmp / lr_file), row)
        shapes = {hr_file: (len(ix), t, h, w), lr_file: (len(ix), t, h // scale, w // scale)}
        for name, shape in shapes.items():
            # The header and the file's size only: the pixels go straight to disk from the
            # decoders, so a 64k-clip Vimeo tree never has to fit in memory.
            np.lib.format.open_memmap(tmp / name, mode="w+", dtype=np.uint8, shape=shape)
            files.append(tmp / name)
        metas.append({"hr": hr_file, "lr": lr_file, "hr_shape": list(shapes[hr_file]),
                      "lr_shape": list(shapes[lr_file]),
                      "centres": list(source.centres(split, t)),
                      "names": [clips[i].name for i in ix]})
    problems = _decode_all(source, clips, slots, workers, f"decoding {split}")
    if problems:
        raise BadFrames(problems)
    for path in files:
        with open(path, "rb+") as fh:  # every worker's pages on disk before meta.json
            os.fsync(fh.fileno())
    return {"version": FORMAT_VERSION, "kind": source.kind, "split": split, "scale": scale,
            "source": source.description, "groups": metas}


# --- decoding on every core ------------------------------------------------------------------
# What one decoding process holds: its source (sent once, by the pool's initializer) and the maps
# it writes into.
_worker_source: Any = None


def _decode_all(source: Source, clips: Sequence[ClipSpec],
                slots: Sequence[tuple[str, str, int]] | None, workers: int, what: str
                ) -> list[str]:
    """Decode ``clips`` and write clip ``i`` into row ``slots[i][2]`` of the arrays
    ``slots[i][:2]`` (None: decode only, to check). Goes on past bad frames; returns them all, in
    clip order. A frame-file source's big split is spread over ``workers`` processes, each
    writing its clips straight into the mapped files (no copy back); anything else decodes on
    threads here."""
    with Progress(len(clips), what, unit="clip") as bar:
        if not isinstance(source, ClipDecoder):
            return _decode_in_order(source, clips, slots, bar)
        chunks = [range(i, min(i + _CHUNK_CLIPS, len(clips)))
                  for i in range(0, len(clips), _CHUNK_CLIPS)]
        found: dict[int, list[str]] = {}
        if workers > 1 and len(clips) >= PROCESS_MIN_CLIPS and _processes_can_start():
            pool = ProcessPoolExecutor(workers, mp_context=_process_context(),
                                       initializer=_start_worker, initargs=(source,))
            try:
                _run_chunks(pool, None, clips, slots, chunks, found, workers, bar)
            except BrokenProcessPool as e:  # a worker died (killed, out of memory): threads
                log.warning("a decoding process ended abruptly (%s); decoding the %d clips "
                            "left on threads", e, sum(len(c) for k, c in enumerate(chunks)
                                                     if k not in found))
        if len(found) < len(chunks):
            _run_chunks(ThreadPoolExecutor(max(1, workers)), source, clips, slots, chunks, found,
                        workers, bar)
        return [p for k in sorted(found) for p in found[k]]


def _run_chunks(executor: Executor, source: Source | None, clips: Sequence[ClipSpec],
                slots: Sequence[tuple[str, str, int]] | None, chunks: Sequence[range],
                found: dict[int, list[str]], workers: int, bar: Progress) -> None:
    """Every chunk not in ``found`` through ``executor`` (``source``: a thread's), its bad frames
    into ``found`` as it ends."""
    with executor:
        pending: dict[Future[list[str]], int] = {}
        waiting = ((k, c) for k, c in enumerate(chunks) if k not in found)
        try:
            while True:
                # At most 4 chunks a worker in flight: memory stays bounded, the cores busy.
                for k, chunk in waiting:
                    jobs = [(clips[i], None if slots is None else slots[i]) for i in chunk]
                    pending[executor.submit(_decode_chunk, jobs, source)] = k
                    if len(pending) >= 4 * max(1, workers):
                        break
                if not pending:
                    return
                done, _ = wait(pending, return_when="FIRST_COMPLETED")
                for future in done:
                    k = pending.pop(future)
                    found[k] = future.result()
                    bar.update(len(chunks[k]))
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _decode_in_order(source: Source, clips: Sequence[ClipSpec],
                     slots: Sequence[tuple[str, str, int]] | None, bar: Progress) -> list[str]:
    """A source without ``decode`` (the built-in videos): its own ``read``, in order, here."""
    maps: dict[str, np.ndarray] = {}
    for i, (hr, lr) in enumerate(source.read(clips)):
        if slots is not None:
            _write_clip(maps, clips[i], slots[i], hr, lr)
        bar.update(1)
    return []


def _processes_can_start() -> bool:
    """Whether worker processes can start here: multiprocessing runs the main script again in
    each (by module name, or else by path), which a script read from stdin does not have."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None):
        return True
    path = getattr(main, "__file__", None)
    return path is None or os.path.isfile(path)


def _process_context() -> Any:
    """forkserver where there is one: each worker forks from a clean process that has imported
    the decoders once (not from this one, which may hold threads: Ray's, torch's)."""
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" not in methods:  # pragma: no cover - not Linux
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["trainable.sources"])
    return ctx


def _start_worker(source: Source) -> None:
    """A decoding process's start: its source, and one torch thread (the LR resampling; the
    processes themselves fill the cores)."""
    global _worker_source
    _worker_source = source
    import torch

    torch.set_num_threads(1)


def _decode_chunk(jobs: Sequence[tuple[ClipSpec, tuple[str, str, int] | None]],
                  source: Source | None = None) -> list[str]:
    """Decode (and write) a few clips in a worker (``source``: a thread's; a process has its
    own from `_start_worker`); the bad frames found, as lines."""
    decoder: Any = source if source is not None else _worker_source  # a ClipDecoder
    problems: list[str] = []
    maps: dict[str, np.ndarray] = {}
    for clip, slot in jobs:
        try:
            hr, lr = decoder.decode(clip)
        except BadFrames as e:
            problems += e.problems
            continue
        except DataError as e:
            problems.append(str(e))
            continue
        if slot is not None:
            _write_clip(maps, clip, slot, hr, lr)
    return problems


def _write_clip(maps: dict[str, np.ndarray], clip: ClipSpec, slot: tuple[str, str, int],
                hr: np.ndarray, lr: np.ndarray) -> None:
    hr_file, lr_file, row = slot
    for path in (hr_file, lr_file):
        if path not in maps:
            maps[path] = np.load(path, mmap_mode="r+")
    hr_map, lr_map = maps[hr_file], maps[lr_file]
    if hr.shape != hr_map.shape[1:] or lr.shape != lr_map.shape[1:]:
        raise DataError(f"clip {clip.name} decoded to HR {hr.shape} / LR {lr.shape}, "
                        f"expected {hr_map.shape[1:]} / {lr_map.shape[1:]}")
    hr_map[row], lr_map[row] = hr, lr


def _listing(spec: DataSpec, what: str, problems: Sequence[str]) -> str | None:
    return _write_listing(cache_root(spec.cache_dir) / f"bad-frames-{what}.txt", problems)


def _write_listing(path: Path, problems: Sequence[str]) -> str | None:
    """The whole list of bad frames in a file, when it is longer than a message shows."""
    if len(problems) <= BadFrames.SHOWN:
        return None
    try:
        path.write_text("".join(p + "\n" for p in problems))
    except OSError:
        return None
    return str(path)


def _load(folder: Path, split: str, scale: int) -> SplitData:
    try:
        meta = json.loads((folder / _META).read_text())
        groups = []
        for g in meta["groups"]:
            hr = np.load(folder / g["hr"], mmap_mode="r")
            lr = np.load(folder / g["lr"], mmap_mode="r")
            if list(hr.shape) != g["hr_shape"] or list(lr.shape) != g["lr_shape"]:
                raise ValueError(f"{g['hr']} does not match {_META}")
            if split == "train":
                for a in (hr, lr):
                    advise(a, "random")
            groups.append(ClipGroup(hr, lr, tuple(g["centres"]), tuple(g["names"])))
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"the cache folder {folder} is damaged ({e}); delete it to rebuild") from None
    return SplitData(split, scale, tuple(groups), meta["source"], folder=folder)


def advise(array: np.ndarray, how: str) -> bool:
    """``madvise`` the pages that back a memory-mapped array: ``"random"`` (each fault reads its
    own page, not the kernel's read-around) or ``"normal"``. False where the platform has no
    madvise or the array is not a map."""
    base = getattr(array, "_mmap", None)
    flag = {"random": getattr(mmap, "MADV_RANDOM", None),
            "normal": getattr(mmap, "MADV_NORMAL", None)}[how]
    if base is None or flag is None or not hasattr(base, "madvise"):
        return False
    base.madvise(flag)
    return True
