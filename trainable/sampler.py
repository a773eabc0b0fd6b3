"""Random training patches: one crop window and one flip/rotation per sample, shared by its frames.

All randomness comes from one seeded numpy generator whose state is part of the trainer's
checkpoint, so a resumed run draws exactly the patches an uninterrupted one would. The gather runs
where the frames live: on the GPU when the split was uploaded there, else on the memory-mapped
cache (zero copy, shared by every trial on the machine).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trainable.errors import DataError

if TYPE_CHECKING:
    from trainable.store import SplitData

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
        self._lr = [as_tensor(g.lr, storage) for g in data.groups]
        self._hr = [as_tensor(g.hr, storage) for g in data.groups]
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
        offsets = torch.arange(frames) - frames // 2
        self._offsets = offsets.to(storage)
        self._storage = storage

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> LR ``(B, frames, p, p)`` and HR centre ``(B, 1, p*s, p*s)``, float in [0, 1]."""
        target = self._rng.integers(0, self._bounds[-1], size=batch_size)
        group = np.searchsorted(self._bounds, target, side="right")
        flips = self._rng.integers(0, 2, size=(batch_size, 3))  # vertical, horizontal, transpose
        crop_u = self._rng.random((batch_size, 2))
        lrs, hrs = [], []
        for gi in np.unique(group):
            sel = group == gi
            local = target[sel] - (self._bounds[gi - 1] if gi else 0)
            ncent = len(self._centres[gi])
            clip = local // ncent
            centre = self._centres[gi][local % ncent]
            lr_all, hr_all = self._lr[gi], self._hr[gi]
            t_len, h, w = lr_all.shape[1:]
            y0 = (crop_u[sel, 0] * (h - self.patch + 1)).astype(np.int64)
            x0 = (crop_u[sel, 1] * (w - self.patch + 1)).astype(np.int64)
            params = torch.from_numpy(np.stack([clip, centre, y0, x0, *flips[sel].T], axis=1))
            clip_t, centre_t, y0_t, x0_t, fv, fh, tr = params.to(self._storage).unbind(1)
            times = (centre_t[:, None] + self._offsets).clamp_(0, t_len - 1)
            r, c = _dihedral_index(self.patch, y0_t, x0_t, fv, fh, tr)
            lrs.append(lr_all[clip_t[:, None, None, None], times[:, :, None, None],
                              r[:, None], c[:, None]])
            big = self.patch * self.scale
            rh, ch = _dihedral_index(big, y0_t * self.scale, x0_t * self.scale, fv, fh, tr)
            hrs.append(hr_all[clip_t[:, None, None], centre_t[:, None, None], rh, ch][:, None])
        lr = torch.cat(lrs).to(self.device, non_blocking=True).float().div_(255.0)
        hr = torch.cat(hrs).to(self.device, non_blocking=True).float().div_(255.0)
        return lr, hr

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]


def _dihedral_index(size: int, y0: torch.Tensor, x0: torch.Tensor, flip_v: torch.Tensor,
                    flip_h: torch.Tensor, transpose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row/column gather indices ``(B, size, size)`` for a crop at (y0, x0) under one of the 8
    flips/rotations. The same flags at LR and HR scale give pixel-aligned LR/HR patches."""
    ar = torch.arange(size, device=y0.device)
    ii = ar[None, :, None].expand(len(y0), size, size)
    jj = ar[None, None, :].expand(len(y0), size, size)
    tr = transpose.bool()[:, None, None]
    a = torch.where(tr, jj, ii)
    b = torch.where(tr, ii, jj)
    a = torch.where(flip_v.bool()[:, None, None], size - 1 - a, a)
    b = torch.where(flip_h.bool()[:, None, None], size - 1 - b, b)
    return y0[:, None, None] + a, x0[:, None, None] + b


def _storage_device(data: SplitData, device: torch.device) -> torch.device:
    if device.type != "cuda":
        return torch.device("cpu")
    nbytes = sum(g.hr.nbytes + g.lr.nbytes for g in data.groups)
    free, _ = torch.cuda.mem_get_info(device)
    return device if nbytes < _GPU_UPLOAD_FRACTION * free else torch.device("cpu")
