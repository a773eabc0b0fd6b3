"""Random training patches: one crop window and one flip/rotation per sample, shared by its frames.

**One patch stream.** A run's patches are a function of its seed alone: the random numbers of a
sample (which target frame, which flips, where the crop sits) come in chunks of batches, chunk
``c`` from a ``torch.Generator`` seeded ``hash(seed, c)`` on the device the frames are sampled
from. Which patches a batch gets depends only on the seed and how many batches came before it,
so the checkpoint holds just those two numbers, a resumed run draws what an uninterrupted one
does, and every way of gathering the patches draws the same ones:

- the host path: from the memory-mapped cache (zero copy, shared by every trial on the machine)
  with numpy, one or two batches ahead on a background thread;
- the device path: on the GPU, when the split is small enough to upload, every clip-shape group
  in one device buffer, with no host sync and no host-to-device copy. The draw is about 110
  small kernels whatever its size, and on an H100 a training step is bound by launching kernels
  (BENCHMARKS.md, "GPU": the draw was ~40% of each step), so a whole chunk is gathered at once
  and each batch is a slice of it;
- a member of a fused group (`trainable.fused_draw`), whose numbers are its solo stream's.

On one kind of device the three give the same patches bit for bit (tested on the CPU), so a
fused trial is reproduced by a solo run of its config. The generator is the sampling device's:
a CUDA generator draws other numbers than the CPU's for the same seed, so a run on a card and a
run on the CPU draw different patches. A checkpoint of the numpy generator that came before
(or a run resumed from the CPU onto a card's device path) continues deterministically but
reseeded: other patches than the uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import warnings
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from numpy.typing import ArrayLike

from trainable.errors import DataError

if TYPE_CHECKING:
    from trainable.store import SplitData

log = logging.getLogger(__name__)

# The patch geometry helpers work on numpy arrays (the CPU path) and torch tensors alike.
_Array = TypeVar("_Array", np.ndarray, torch.Tensor)

# Batches drawn ahead of the training step when sampling from the CPU cache.
_PREFETCH = 2
# Upload a split to the GPU only when it is small next to the card (the built-in set is ~0.3 GB).
_GPU_UPLOAD_FRACTION = 0.25
# "auto": the torch gather when the split lives on the GPU, numpy otherwise. "torch" runs the
# device path on a CPU (the CUDA-graph code needs its gather: its tests and bench/step_ops.py).
_GATHER = "auto"
# HR pixels per device chunk (2**23: 512 samples of 128x128): the chunk's int64 gather indices
# then take 64 MiB for a moment, and a batch of 16 costs 1/32 of a draw.
_CHUNK_HR_PIXELS = 2**23


def as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Map a (read-only, memory-mapped) uint8 array as a tensor without copying it on the CPU."""
    with warnings.catch_warnings():
        # The cache is mapped read-only and nothing here writes to it.
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(array)
    return t if device.type == "cpu" else t.to(device, non_blocking=False)


