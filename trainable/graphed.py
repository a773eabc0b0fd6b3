"""One Trainer's whole training step as CUDA graphs (``cuda_graph: true``; issue 16, item 3).

**Not yet run on a GPU.** Everything here was written on a CPU-only machine from PyTorch's
documented CUDA-graph rules (``torch.cuda.graph``, the "CUDA Graphs" notes, torch's own
``test_graph_scaling_fused_optimizers``). What the CPU can check is checked (tests/test_graph.py):
the same code run without capture (``_CAPTURE = False``) equals the plain step bitwise, takes no
host sync and no data-dependent shape (a TorchDispatchMode lint), and its LR equals ``cfg.lr_at``.
The capture itself, and graph == eager on a card, are the ``gpu`` tests'.

On a GPU one eager step of this 28k-parameter network is bound by launching its ~45-70 kernels
from Python (BENCHMARKS.md, "GPU"). Here an update is one graph launch:

- **The draw** (`_Ring`). The device path draws patches a chunk (~32 batches) at a time, chunk
  ``c`` from a generator seeded ``_chunk_seed(seed, c)`` (trainable/sampler.py). Its random
  numbers are drawn *outside* any graph, by exactly the calls the eager sampler makes, into
  static buffers (three kernels per chunk); the deterministic rest of the draw (index arithmetic
  and gather) is a graph of its own, replayed once per chunk into a ring of chunks. Drawing
  outside rather than registering the generator with the graph: the numbers, and so the patches,
  are the eager sampler's by construction (checked bitwise on the CPU), no reliance on how a
  registered generator's seed and offset advance between replays (which only a GPU could check),
  for three launches per 32 updates.
- **The step graph**: the update's ``k`` batches selected from the ring at a device cursor (so
  a chunk boundary inside an update, a remainder or a mid-chunk resume are cursor values), the
  LR read from a table by a device update counter, forward, backward, GradScaler, clipping,
  the fused optimizer, the interval's loss sum and a finite flag.
- **The LR** stays a pure function of progress: before each stretch of updates the host writes
  ``cfg.lr_at`` of each coming update into a static table (float32), which the graph indexes. The
  optimizer's LR is a device tensor in eager mode too (a float LR and a tensor LR round
  differently), so eager == graph.
- **Warm-up** (the docs' rule): three updates on a side stream before capture, then every
  tensor they changed (weights, optimizer and scaler state, counters) is put back in place, so
  every real update of a graphed run is a replay and a resumed run equals an uninterrupted one
  whether or not eager and graph agree bitwise.
- **Static memory**: gradients are set to None once before capture and then live in the graph's
  pool; nothing calls ``zero_grad`` again. ``Optimizer.load_state_dict`` replaces the optimizer's
  tensors, so a Trainer drops its StepGraph on every load and captures anew.
- **Divergence** is read from the device flag every ``check_every`` updates, as the eager loop
  reads its loss sum: a diverged run stops at the same update in both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from trainable import imaging
from trainable.config import TrainConfig
from trainable.errors import ConfigError
from trainable.sampler import PatchSampler, _chunk_seed

# Updates run eagerly on a side stream before capture (then undone), as torch.cuda.graph's
# documentation does; they also create the optimizer's and scaler's lazy state.
WARMUP_UPDATES = 3
# The longest stretch of updates whose LRs one table holds (a longer interval is cut in pieces).
_TABLE_UPDATES = 1 << 16
# False: run the same static-buffer code without capturing it, on any device (the tests; and the
# "eager" side of graph == eager on a GPU).
_CAPTURE = True

StepFn = Callable[[Sequence[tuple[torch.Tensor, ...]]], torch.Tensor]


def check_device(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse ``cuda_graph`` on a device that is not CUDA (one line, naming the key)."""
    if cfg.cuda_graph and device.type != "cuda" and _CAPTURE:
        why = " (`device: auto` on a machine without CUDA)" if cfg.device == "auto" else ""
        raise ConfigError(f"The value of `cuda_graph` is True, but this run's device is "
                          f"{device.type!r}{why}: a CUDA graph needs a CUDA device; set "
                          f"cuda_graph: false.")


