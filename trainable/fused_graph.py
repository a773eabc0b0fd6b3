"""A fused group's update as one CUDA graph (``cuda_graph: true`` on a FusedTrainer; issue 16,
item 3 "one graph per fused group").

**Not yet run on a GPU**: the CPU tests run this code without capture (``graphed._CAPTURE =
False``) and check it against the group's plain update bitwise, with no host sync and static
shapes inside what a card would capture (tests/test_graph.py).

The group's update (trainable/fused.py, ``FusedTrainer._update``) is already a fixed set of
kernels over flat buffers whatever N. What a graph needs besides:

- **Per-member coefficients**: the host's rows of each update (LR = ``cfg.lr_at`` of each
  member's progress, Adam's bias corrections, weight decay, clipping, who steps) are written
  into their static device buffer by `FlatUpdate.prepare`'s one copy from pinned memory, before
  each replay; the fp16 rows that depend on which members overflowed are computed inside the
  graph, as in eager mode.
- **Static batches**: the window's micro-batches (trainable.fused_draw) are copied into static
  buffers before each replay (2-5 copies per micro-batch: bytes the graph's own reads would move
  anyway). The windows themselves stay eager: one draw per window (up to a chunk of batches).
- **What the host decides** (whether any stepping member clips, whether any has weight decay,
  the fp16 step table, which `cover_steps` replaces when a longer-lived member joins) selects
  the captured graph: one per such combination, captured when first met.
- **Warm-up** as trainable.graphed: three updates on a side stream, then every buffer they
  changed (weights, optimizer states, loss scales, step counts on the host and the device, the
  loss sums) is put back in place before capture, so each real update is a replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import torch

from trainable.fused_draw import Batch
from trainable.fused_update import FlatUpdate
from trainable.graphed import WARMUP_UPDATES


class _Group(Protocol):
    """What this module reads of a FusedTrainer."""

    device: torch.device
    _opt: FlatUpdate
    _flat: torch.Tensor
    _weights: torch.Tensor
    _loss_sum: torch.Tensor

    def _prepare(self, active: list[int]) -> None: ...
    def _apply_update(self, batches: Sequence[Batch]) -> None: ...


class _Captured(NamedTuple):
    graph: Any  # torch.cuda.CUDAGraph
    # The fp16 Adam step table it reads (None without one), held so that its identity is a
    # fair test: cover_steps replacing it means recapture.
    table: torch.Tensor | None


class FusedStepGraph:
    """Replays a fused group's update (see the module); ``capture=False`` runs the same code
    eagerly, on any device."""

    def __init__(self, group: _Group, *, capture: bool) -> None:
        self.group = group
        self.capturing = capture and group.device.type == "cuda"
        self._static: list[Batch] | None = None
        self._graphs: dict[tuple[bool, bool], _Captured] = {}
        self.eager_updates = 0
        self.replays = 0

    def update(self, batches: Sequence[Batch], active: list[int]) -> None:
        """One update of every member in ``active`` from ``batches`` (the others unchanged)."""
        g = self.group
        static = self._copy_in(batches)
        g._prepare(active)
        opt = g._opt
        key = (opt.clipping, opt.decay)
        captured = self._graphs.get(key)
        if captured is not None and captured.table is not getattr(opt, "_table", None):
            captured = None  # cover_steps replaced the table the graph reads
        if captured is None and self.capturing:
            captured = self._capture(static, active, key)
        if captured is not None:
            captured.graph.replay()
            self.replays += 1
        else:
            g._apply_update(static)
            self.eager_updates += 1

    def _copy_in(self, batches: Sequence[Batch]) -> list[Batch]:
        """The micro-batches in the static buffers (allocated at the first update: every window
        of a group has the same batch shapes)."""
        if self._static is None:
            self._static = [Batch(torch.empty_like(b.x), torch.empty_like(b.target),
                                  *(None if t is None else torch.empty_like(t)
                                    for t in (b.bicubic, b.mask, b.weight)))
                            for b in batches]
        with torch.no_grad():
            for dst, src in zip(self._static, batches, strict=True):
                for d, s in zip(dst, src, strict=True):
                    if (d is None) != (s is None):
                        raise ValueError("a fused group's batches changed their fields")
                    if d is not None and s is not None:
                        d.copy_(s)
        return self._static

    def _capture(self, static: list[Batch], active: list[int], key: tuple[bool, bool]
                 ) -> _Captured:
        g = self.group
        saved = _Snapshot(g)  # prepared for this update: its rows and host step counts
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(WARMUP_UPDATES):
                if i:
                    g._prepare(active)  # as each real update does (its host counters too)
                g._apply_update(static)
        torch.cuda.current_stream().wait_stream(side)
        saved.restore()  # back to this update, prepared and not yet applied
        graph = torch.cuda.CUDAGraph()
        # thread_local: the fusion engine (tune.fusion) builds new groups on its callers'
        # threads while its training thread may be capturing; their CUDA calls must not
        # invalidate this capture (they are on other streams, and allocate from other pools).
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            g._apply_update(static)
        captured = _Captured(graph, getattr(g._opt, "_table", None))
        self._graphs[key] = captured
        return captured


class _Snapshot:
    """Every buffer a group's update changes, put back in place after the warm-up."""

    def __init__(self, g: _Group) -> None:
        self.g = g
        opt = g._opt
        tensors = [g._flat, g._weights, g._loss_sum, opt.grad, *opt.states, opt._rows,
                   *_scaled(opt)]
        self.tensors = list({id(t): t for t in tensors}.values())  # _weights may be _flat
        self.saved = [t.clone() for t in self.tensors]
        self.steps_host = opt._steps_host.copy()  # prepare() counts steps on the host

    @torch.no_grad()
    def restore(self) -> None:
        for t, saved in zip(self.tensors, self.saved, strict=True):
            t.copy_(saved)
        self.g._opt._steps_host = self.steps_host.copy()


def _scaled(opt: FlatUpdate) -> tuple[torch.Tensor, ...]:
    if not opt.scaled:
        return ()
    return (opt.scale, opt.tracker, opt.steps)