class PatchSampler:
    def __init__(self, data: SplitData, *, frames: int, patch_size: int, seed: int,
                 device: torch.device, gather: str | None = None, loss_border: int = 0) -> None:
        self.frames = frames
        self.patch = patch_size
        # With a border, each batch also carries the loss mask (see `_loss_mask`).
        self.border = loss_border
        self.scale = data.scale
        self.device = device
        self._seed = seed
        storage = _storage_device(data, device)
        self._storage = storage
        # (t, h, w) per group; the pixels themselves as flat arrays for one-index gathers.
        self._lr_shapes = [g.lr.shape[1:] for g in data.groups]
        self._aranges: dict[int, np.ndarray] = {}
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
        self._device_gather = (_DeviceGather(data, counts, frames, patch_size, seed, storage,
                                             loss_border)
                               if storage.type != "cpu" or (gather or _GATHER) == "torch" else None)
        # The stream's position: batches drawn so far, and the chunk in hand.
        self._drawn = 0
        self._chunk: tuple[int, int, tuple[Any, ...]] | None = None  # (batch, index, data)
        if self._device_gather is None:
            self._generator = torch.Generator()  # the host path samples from the CPU
            self._total = int(counts.sum())
            self._lr_flat = [g.lr.reshape(-1) for g in data.groups]
            self._hr_flat = [g.hr.reshape(-1) for g in data.groups]

    @property
    def gathers_on_device(self) -> bool:
        """True when batches are gathered on a GPU (their cost is GPU time, not host time)."""
        return self._device_gather is not None and self._storage.type != "cpu"

    def device_gather(self) -> _DeviceGather:
        """The device path's gather (trainable.graphed draws its chunks through it); a
        DataError on the CPU path, which cannot be captured in a CUDA graph."""
        if self._device_gather is None:
            raise DataError("the training split is sampled on the CPU (it is too large to upload "
                            "to the card): only the device gather can run in a CUDA graph")
        return self._device_gather

    def device_position(self) -> tuple[int, int]:
        """(seed, batches drawn) of the stream: what its checkpoint holds."""
        return self._seed, self._drawn

    def advance(self, batches: int) -> None:
        """Count ``batches`` of this stream drawn elsewhere (by trainable.graphed's static copy
        of the device path), so that the position, and the checkpoint, follow."""
        self._drawn += batches
        self._chunk = None

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """-> LR ``(B, frames, p, p)`` and HR centre ``(B, 1, p*s, p*s)``, float in [0, 1]; with a
        ``loss_border``, also the HR loss mask ``(B, 1, p*s, p*s)`` (1 where the loss counts)."""
        if self._device_gather is not None:
            gather = self._device_gather
            lr_u8, hr_u8, *mask_u8 = self._from_chunk(
                batch_size, lambda n: gather.sample(n), lambda t, a, b: t[a:b])
            out = (lr_u8.to(self.device).float().div_(255.0),
                   hr_u8.to(self.device).float().div_(255.0))
            return out + tuple(self._hr_mask(m.to(self.device)) for m in mask_u8)
        target, flips, crop_u = self._from_chunk(batch_size, self._host_numbers,
                                                 lambda t, a, b: t[..., a:b])
        flips, crop_u = flips.T, crop_u.T  # (B, 3): vertical, horizontal, transpose; (B, 2)
        group = np.searchsorted(self._bounds, target, side="right")
        lr_u8 = np.empty((batch_size, self.frames, self.patch, self.patch), dtype=np.uint8)
        big = self.patch * self.scale
        hr_u8 = np.empty((batch_size, 1, big, big), dtype=np.uint8)
        mask_b = np.empty((batch_size, self.patch, self.patch), dtype=bool)
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
            fv, fh, tr = flips[sel].T
            first, second = _dihedral_offsets(self._arange(self.patch), y0, x0, fv, fh, tr, w)
            lr_idx = ((times * (h * w))[:, :, None, None] + first[:, None, :, None]
                      + second[:, None, None, :])
            sc = self.scale
            first, second = _dihedral_offsets(self._arange(big), y0 * sc, x0 * sc, fv, fh, tr, w * sc)
            hr_idx = (frame * (h * w * sc * sc))[:, None, None] + first[:, :, None] + second[:, None, :]
            # One flat gather per tensor (far cheaper than multi-dimensional fancy indexing),
            # each sample in its place in the draw: a batch mixing groups keeps the stream's order.
            lr_u8[sel] = self._lr_flat[gi].take(lr_idx)
            hr_u8[sel, 0] = self._hr_flat[gi].take(hr_idx)
            if self.border:
                mask_b[sel] = _loss_mask(self._arange(self.patch), y0, x0, h, w, self.border,
                                         fv, fh, tr)
        lr = torch.from_numpy(lr_u8).to(self.device, non_blocking=True).float().div_(255.0)
        hr = torch.from_numpy(hr_u8).to(self.device, non_blocking=True).float().div_(255.0)
        if not self.border:
            return lr, hr
        mask = torch.from_numpy(mask_b).to(self.device, non_blocking=True)
        return lr, hr, self._hr_mask(mask)

    def chunk_batches(self, batch_size: int) -> int:
        """Batches per device chunk at ``batch_size``."""
        return chunk_batches(self.patch, self.scale, batch_size)

    def _from_chunk(self, batch_size: int, draw: Callable[[int], tuple[Any, ...]],
                    cut: Callable[[Any, int, int], Any]) -> list[Any]:
        """The next batch's part of the chunk in hand, drawing the chunk (``draw(samples)``,
        its generator seeded for it) when the batch starts a new one; ``cut(part, a, b)`` takes
        samples a to b of each of the chunk's parts."""
        per = self.chunk_batches(batch_size)
        index, at = divmod(self._drawn, per)
        if self._chunk is None or self._chunk[:2] != (batch_size, index):
            gen = self._generator if self._device_gather is None else self._device_gather.generator
            gen.manual_seed(_chunk_seed(self._seed, index))
            self._chunk = (batch_size, index, draw(per * batch_size))
        self._drawn += 1
        return [cut(t, at * batch_size, (at + 1) * batch_size) for t in self._chunk[2]]

    def _host_numbers(self, samples: int) -> tuple[np.ndarray, ...]:
        """The host path's chunk: the numbers the device path's draw takes from its generator,
        in the same calls and order (target (n,), flips (3, n), crop (2, n))."""
        return tuple(t.numpy() for t in draw_numbers(self._generator, self._total, samples))

    def _hr_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """LR ``(B, p, p)`` bool -> HR ``(B, 1, p*s, p*s)`` float."""
        sc = self.scale
        return mask.repeat_interleave(sc, 1).repeat_interleave(sc, 2)[:, None].float()

    def batches(self, count: int, batch_size: int
                ) -> Generator[tuple[torch.Tensor, ...], None, None]:
        """``count`` batches, exactly as ``count`` calls of :meth:`sample` would give them.

        From the CPU cache they are drawn one or two ahead on a background thread (numpy and
        torch release the GIL), so sampling overlaps the training step instead of adding to it.
        Exactly ``count`` are drawn, so the RNG state after the last one is what a checkpoint at
        this point must hold.
        """
        if self._device_gather is not None or count < 2:
            for _ in range(count):
                yield self.sample(batch_size)
            return
        q: queue.Queue[tuple[torch.Tensor, ...] | BaseException] = queue.Queue(maxsize=_PREFETCH)
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

    def _arange(self, size: int) -> np.ndarray:
        if size not in self._aranges:
            self._aranges[size] = np.arange(size)
        return self._aranges[size]

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "torch-chunks", "seed": self._seed, "drawn": self._drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # The numpy generator's checkpoints ("numpy") and the single torch generator's ("torch")
        # came before the chunks: they are reseeded (`chunk_position`).
        self._seed, self._drawn = chunk_position(state)
        self._chunk = None