class _Ring:
    """The device path's patch stream as static buffers: ``slots`` whole chunks, chunk ``c`` in
    slot ``c % slots``, enough that the ``k`` batches of any update are in the ring at once."""

    def __init__(self, sampler: PatchSampler, batch: int, k: int, capture: bool) -> None:
        gather = sampler.device_gather()
        self.gather, self.batch = gather, batch
        self.seed, _ = sampler.device_position()
        self.per = sampler.chunk_batches(batch)  # batches per chunk
        self.size = self.per * batch  # samples per chunk
        self.slots = (k - 1) // self.per + 2
        dev = gather.bounds.device
        c = self.size
        self.rand = (torch.zeros(c, dtype=torch.int64, device=dev),
                     torch.zeros((3, c), dtype=torch.int64, device=dev),
                     torch.zeros((2, c), dtype=torch.float64, device=dev))
        probe = gather.gather(*self.rand)  # shapes and dtypes (target 0, unflipped: valid)
        self.rings = tuple(torch.zeros((self.slots * c, *t.shape[1:]), dtype=t.dtype, device=dev)
                           for t in probe)
        self._slot = torch.zeros(1, dtype=torch.int64, device=dev)
        self.held = [-1] * self.slots  # which chunk each slot holds
        self._capture = capture
        self._graph: Any = None  # torch.cuda.CUDAGraph of the gather, once captured

    def ensure(self, first: int, last: int, timer: _DrawTimer) -> None:
        """Make the chunks of batches ``first..last`` (stream positions) present."""
        for chunk in range(first // self.per, last // self.per + 1):
            slot = chunk % self.slots
            if self.held[slot] != chunk:
                with timer:
                    self._load(chunk, slot)

    def _load(self, chunk: int, slot: int) -> None:
        gen = self.gather.generator
        gen.manual_seed(_chunk_seed(self.seed, chunk))
        self.gather.draw(self.size, out=self.rand)  # the eager sampler's calls, outside graphs
        self._slot.fill_(slot)
        if self._graph is not None:
            self._graph.replay()
        else:
            self._gather_into_slot()
        self.held[slot] = chunk

    def _gather_into_slot(self) -> None:
        s, c = self.slots, self.size
        for ring, new in zip(self.rings, self.gather.gather(*self.rand), strict=True):
            ring.view(s, c, *ring.shape[1:]).index_copy_(0, self._slot, new.view(1, c, *new.shape[1:]))

    def capture(self) -> None:
        """Capture the gather (after it ran eagerly at least once: the warm-up's loads)."""
        if not self._capture or self._graph is not None:
            return
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._gather_into_slot()
        self._graph = graph


class StepGraph:
    """A Trainer's update as static buffers, replayed as a CUDA graph (see the module).

    ``step`` is the Trainer's update over ``k`` micro-batches (``train_step`` without its final
    ``zero_grad``); the optimizer's LR (its only param group's ``"lr"``) must be a 0-dim float32
    tensor on the training device (``make_optimizer(..., lr_tensor=True)``). Drop the object (and
    build a new one) whenever the optimizer's, scaler's or sampler's state is loaded.
    """

    def __init__(self, cfg: TrainConfig, sampler: PatchSampler, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, step: StepFn,
                 *, capture: bool | None = None) -> None:
        capture = _CAPTURE if capture is None else capture
        self.cfg, self.sampler, self.model = cfg, sampler, model
        self.optimizer, self.scaler, self._step = optimizer, scaler, step
        [group] = optimizer.param_groups
        self.lr = group["lr"]
        dev = next(model.parameters()).device
        if not (isinstance(self.lr, torch.Tensor) and self.lr.dim() == 0
                and self.lr.dtype == torch.float32 and self.lr.device == dev):
            raise ValueError("StepGraph needs the optimizer's lr as a 0-dim float32 tensor on "
                             f"{dev}, got {self.lr!r}")
        self.capturing = capture and dev.type == "cuda"
        self.k, self.batch = cfg.gradient_accumulation_steps, cfg.batch_size
        self.ring = _Ring(sampler, self.batch, self.k, self.capturing)
        # Device state the graph reads and advances (host mirror of the cursor: self.drawn).
        self.cursor = torch.zeros((), dtype=torch.int64, device=dev)  # ring position, in batches
        self.update = torch.zeros((), dtype=torch.int64, device=dev)  # index into the LR table
        self.table = torch.zeros(max(WARMUP_UPDATES, min(_TABLE_UPDATES, _total_updates(cfg))),
                                 dtype=torch.float32, device=dev)
        self.loss_sum = torch.zeros((), device=dev)
        self.finite = torch.ones((), dtype=torch.bool, device=dev)
        self._ar_k = torch.arange(self.k, device=dev)
        self._ar_b = torch.arange(self.batch, device=dev)
        self._positions = self.ring.slots * self.ring.per
        self.drawn = 0  # batches of the stream drawn (host); set from the sampler in train()
        self._graph: Any = None
        self.eager_updates = 0  # updates run without a graph (all of them when not capturing)
        # The residual's cached mirror index is read by the graph at its address: keep it alive
        # (an lru_cache eviction would free it and the graph would read reused memory).
        self._keep = [imaging._cached_mirror_index(cfg.patch_size, imaging._PAD_LR, dev)]

    # --- one interval ---------------------------------------------------------------------
    def train(self, updates: int, samples_seen: int, check_every: int
              ) -> tuple[int, bool, float]:
        """``updates`` optimizer updates from ``samples_seen`` (the loss sum starts at 0):
        -> (updates done, diverged at a check, seconds spent drawing chunks). Stops at the first
        check (every ``check_every`` updates) that finds the loss sum not finite."""
        cfg = self.cfg
        spu = cfg.samples_per_update
        _, self.drawn = self.sampler.device_position()
        start_drawn = self.drawn
        self.cursor.fill_(self.drawn % self._positions)
        self.loss_sum.zero_()
        self.finite.fill_(True)
        timer = _DrawTimer(self.table.device)
        done, diverged = 0, False
        try:
            while done < updates and not diverged:
                stretch = min(updates - done, self.table.numel())
                self._write_lrs(samples_seen + done * spu, stretch)
                for _ in range(stretch):
                    if self.capturing and self._graph is None:
                        self._warm_up_and_capture(timer)
                    self.ring.ensure(self.drawn, self.drawn + self.k - 1, timer)
                    if self._graph is not None:
                        self._graph.replay()
                    else:
                        self.optimizer.zero_grad(set_to_none=True)
                        self._body()
                        self.eager_updates += 1
                    self.drawn += self.k
                    done += 1
                    if done % check_every == 0 and not bool(self.finite):
                        diverged = True
                        break
        finally:
            self.sampler.advance(self.drawn - start_drawn)
        return done, diverged, timer.seconds()

    def _write_lrs(self, samples_seen: int, n: int) -> None:
        """``cfg.lr_at`` of the next ``n`` updates into the table's first rows; counter to 0."""
        spu = self.cfg.samples_per_update
        values = [self.cfg.lr_at(samples_seen + i * spu) for i in range(n)]
        self.table[:n].copy_(torch.tensor(values, dtype=torch.float32))
        self.update.zero_()

    # --- what is captured -------------------------------------------------------------------
    def _body(self) -> None:
        """One update from the static buffers; no host sync, no data-dependent shape."""
        ring, b = self.ring, self.batch
        with torch.no_grad():
            pos = (self.cursor + self._ar_k).remainder_(self._positions)  # (k,) ring positions
            rows = (pos[:, None] * b + self._ar_b).view(-1)  # (k*b,) ring rows
            lr8, hr8, *mask = (r.index_select(0, rows) for r in ring.rings)
            lr_f, hr_f = lr8.float().div_(255.0), hr8.float().div_(255.0)
            mask_f = [self.sampler._hr_mask(m) for m in mask]
            torch.take(self.table, self.update, out=self.lr)
        micro = [(lr_f[j * b:(j + 1) * b], hr_f[j * b:(j + 1) * b],
                  *(m[j * b:(j + 1) * b] for m in mask_f)) for j in range(self.k)]
        total = self._step(micro)
        with torch.no_grad():
            self.loss_sum.add_(total)
            self.finite.copy_(self.loss_sum.isfinite())
            self.cursor.add_(self.k).remainder_(self._positions)
            self.update.add_(1)

    def _warm_up_and_capture(self, timer: _DrawTimer) -> None:
        """WARMUP_UPDATES real updates on a side stream, undone in place; then capture."""
        saved = _Snapshot(self)
        drawn = self.drawn
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_UPDATES):
                self.ring.ensure(drawn, drawn + self.k - 1, timer)
                self.optimizer.zero_grad(set_to_none=True)
                self._body()
                drawn += self.k
        torch.cuda.current_stream().wait_stream(side)
        saved.restore()
        self.ring.capture()
        # Gradients are created by the captured backward, in the graph's pool, and stay there.
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._body()
        self._graph = graph

    @property
    def captured(self) -> bool:
        return self._graph is not None


