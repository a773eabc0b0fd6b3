"""A fused group's patches: every member's own patch stream, gathered for all members at once.

Member i draws exactly what a solo PatchSampler (device path) seeded ``seed_i`` draws: chunk c
of its stream comes from a generator seeded ``_chunk_seed(seed_i, c)`` (trainable/sampler.py).
Only the random numbers are drawn per member (three generator calls per member and chunk); they
are kept in a small ring per member, and the deterministic rest of the draw (the index
arithmetic and the gather) is done once for a *window* of batches of every member, wherever
each member is in its own stream: members that joined later, resumed mid-chunk or idled simply
start their part of the window elsewhere in their rings. The window is also where the batches
get their float conversion and the residual's bicubic, once for all its batches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from trainable.config import TrainConfig
from trainable.imaging import upscale_bicubic
from trainable.sampler import _chunk_seed, _DeviceGather, _storage_device, chunk_batches

if TYPE_CHECKING:
    from trainable.store import SplitData

# HR pixels of one window (all members' batches of it together): its int64 gather indices take
# 8 bytes per pixel for a moment (512 MiB here). 8 members at batch 16 on 32x32 LR patches fit a
# whole device chunk (32 batches) in a window; 32 members get 8 batches.
WINDOW_HR_PIXELS = 2**26


class Batch(NamedTuple):
    """One micro-batch of every member, as the fused step reads it."""

    x: torch.Tensor  # LR (B, N*T, p, p) in the step's precision
    target: torch.Tensor  # (B, N, H, W) float32: HR, minus the bicubic in fp32 with the residual
    # (when the window carries it: MemberStreams' ``residual``)
    bicubic: torch.Tensor | None  # (B, N, H, W) the residual's bicubic, in the low precision
    mask: torch.Tensor | None  # (B, N, p, 1, p, 1) 1 where the loss counts (loss border)
    weight: torch.Tensor | None  # (1, N, 1, 1, 1, 1) 1 / HR pixels counted (loss border)



class MemberStreams:
    """Every member's patch stream, gathered for all members at once.

    Member i draws what a solo PatchSampler (device path) seeded ``seed_i`` draws: chunk c of
    its stream comes from a generator seeded ``_chunk_seed(seed_i, c)``. Each member's random
    numbers (targets, flips, crops) for the chunks its window touches are kept in a ring; a
    window of ``W`` batches for every member is then one vectorised gather (the index arithmetic
    and the take of _DeviceGather) from wherever each member is in its own stream.
    """

    def __init__(self, data: SplitData, shape: TrainConfig, capacity: int, device: torch.device,
                 lowp: torch.dtype | None, window_hr_pixels: int, *, residual: bool) -> None:
        """``lowp``: the precision of the batches' LR (None: fp32); ``residual``: the batches
        carry the residual's bicubic (fp32: subtracted from the target). Without either, a batch
        is what a solo PatchSampler yields (fp32 LR, HR target), for a network that adds the
        residual itself."""
        self.n, self.b = capacity, shape.batch_size
        self.frames, self.scale, self.patch = shape.frames, shape.scale, shape.patch_size
        self.device, self.lowp, self.residual = device, lowp, residual
        storage = _storage_device(data, device)
        counts = np.array([g.lr.shape[0] * len(g.centres) for g in data.groups], dtype=np.int64)
        self.gather = _DeviceGather(data, counts, shape.frames, shape.patch_size, 0, storage,
                                    shape.loss_border)
        self.per = chunk_batches(shape.patch_size, shape.scale, self.b)  # batches per chunk
        self.chunk = self.per * self.b  # samples per chunk
        k = shape.gradient_accumulation_steps
        w = max(1, window_hr_pixels // (self.b * capacity * (shape.patch_size * shape.scale) ** 2))
        self.window = max(k, min(w, self.per) // k * k)  # whole updates only
        # Ring slots per member: enough for every chunk one window can touch.
        self.slots = -(-self.window // self.per) + 1
        n, r, c = capacity, self.slots, self.chunk
        targets = torch.zeros((n, r, c), dtype=torch.int64, device=storage)
        flips = torch.zeros((n, r, 3, c), dtype=torch.int64, device=storage)
        crops = torch.zeros((n, r, 2, c), dtype=torch.float64, device=storage)
        self._flat = (targets.view(-1), flips.view(-1), crops.view(-1))
        self._ring = [[(targets[i, j], flips[i, j], crops[i, j]) for j in range(r)]
                      for i in range(n)]
        self.held = np.full((n, r), -1, dtype=np.int64)  # which chunk each ring slot holds
        self.seeds: list[int | None] = [None] * n
        self.drawn = np.zeros(n, dtype=np.int64)  # batches each member has consumed
        self._window: list[Batch] | None = None
        self._base = np.zeros(n, dtype=np.int64)  # each member's position at the window's start
        self._row = 0  # the window's next unused batch

    def assign(self, slot: int, seed: int, drawn: int) -> None:
        self.seeds[slot], self.drawn[slot] = seed, drawn
        self.held[slot] = -1
        self._window = None  # the new member needs its own rows

    def release(self, slot: int) -> None:
        self.seeds[slot] = None

    def state_dict(self, slot: int) -> dict[str, Any]:
        """The member's sampler state, as its solo PatchSampler (device path) writes it."""
        seed = self.seeds[slot]
        if seed is None:
            raise ValueError(f"The value of `slot` is {slot}, but it holds no member.")
        return {"kind": "torch-chunks", "seed": int(seed), "drawn": int(self.drawn[slot])}

    def next_batches(self, active: list[int], k: int, horizon: int) -> list[Batch]:
        """The next ``k`` micro-batches of every member; only ``active`` members' streams
        advance (the others' rows are computed and ignored). A new window covers at most
        ``horizon`` batches (what is left to train before the next validation)."""
        window = self._window
        if (window is None or self._row + k > len(window)
                or any(self.drawn[i] != self._base[i] + self._row for i in active)):
            window = self._draw_window(min(self.window, max(horizon, k)))
        rows = window[self._row:self._row + k]
        self._row += k
        self.drawn[active] += k
        return rows

    def _draw_window(self, w: int) -> list[Batch]:
        n, b, c, r = self.n, self.b, self.chunk, self.slots
        start = self.drawn * b  # each member's first sample of the window
        for i, seed in enumerate(self.seeds):
            if seed is None:
                continue  # an empty slot gathers sample 0, unflipped, and nothing reads it
            for chunk in range(start[i] // c, (start[i] + w * b - 1) // c + 1):
                if self.held[i, chunk % r] != chunk:
                    self.gather.generator.manual_seed(_chunk_seed(seed, chunk))
                    self.gather.draw(c, out=self._ring[i][chunk % r])
                    self.held[i, chunk % r] = chunk
        # Sample j of member i in the window (sample-major, member-minor: the order of a
        # batch's channels) is position q of member i's ring.
        q = (start[None, :] + np.arange(w * b)[:, None]) % (r * c)  # (W*B, N)
        ring = np.arange(n)[None, :] * r + q // c
        at = q % c
        rows = np.arange(3)[:, None, None]
        idx = (ring * c + at, (ring * 3 + rows) * c + at, (ring * 2 + rows[:2]) * c + at)
        dev = self._flat[0].device
        target, flips, crop = (src.take(torch.from_numpy(i.reshape(-1) if i.ndim == 2
                                                         else i.reshape(len(i), -1)).to(dev))
                               for src, i in zip(self._flat, idx, strict=True))
        lr, hr, *mask = self.gather.gather(target, flips, crop)
        t, p, s = self.frames, self.patch, self.scale
        lr = torch.div(lr.to(self.device).view(w * b, n * t, p, p), 255.0)
        target = torch.div(hr.to(self.device).view(w * b, n, p * s, p * s), 255.0)
        nothing: tuple[torch.Tensor | None, ...] = (None,) * w
        bicubic_rows = nothing  # the residual's bicubic per batch, where the batch carries it
        if self.residual:  # all members' centre frames at once
            bicubic = upscale_bicubic(lr[:, t // 2::t], s)
            if self.lowp is None:
                target = target.sub_(bicubic)
            else:
                bicubic_rows = bicubic.to(self.lowp).view(w, b, n, p * s, p * s).unbind(0)
        x = lr if self.lowp is None else lr.to(self.lowp)
        parts = [x.view(w, b, n * t, p, p).unbind(0), target.view(w, b, n, p * s, p * s).unbind(0),
                 bicubic_rows]
        if mask:
            m = mask[0].to(self.device).view(w, b, n, p, 1, p, 1).float()
            weight = m.sum((1, 3, 4, 5, 6), keepdim=True).mul_(s * s).clamp_(min=1.0).reciprocal_()
            parts += [m.unbind(0), weight.unbind(0)]
        else:
            parts += [nothing, nothing]
        self._window = [Batch(*row) for row in zip(*parts, strict=True)]
        self._base = self.drawn.copy()
        self._row = 0
        return self._window