class _DeviceGather:
    """Every clip-shape group in one flat uint8 buffer per resolution, on ``storage``; per-group
    geometry in small index tables, so a batch mixing groups is one gather per tensor."""

    def __init__(self, data: SplitData, counts: np.ndarray, frames: int, patch: int, seed: int,
                 storage: torch.device, border: int = 0) -> None:
        self.patch, self.scale, self.border = patch, data.scale, border
        self.generator = torch.Generator(device=storage)  # seeded per chunk by the PatchSampler
        self.generator.manual_seed(seed)
        self.lr = _one_buffer([g.lr for g in data.groups], storage)
        self.hr = _one_buffer([g.hr for g in data.groups], storage)

        def table(values: ArrayLike) -> torch.Tensor:
            return torch.tensor(np.asarray(values, dtype=np.int64), device=storage)

        self.total = int(counts.sum())
        bounds = np.cumsum(counts)
        self.bounds = table(bounds)
        self.centres = table([c for g in data.groups for c in g.centres])
        self.offsets = table(np.arange(frames) - frames // 2)
        # Every per-group number a sample needs, one row each: one lookup serves them all (each
        # operator call is a kernel launch on a GPU, where launches bound the step).
        sc = data.scale
        shapes = np.array([g.lr.shape for g in data.groups], dtype=np.int64)  # (n, t, h, w)
        n_t, h, w = shapes[:, 1], shapes[:, 2], shapes[:, 3]
        n_centres = np.array([len(g.centres) for g in data.groups], dtype=np.int64)
        self.per_group = table(np.stack([
            bounds - counts,  # first sample of the group
            n_centres,
            np.cumsum(np.concatenate([[0], n_centres]))[:-1],  # the group's first centre
            n_t, n_t - 1,
            h - patch + 1, w - patch + 1,  # crop positions
            w, w * sc,  # row strides
            h * w, h * w * sc * sc,  # frame sizes
            np.cumsum([0] + [g.lr.size for g in data.groups])[:-1],  # where the group starts
            np.cumsum([0] + [g.hr.size for g in data.groups])[:-1],
        ]))
        self.ar_lr = torch.arange(patch, device=storage)
        self.ar_hr = torch.arange(patch * data.scale, device=storage)
        self.ar_lr_flipped, self.ar_hr_flipped = self.ar_lr.flip(0), self.ar_hr.flip(0)
        self.h = table(h)  # for the loss mask

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """-> uint8 LR ``(B, frames, p, p)`` and HR ``(B, 1, p*s, p*s)`` on the storage device,
        and with a border the LR loss mask ``(B, p, p)``."""
        return self.gather(*self.draw(batch_size))

    def draw(self, batch_size: int, out: tuple[torch.Tensor, ...] | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The random part of a draw of ``batch_size`` samples, from :attr:`generator`
        (`draw_numbers`), optionally written into ``out``."""
        return draw_numbers(self.generator, self.total, batch_size, out)

    def gather(self, target: torch.Tensor, flips: torch.Tensor, crop_u: torch.Tensor
               ) -> tuple[torch.Tensor, ...]:
        """The patches that :meth:`draw`'s numbers name, for any number of samples: the
        deterministic part of a draw (a fused group gathers all its members' samples at once)."""
        sc = self.scale
        n = target.shape[0]
        # Every per-sample number as an (n, 1) column, so that it broadcasts against the frame
        # offsets and pixel ranges without more reshaping (each reshape is an operator call).
        fv, fh, tr = (flips != 0)[:, :, None].unbind(0)
        group = torch.searchsorted(self.bounds, target, right=True)[:, None]
        (start, n_centres, centre_start, n_t, last_t, y_span, x_span, w, w_hr, hw, hw_hr,
         lr_base, hr_base) = self.per_group[:, group].unbind(0)
        local = target[:, None] - start
        clip = local // n_centres
        centre = self.centres[centre_start + local % n_centres]
        u_y, u_x = crop_u[:, :, None].unbind(0)
        y0, x0 = (u_y * y_span).long(), (u_x * x_span).long()
        frame = clip * n_t + centre  # index of the target frame in the group's (n*t) axis
        times = clip * n_t + torch.minimum((centre + self.offsets).clamp_(min=0), last_t)
        first, second = _flipped_offsets(self.ar_lr, self.ar_lr_flipped, y0, x0, fv, fh, tr, w)
        p, t = self.ar_lr.shape[0], times.shape[1]
        lr_idx = ((lr_base + times * hw).view(n, t, 1, 1) + first.view(n, 1, p, 1)
                  + second.view(n, 1, 1, p))
        first, second = _flipped_offsets(self.ar_hr, self.ar_hr_flipped, y0 * sc, x0 * sc,
                                         fv, fh, tr, w_hr)
        big = p * sc
        hr_idx = ((hr_base + frame * hw_hr).view(n, 1, 1) + first.view(n, big, 1)
                  + second.view(n, 1, big))
        out = (self.lr.take(lr_idx), self.hr.take(hr_idx).view(n, 1, big, big))
        if not self.border:
            return out
        h = self.h[group[:, 0]]
        return out + (_loss_mask(self.ar_lr, y0[:, 0], x0[:, 0], h, w[:, 0], self.border, *flips),)


def draw_numbers(generator: torch.Generator, total: int, samples: int,
                 out: tuple[torch.Tensor, ...] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random numbers of ``samples`` samples of ``total`` targets, on the generator's device,
    in the order every path draws them: the target (n,), the flips (3, n) (vertical,
    horizontal, transpose) and the crop position (2, n) in [0, 1), optionally written into
    ``out`` (three tensors of those shapes)."""
    dev = generator.device
    t_out, f_out, c_out = out if out is not None else (None, None, None)
    target = torch.randint(0, total, (samples,), generator=generator, device=dev, out=t_out)
    flips = torch.randint(0, 2, (3, samples), generator=generator, device=dev, out=f_out)
    # float64: a float32 draw times a frame size can round up to the size itself.
    crop_u = torch.rand((2, samples), generator=generator, device=dev, dtype=torch.float64,
                        out=c_out)
    return target, flips, crop_u


def _one_buffer(arrays: list[np.ndarray], storage: torch.device) -> torch.Tensor:
    """The arrays' bytes back to back in one uint8 tensor, copied group by group (no second host
    copy of the whole split)."""
    buf = torch.empty(sum(a.size for a in arrays), dtype=torch.uint8, device=storage)
    at = 0
    for a in arrays:
        buf[at:at + a.size].copy_(as_tensor(a.reshape(-1), torch.device("cpu")))
        at += a.size
    return buf


def chunk_batches(patch: int, scale: int, batch_size: int) -> int:
    """Batches per device chunk for LR patches of ``patch`` pixels at ``scale``."""
    return max(1, _CHUNK_HR_PIXELS // ((patch * scale) ** 2 * batch_size))


def chunk_position(state: dict[str, Any]) -> tuple[int, int]:
    """(seed, batches drawn) of the device path from a sampler checkpoint of any kind: its own
    kind continues exactly; the numpy kind (or the single-generator one that came before the
    chunks) is reseeded deterministically from its saved state."""
    if state.get("kind", "numpy") == "torch-chunks":
        return int(state["seed"]), int(state["drawn"])
    return _reseed(state, "torch-chunks"), 0


def _reseed(state: dict[str, Any], mine: str) -> int:
    kind = state.get("kind", "numpy")
    seed = _seed_from(state["rng"] if "rng" in state else [state["seed"], state["drawn"]])
    log.warning("resuming a %s-sampler checkpoint on the %s sampler: reseeded (%d); the "
                "patches differ from an uninterrupted run's", kind, mine, seed)
    return seed


def _chunk_seed(seed: int, index: int) -> int:
    """The generator seed of chunk ``index`` of a run seeded ``seed`` (63 bits)."""
    digest = hashlib.sha256(f"espcn-tune patch chunk {seed} {index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _seed_from(state: Any) -> int:
    """A deterministic 63-bit seed from a saved generator state of either kind."""
    raw = state.numpy().tobytes() if isinstance(state, torch.Tensor) else repr(state).encode()
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "little") >> 1


def _loss_mask(ar: _Array, y0: _Array, x0: _Array, h: int | _Array, w: int | _Array, border: int,
               flip_v: _Array, flip_h: _Array, transpose: _Array) -> _Array:
    """Where the loss counts in each LR patch ``(B, p, p)``, under the same flips as the pixels.

    A patch side that lies inside the frame gives up ``border`` pixels: there the network's zero
    padding and the residual's bicubic see an edge that the whole frame does not have. A side
    that lies on the frame's own edge keeps them: the whole frame has that edge too, so those
    outputs are what inference computes, and leaving them out would leave the frame's border
    pixels untrained (measured: -0.33 dB when every side gave up 4 pixels)."""
    size = ar.shape[0]

    def keep(start: _Array, length: int | _Array, flip: _Array) -> _Array:
        first = (start == 0)[:, None]  # the patch's first row (or column) is the frame's
        last = (start == length - size)[:, None]
        ok = ((ar >= border) | first) & ((ar < size - border) | last)
        return _where(flip[:, None] != 0, _flip_columns(ok), ok)

    rows = keep(y0, h, flip_v)
    cols = keep(x0, w, flip_h)
    tr = transpose[:, None] != 0
    first, second = _where(tr, cols, rows), _where(tr, rows, cols)
    mask: _Array = first[:, :, None] & second[:, None, :]
    return mask


def _flipped_offsets(ar: torch.Tensor, ar_flipped: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor,
                     flip_v: torch.Tensor, flip_h: torch.Tensor, transpose: torch.Tensor,
                     width: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_dihedral_offsets` for torch, in fewer operator calls: every per-sample argument
    an (n, 1) column, the flips bools, the reversed arange given (the same numbers)."""
    rows = (y0 + torch.where(flip_v, ar_flipped, ar)) * width
    cols = x0 + torch.where(flip_h, ar_flipped, ar)
    return torch.where(transpose, cols, rows), torch.where(transpose, rows, cols)


def _dihedral_offsets(ar: _Array, y0: _Array, x0: _Array, flip_v: _Array, flip_h: _Array,
                      transpose: _Array, width: int | _Array) -> tuple[_Array, _Array]:
    """Flat-index parts ``(B, size)`` of a crop at (y0, x0) under one of the 8 flips/rotations:
    pixel (i, j) of sample b is ``first[b, i] + second[b, j]`` in a row-major frame of ``width``
    (numpy or torch alike). The same flags at LR and HR scale give pixel-aligned patches."""
    size = ar.shape[0]
    rows = (y0[:, None] + _where(flip_v[:, None] != 0, size - 1 - ar, ar)) * width
    cols = x0[:, None] + _where(flip_h[:, None] != 0, size - 1 - ar, ar)
    tr = transpose[:, None] != 0  # a transpose swaps which output axis walks rows
    return _where(tr, cols, rows), _where(tr, rows, cols)


def _where(condition: _Array, a: _Array, b: _Array) -> _Array:
    """``np.where`` or ``torch.where``, whichever kind the arguments are."""
    if isinstance(condition, torch.Tensor):
        return torch.where(condition, a, b)
    return np.where(condition, a, b)


def _flip_columns(x: _Array) -> _Array:
    """``x`` with its second axis reversed (a numpy view, a torch copy)."""
    return x.flip(1) if isinstance(x, torch.Tensor) else x[:, ::-1]


def _storage_device(data: SplitData, device: torch.device) -> torch.device:
    if device.type != "cuda":
        return torch.device("cpu")
    nbytes = sum(g.hr.nbytes + g.lr.nbytes for g in data.groups)
    free, total = torch.cuda.mem_get_info(device)
    # A packed trial is capped at its share of the card (tune.trial.cap_gpu_memory), which the
    # card's free memory does not show; torch < 2.6 has no getter (then: the whole card).
    share = getattr(torch.cuda, "get_per_process_memory_fraction", lambda _d: 1.0)(device)
    allowed = min(free, share * total)
    return device if nbytes < _GPU_UPLOAD_FRACTION * allowed else torch.device("cpu")