class _Snapshot:
    """Every tensor an update changes, to put back in place after the warm-up (addresses kept:
    the graph captured afterwards reads these same tensors)."""

    def __init__(self, g: StepGraph) -> None:
        self.g = g
        self.params = [p.detach().clone() for p in g.model.parameters()]
        self.opt = {id(p): {k: v.clone() for k, v in g.optimizer.state[p].items()
                            if isinstance(v, torch.Tensor)}
                    for p in g.model.parameters() if g.optimizer.state.get(p)}
        sc = g.scaler  # a disabled GradScaler has no tensors at all
        scale, tracker = getattr(sc, "_scale", None), getattr(sc, "_growth_tracker", None)
        self.scale = None if scale is None or tracker is None else (scale.clone(), tracker.clone())
        self.counters = [t.clone() for t in (g.cursor, g.update, g.loss_sum, g.finite, g.lr)]

    @torch.no_grad()
    def restore(self) -> None:
        g = self.g
        for p, saved in zip(g.model.parameters(), self.params, strict=True):
            p.copy_(saved)
        for p in g.model.parameters():
            state = g.optimizer.state.get(p, {})
            before = self.opt.get(id(p))
            for key, value in state.items():
                if not isinstance(value, torch.Tensor):
                    continue
                if before is not None and key in before:
                    value.copy_(before[key])
                else:  # created by the warm-up: a fresh optimizer's zeros (and step 0)
                    value.zero_()
        sc = g.scaler
        if sc.is_enabled() and sc._scale is not None and sc._growth_tracker is not None:
            if self.scale is None:  # created by the warm-up: the scaler's initial state
                sc._scale.fill_(sc._init_scale)
                sc._growth_tracker.fill_(sc._init_growth_tracker)
            else:
                sc._scale.copy_(self.scale[0])
                sc._growth_tracker.copy_(self.scale[1])
        for t, saved in zip((g.cursor, g.update, g.loss_sum, g.finite, g.lr), self.counters,
                            strict=True):
            t.copy_(saved)


class _DrawTimer:
    """Time spent loading chunks: CUDA events on a GPU (the host only queues the work), the
    host clock elsewhere; read once, at the end of an interval."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.pairs: list[tuple[Any, Any]] = []
        self.host = 0.0
        self._t0 = 0.0

    def __enter__(self) -> None:
        if self.cuda:
            self.pairs.append((torch.cuda.Event(enable_timing=True),
                               torch.cuda.Event(enable_timing=True)))
            self.pairs[-1][0].record()
        self._t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            self.pairs[-1][1].record()
        self.host += time.perf_counter() - self._t0

    def seconds(self) -> float:
        if not self.cuda:
            return self.host
        torch.cuda.synchronize()
        return float(sum(a.elapsed_time(b) for a, b in self.pairs)) / 1000.0


def _total_updates(cfg: TrainConfig) -> int:
    return -(-cfg.total_samples // cfg.samples_per_update)
