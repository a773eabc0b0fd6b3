"""Decoded clips, cached once per machine as uint8 ``.npy`` files and memory-mapped.

Every trial of a search reads the same frames; decoding PNGs or video in each of them would cost
more than training a small ESPCN. :func:`open_split` decodes a split once into
``<cache_root>/<key>/`` (``g<i>_hr.npy``, ``g<i>_lr.npy``, ``meta.json``) and maps the arrays
read-only, so every process on the machine shares one copy in the page cache.

The key hashes everything that changes the arrays (format version, source kind, resolved paths,
list or frame files' sizes and mtimes, scale, LR tree, split). A build goes into a temporary
folder that is renamed into place, under an ``flock`` so concurrent trials decode only once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainable.config import DataSpec
from trainable.errors import DataError
from trainable.sources import ClipSpec, Source, check_split, log_once, open_source

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process lock, builds may race
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# 2: Vimeo val held out by sequence folder, built-in split gap and 3 val targets;
# 3: LR frames mirrored at the border as MATLAB's imresize does (issue 20), not cut off.
FORMAT_VERSION = 3
_META = "meta.json"


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

    @property
    def num_clips(self) -> int:
        return sum(g.hr.shape[0] for g in self.groups)

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


def open_split(spec: DataSpec, split: str) -> SplitData:
    """The ``split`` of the frames ``spec`` names: decoded once into a memory-mapped uint8 cache,
    then mapped (zero copy; shared by every process on the machine)."""
    check_split(split)
    scale, data_lr = spec.scale, spec.data_lr
    source = open_source(spec.data, scale=scale, data_lr=data_lr)
    # The description is long (~150 characters) and the same for every split: said once per
    # process, by the first open of the source, not by every build and caller (issue 20).
    log_once(log, f"data: {source.description}")
    key = _cache_key(source, split, scale, data_lr)
    root = cache_root(spec.cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the cache folder {root}: {e}; set cache_dir or "
                        "$ESPCN_TUNE_CACHE to a writable folder") from None
    final = root / key
    if not (final / _META).is_file():
        with _locked(root / f"{key}.lock"):
            if not (final / _META).is_file():  # another process may have built it meanwhile
                _build(source, split, scale, final)
    return _load(final, split, scale)


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


def _build(source: Source, split: str, scale: int, final: Path) -> None:
    start = time.perf_counter()
    log.info("Decoding the %s split into the cache %s", split, final)
    clips = source.plan(split)
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
        meta = _write_arrays(source, split, scale, clips, groups, tmp)
        meta["seconds"] = round(time.perf_counter() - start, 3)
        # meta.json last: its presence is what marks a cache folder complete.
        (tmp / _META).write_text(json.dumps(meta, indent=1))
        tmp.chmod(0o755)  # mkdtemp makes it private; other users' trials may map it too
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("Cached %d %s clips (%d groups, %.2f GB) in %.1f s", len(clips), split, len(groups),
             need / 1e9, time.perf_counter() - start)


def _write_arrays(source: Source, split: str, scale: int, clips: list[ClipSpec],
                  groups: dict[tuple[int, int, int], list[int]], tmp: Path) -> dict[str, Any]:
    slots: dict[int, tuple[int, int]] = {}  # clip index -> (group, row)
    hrs, lrs, metas = [], [], []
    for g, ((t, h, w), ix) in enumerate(groups.items()):
        slots.update({i: (g, row) for row, i in enumerate(ix)})
        # open_memmap writes straight to disk: a 64k-clip Vimeo tree never has to fit in memory.
        hrs.append(np.lib.format.open_memmap(tmp / f"g{g}_hr.npy", mode="w+", dtype=np.uint8,
                                             shape=(len(ix), t, h, w)))
        lrs.append(np.lib.format.open_memmap(tmp / f"g{g}_lr.npy", mode="w+", dtype=np.uint8,
                                             shape=(len(ix), t, h // scale, w // scale)))
        metas.append({"hr": f"g{g}_hr.npy", "lr": f"g{g}_lr.npy",
                      "hr_shape": list(hrs[-1].shape), "lr_shape": list(lrs[-1].shape),
                      "centres": list(source.centres(split, t)),
                      "names": [clips[i].name for i in ix]})
    last_log = time.perf_counter()
    for i, (hr, lr) in enumerate(source.read(clips)):
        g, row = slots[i]
        if hr.shape != hrs[g].shape[1:] or lr.shape != lrs[g].shape[1:]:
            raise DataError(f"clip {clips[i].name} decoded to HR {hr.shape} / LR {lr.shape}, "
                            f"expected {hrs[g].shape[1:]} / {lrs[g].shape[1:]}")
        hrs[g][row], lrs[g][row] = hr, lr
        if time.perf_counter() - last_log > 30:  # big trees take a while: show progress
            last_log = time.perf_counter()
            log.info("  %d / %d clips decoded", i + 1, len(clips))
    for a in hrs + lrs:
        a.flush()
    return {"version": FORMAT_VERSION, "kind": source.kind, "split": split, "scale": scale,
            "source": source.description, "groups": metas}


def _load(folder: Path, split: str, scale: int) -> SplitData:
    try:
        meta = json.loads((folder / _META).read_text())
        groups = []
        for g in meta["groups"]:
            hr = np.load(folder / g["hr"], mmap_mode="r")
            lr = np.load(folder / g["lr"], mmap_mode="r")
            if list(hr.shape) != g["hr_shape"] or list(lr.shape) != g["lr_shape"]:
                raise ValueError(f"{g['hr']} does not match {_META}")
            groups.append(ClipGroup(hr, lr, tuple(g["centres"]), tuple(g["names"])))
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"the cache folder {folder} is damaged ({e}); delete it to rebuild") from None
    return SplitData(split, scale, tuple(groups), meta["source"])
