"""Random training patches: one crop window and one flip/rotation per sample, shared by its frames.

All randomness comes from one seeded numpy generator whose state is part of the trainer's
checkpoint, so a resumed run draws exactly the patches an uninterrupted one would. The gather runs
where the frames live: on the GPU when the split was uploaded there, else on the memory-mapped
cache (zero copy, shared by every trial on the machine).
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trainable.errors import DataError

if TYPE_CHECKING:
    from trainable.store import SplitData

# Batches drawn ahead of the training step when sampling from the CPU cache.
_PREFETCH = 2
# Upload a split to the GPU only when it is small next to the card (the built-in set is ~0.3 GB).
_GPU_UPLOAD_FRACTION = 0.25


def as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Map a (read-only, memory-mapped) uint8 array as a tensor without copying it on the CPU."""
    with warnings.catch_warnings():
        # The cache is mapped read-only and nothing here writes to it.
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(array)
    return t if device.type == "cpu" else t.to(device, non_blocking=False)


class PatchSampler:
    def __init__(self, data: SplitData, *, frames: int, patch_size: int, seed: int,
                 device: torch.device) -> None:
        self.frames = frames
        self.patch = patch_size
        self.scale = data.scale
        self.device = device
        self._rng = np.random.Generator(np.random.PCG64(seed))
        storage = _storage_device(data, device)
        # (t, h, w) per group; the pixels themselves as flat arrays for one-index gathers: the
        # mapped numpy cache on the CPU, a tensor on the GPU.
        self._lr_shapes = [g.lr.shape[1:] for g in data.groups]
        if storage.type == "cpu":
            self._lr_flat = [g.lr.reshape(-1) for g in data.groups]
            self._hr_flat = [g.hr.reshape(-1) for g in data.groups]
        else:
            self._lr_flat = [as_tensor(g.lr, storage).reshape(-1) for g in data.groups]
            self._hr_flat = [as_tensor(g.hr, storage).reshape(-1) for g in data.groups]
        self._aranges: dict[int, Any] = {}
        self._centres = [np.asarray(g.centres, dtype=np.int64) for g in data.groups]
        for g in data.groups:
            h, w = g.lr.shape[-2:]
            if h < patch_size or w < patch_size:
                raise DataError(f"{data.source}: clip {g.names[0]!r} is {w}x{h} LR pixels, smaller "
                                f"than patch_size {patch_size}")
        counts = np.array([g.lr.shape[0] * len(g.centres) for g in data.groups], dtype=np.int64)
        if counts.sum() == 0:
            raise DataError(f"{data.source}: the {data.split} split has no training frames")
        self._bounds = np.cumsum(counts)
        self._offsets = np.arange(frames) - frames // 2
        self._storage = storage

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> LR ``(B, frames, p, p)`` and HR centre ``(B, 1, p*s, p*s)``, float in [0, 1]."""
        target = self._rng.integers(0, self._bounds[-1], size=batch_size)
        group = np.searchsorted(self._bounds, target, side="right")
        flips = self._rng.integers(0, 2, size=(batch_size, 3))  # vertical, horizontal, transpose
        crop_u = self._rng.random((batch_size, 2))
        on_cpu = self._storage.type == "cpu"
        lrs, hrs = [], []
        for gi in np.unique(group):
            sel = group == gi
            local = target[sel] - (self._bounds[gi - 1] if gi else 0)
            ncent = len(self._centres[gi])
            n_t, h, w = self._lr_shapes[gi]
            clip = local // ncent
            centre = self._centres[gi][local % ncent]
            y0 = (crop_u[sel, 0] * (h - self.patch + 1)).astype(np.int64)
            x0 = (crop_u[sel, 1] * (w - self.patch + 1)).astype(np.int64)
            frame = clip * n_t + centre  # index of the target frame in the flattened (n*t) axis
            times = clip[:, None] * n_t + np.clip(centre[:, None] + self._offsets, 0, n_t - 1)
            params = [times, frame, y0, x0, *flips[sel].T]
            if not on_cpu:  # a few hundred bytes to the device; the index grids are built there
                params = [torch.from_numpy(a).to(self._storage) for a in params]
            times, frame, y0, x0, fv, fh, tr = params
            first, second = _dihedral_offsets(self._arange(self.patch), y0, x0, fv, fh, tr, w)
            lr_idx = ((times * (h * w))[:, :, None, None] + first[:, None, :, None]
                      + second[:, None, None, :])
            big, sc = self.patch * self.scale, self.scale
            first, second = _dihedral_offsets(self._arange(big), y0 * sc, x0 * sc, fv, fh, tr, w * sc)
            hr_idx = (frame * (h * w * sc * sc))[:, None, None] + first[:, :, None] + second[:, None, :]
            # One flat gather per tensor: far cheaper than multi-dimensional fancy indexing.
            lrs.append(self._lr_flat[gi].take(lr_idx))
            hrs.append(self._hr_flat[gi].take(hr_idx)[:, None])
        if on_cpu:
            lrs, hrs = [torch.from_numpy(a) for a in lrs], [torch.from_numpy(a) for a in hrs]
        lr = torch.cat(lrs).to(self.device, non_blocking=True).float().div_(255.0)
        hr = torch.cat(hrs).to(self.device, non_blocking=True).float().div_(255.0)
        return lr, hr

    def batches(self, count: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``count`` batches, exactly as ``count`` calls of :meth:`sample` would give them.

        From the CPU cache they are drawn one or two ahead on a background thread (numpy and
        torch release the GIL), so sampling overlaps the training step instead of adding to it.
        Exactly ``count`` are drawn, so the RNG state after the last one is what a checkpoint at
        this point must hold.
        """
        if self._storage.type != "cpu" or count < 2:
            for _ in range(count):
                yield self.sample(batch_size)
            return
        q: queue.Queue = queue.Queue(maxsize=_PREFETCH)
        stop = threading.Event()

        def produce() -> None:
            try:
                for _ in range(count):
                    item = self.sample(batch_size)
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except BaseException as e:  # hand the error to the consumer
                q.put(e)

        worker = threading.Thread(target=produce, name="patch-prefetch", daemon=True)
        worker.start()
        try:
            for _ in range(count):
                item = q.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()

    def _arange(self, size: int):
        if size not in self._aranges:
            self._aranges[size] = (np.arange(size) if self._storage.type == "cpu"
                                   else torch.arange(size, device=self._storage))
        return self._aranges[size]

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]


def _dihedral_offsets(ar, y0, x0, flip_v, flip_h, transpose, width):
    """Flat-index parts ``(B, size)`` of a crop at (y0, x0) under one of the 8 flips/rotations:
    pixel (i, j) of sample b is ``first[b, i] + second[b, j]`` in a row-major frame of ``width``
    (numpy or torch alike). The same flags at LR and HR scale give pixel-aligned patches."""
    where = np.where if isinstance(y0, np.ndarray) else torch.where
    size = ar.shape[0]
    rows = (y0[:, None] + where(flip_v[:, None] != 0, size - 1 - ar, ar)) * width
    cols = x0[:, None] + where(flip_h[:, None] != 0, size - 1 - ar, ar)
    tr = transpose[:, None] != 0  # a transpose swaps which output axis walks rows
    return where(tr, cols, rows), where(tr, rows, cols)


def _storage_device(data: SplitData, device: torch.device) -> torch.device:
    if device.type != "cuda":
        return torch.device("cpu")
    nbytes = sum(g.hr.nbytes + g.lr.nbytes for g in data.groups)
    free, _ = torch.cuda.mem_get_info(device)
    return device if nbytes < _GPU_UPLOAD_FRACTION * free else torch.device("cpu")
