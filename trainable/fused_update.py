"""The optimizer update of a fused group: Adam or SGD for every member at once, over flat buffers.

A fused group's parameters, gradients and optimizer states are each one flat buffer, parameter-
major (all members' conv1 weights, then all members' conv1 biases, ...). Each member's numbers
for an update (learning rate, Adam's bias corrections, momentum, weight decay, whether it steps
at all) are rows of N values, spread over the buffers by one ``index_select``, so an update is
a fixed number of elementwise kernels whatever N. The formulas are torch.optim's single-tensor
ones (weight decay added to the gradient, as ``make_optimizer`` builds them), in its order of
operations, so that on the CPU an update rounds as torch.optim's does, to the last bit:

    Adam: g += wd p;  m += w1 (g - m);  v = b2m v + g (c2 g);  p += (neg m) / (sqrt(v) / bc2s + eps)
    SGD:  g += wd p;  buf = mom buf + on g;  p += neg buf

with ``w1 = 1 - beta1, b2m = beta2, c2 = 1 - beta2, neg = -lr / (1 - beta1^t),
bc2s = sqrt(1 - beta2^t)`` (SGD: ``mom = momentum, on = 1, neg = -lr``) for a member that steps,
and ``w1 = c2 = neg = 0, b2m = bc2s = 1`` (SGD: ``mom = 1, on = 0, neg = 0``) for one that does
not: its buffers stay bitwise as they are. SGD's first step (torch clones the gradient into the
momentum buffer) is the same as ``0 * momentum + g``.

Without a GradScaler every row is computed on the host, in double precision as torch.optim
computes its Python-float coefficients, and reaches the device in one copy. With one (fp16),
each member has its own loss scale, as ``torch.amp.GradScaler`` with its defaults keeps one: a
member whose gradients are not all finite skips its step (its step count too) and its scale
backs off, while the others step; after 2000 finite steps in a row a scale grows. Which members
skip is known only on the device, so there the rows are finished on the device, with Adam's
bias corrections read from a table by each member's step count.

grad_clip is per member, as clip_grad_norm_ takes it: the norm of each parameter tensor's norm,
one reduction per tensor over all members' blocks. fp16 Adam's step size ``neg`` is finished on
the device in fp32, where torch.optim divides in double: there a member agrees with a solo
Trainer to float rounding only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# torch.optim.Adam's defaults (make_optimizer changes none of them) and GradScaler's.
BETAS, EPS = (0.9, 0.999), 1e-8
INIT_SCALE, GROWTH, BACKOFF, GROWTH_INTERVAL = 2.0**16, 2.0, 0.5, 2000
_MAX_GROWABLE = torch.finfo(torch.float32).max / GROWTH  # a larger scale would overflow


@dataclass(frozen=True)
class MemberStep:
    """What the host knows of one member that takes part in an update."""

    slot: int
    lr: float
    weight_decay: float
    momentum: float
    grad_clip: float  # 0: no clipping


class FlatUpdate:
    """Per-member Adam or SGD (and with ``scaled``, a GradScaler per member) over flat buffers.

    ``member_of`` names each element's member; ``segments`` are ``(offset, size)`` of each
    parameter tensor's block (``capacity * size`` elements, member-major inside).
    """

    def __init__(self, optimizer: str, capacity: int, member_of: torch.Tensor,
                 segments: Sequence[tuple[int, int]], *, scaled: bool) -> None:
        dev, n = member_of.device, capacity
        self.adam, self.scaled, self.capacity = optimizer == "adam", scaled, capacity
        self.member_of, self.segments = member_of, list(segments)
        numel = member_of.numel()
        self.params = torch.zeros(numel, device=dev)
        self.grad = torch.zeros(numel, device=dev)
        self.states = [torch.zeros(numel, device=dev) for _ in range(2 if self.adam else 1)]
        self._zeros = torch.zeros(n, device=dev)
        self._steps_host = np.zeros(n, dtype=np.int64)  # steps taken, without a GradScaler
        # The rows, one buffer: those spread over the flat buffers first, then those that stay
        # N-vectors; the host's rows are one contiguous block of it (one copy per update).
        if not scaled:
            names = (["w1", "b2m", "c2", "neg", "bc2s"] if self.adam else ["mom", "on", "neg"])
            names += ["wd", "clip"]
            spread, host = len(names) - 1, (0, len(names))
        else:
            # Adam: the first five rows are read from a table by step count (``_finish_rows``).
            names = (["bc2s", "w1", "b2m", "c2", "bc1", "neg"] if self.adam else ["mom", "on", "neg"])
            names += ["unscale", "wd", "active", "inactive", "neg_lr", "mom_m1", "clip"]
            spread, host = names.index("wd") + 1, (names.index("wd"), len(names))
        self._names = names
        self._rows = torch.zeros((len(names), n), device=dev)
        self.row = dict(zip(names, self._rows.unbind(0), strict=True))
        self._spread = self._rows[:spread]
        self._host = self._rows[host[0]:host[1]]
        self._host_names = names[host[0]:host[1]]
        self._staging = _Staging(self._host.shape, dev)
        if scaled:
            self.scale = torch.full((n,), INIT_SCALE, device=dev)
            self.tracker = torch.zeros(n, device=dev)
            self.steps = torch.zeros(n, device=dev)  # steps taken (not skipped)
            self._table = torch.zeros((5, 0), device=dev)
            self._table_rows = self._rows[:5]
            self.cover_steps(1)
            self._one = torch.ones((), device=dev)
            self._growth = torch.tensor(GROWTH, device=dev)
            self._backoff = torch.full((n,), BACKOFF, device=dev)

    # --- per slot -----------------------------------------------------------------------------
    def views(self, buf: torch.Tensor, slot: int) -> list[torch.Tensor]:
        """The slot's part of ``buf``, one flat view per parameter tensor."""
        return [buf[o + slot * s:o + (slot + 1) * s] for o, s in self.segments]

    def reset(self, slot: int) -> None:
        """Zero the slot's weights and optimizer state, fresh step count and loss scale."""
        with torch.no_grad():
            for buf in (self.params, *self.states):
                for v in self.views(buf, slot):
                    v.zero_()
        self.set_steps(slot, 0)
        if self.scaled:
            self.scale[slot], self.tracker[slot] = INIT_SCALE, 0.0

    def step_count(self, slot: int) -> int:
        return int(self.steps[slot].item()) if self.scaled else int(self._steps_host[slot])

    def set_steps(self, slot: int, steps: int) -> None:
        if self.scaled:
            self.steps[slot] = float(steps)
        else:
            self._steps_host[slot] = steps

    def scaler_state(self, slot: int) -> dict[str, Any]:
        """The slot's GradScaler.state_dict() ({} without a scaler, as a disabled one saves)."""
        if not self.scaled:
            return {}
        return {"scale": float(self.scale[slot]), "growth_factor": GROWTH,
                "backoff_factor": BACKOFF, "growth_interval": GROWTH_INTERVAL,
                "_growth_tracker": int(self.tracker[slot])}

    def load_scaler(self, slot: int, state: dict[str, Any]) -> None:
        # As checkpoint.load_scaler: a state saved without fp16 ({}) starts fresh.
        if self.scaled and state:
            self.scale[slot] = float(state["scale"])
            self.tracker[slot] = float(state["_growth_tracker"])

    def cover_steps(self, steps: int) -> None:
        """With a GradScaler, make Adam's table reach step ``steps``: column t holds the rows
        ``[bc2s, w1, b2m, c2, bc1]`` of a member's t-th step (bias corrections in double
        precision, as torch.optim computes them), column 0 those of a member that does not step
        (``bc1`` inf: ``neg = -lr / bc1`` is then 0)."""
        if not (self.scaled and self.adam) or self._table.shape[1] > steps:
            return
        t = np.arange(max(steps + 1, 2 * self._table.shape[1]), dtype=np.float64)
        b1, b2 = BETAS
        table = np.stack([(1.0 - b2**t) ** 0.5, np.full_like(t, 1 - b1), np.full_like(t, b2),
                          np.full_like(t, 1 - b2), 1.0 - b1**t])
        table[:, 0] = [1.0, 0.0, 1.0, 0.0, np.inf]
        self._table = torch.tensor(table, dtype=torch.float32, device=self._table.device)

    # --- an update ------------------------------------------------------------------------------
    def prepare(self, stepping: Sequence[MemberStep]) -> None:
        """Before the backward: the host's rows for an update of the members in ``stepping``
        (the others stay as they are). One copy to the device."""
        n = self.capacity
        on = np.zeros(n)
        lr, wd, mom, clip = np.zeros(n), np.zeros(n), np.zeros(n), np.full(n, np.inf)
        for m in stepping:
            on[m.slot], lr[m.slot], wd[m.slot], mom[m.slot] = 1.0, m.lr, m.weight_decay, m.momentum
            if m.grad_clip > 0:
                clip[m.slot] = m.grad_clip
        self.clipping = bool(np.isfinite(clip).any())
        self.decay = bool(wd.any())
        if self.scaled:
            rows = {"active": on, "inactive": 1.0 - on, "neg_lr": -lr, "mom_m1": mom - 1.0}
        elif self.adam:
            b1, b2 = BETAS
            steps = self._steps_host + on  # this update's t for those that step
            t = np.maximum(steps, 1)
            rows = {"w1": (1 - b1) * on, "b2m": np.where(on > 0, b2, 1.0), "c2": (1 - b2) * on,
                    "neg": np.where(on > 0, -lr / (1.0 - b1**t), 0.0),
                    "bc2s": np.where(on > 0, (1.0 - b2**t) ** 0.5, 1.0)}
            self._steps_host = steps.astype(np.int64)
        else:
            rows = {"mom": np.where(on > 0, mom, 1.0), "on": on, "neg": -lr * on}
            self._steps_host = self._steps_host + on.astype(np.int64)
        rows.update(wd=wd, clip=clip)
        self._staging.send(np.stack([rows[k] for k in self._host_names]), self._host)

    def apply(self) -> None:
        """The update, from the gradients in :attr:`grad` (scaled by :attr:`scale` with a
        GradScaler) and the rows of :meth:`prepare`."""
        g, r = self.grad, self.row
        if self.scaled:
            self._finish_rows()
        elif self.clipping:
            g.mul_(self._clip_factor(r["clip"]).index_select(0, self.member_of))
        full = dict(zip(self._names, self._spread.index_select(1, self.member_of).unbind(0),
                        strict=False))
        p = self.params
        if self.scaled:
            g.mul_(full["unscale"])
        if self.decay:
            g = g.addcmul(p, full["wd"])
        if self.adam:
            m, v = self.states
            m.lerp_(g, full["w1"])
            v.mul_(full["b2m"]).addcmul_(g, g * full["c2"])
            p.addcdiv_(m * full["neg"], v.sqrt().div_(full["bc2s"]).add_(EPS))
        else:
            (buf,) = self.states
            buf.mul_(full["mom"]).addcmul_(g, full["on"])
            p.addcmul_(buf, full["neg"])

    def _clip_factor(self, clip: torch.Tensor, unscale: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """clip_grad_norm_'s factor per member (N,): min(1, max_norm / (norm + 1e-6)) of the
        (unscaled) gradient, with ``clip`` inf for members that do not clip (a factor of 1).
        The norm is taken as clip_grad_norm_ takes it: each parameter tensor's norm, then the
        norm of those (one reduction over all members' blocks per tensor)."""
        n = self.capacity
        norm = torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(self.grad[o:o + n * s].view(n, s), dim=1)
             for o, s in self.segments], dim=1), dim=1)
        if unscale is not None:
            norm = norm.mul_(unscale)
        # max_norm / (norm + 1e-6) as clip_grad_norm_ computes it: a Python float divided by a
        # tensor is the tensor's reciprocal times the float (Tensor.__rtruediv__).
        return torch.reciprocal(norm.add_(1e-6)).mul_(clip).clamp_(max=1.0)

    def _finish_rows(self) -> None:
        """With a GradScaler: which members step, their scales, and the rows that depend on it.

        A member whose (scaled) gradients are not all finite skips its step: a positive finite
        unscale cannot change which are finite, so they are checked before it. Its non-finite
        gradients become 0 and its zero coefficients keep everything of it where it was."""
        r, g = self.row, self.grad
        nan = torch.index_add(self._zeros, 0, self.member_of, g, alpha=0.0)  # NaN: not finite
        stepped = r["active"].masked_fill(nan.isnan(), 0.0)  # active and finite: takes its step
        g.nan_to_num_(0.0, 0.0, 0.0)
        torch.reciprocal(self.scale, out=r["unscale"])
        if self.clipping:  # the norm of the unscaled gradients, as unscale_ then clip
            r["unscale"].mul_(self._clip_factor(r["clip"], r["unscale"]))
        self._update_scales(r["inactive"], stepped)
        self.steps.add_(stepped)
        if self.adam:  # a member that skips reads column 0: every coefficient a no-op
            torch.index_select(self._table, 1, (self.steps * stepped).long(), out=self._table_rows)
            torch.div(r["neg_lr"], r["bc1"], out=r["neg"])
        else:
            torch.addcmul(self._one, stepped, r["mom_m1"], out=r["mom"])
            r["on"].copy_(stepped)
            torch.mul(r["neg_lr"], stepped, out=r["neg"])

    def _update_scales(self, inactive: torch.Tensor, stepped: torch.Tensor) -> None:
        """GradScaler.update per member: back off after a skipped step, grow after
        ``GROWTH_INTERVAL`` steps in a row (unless that would overflow: it then stays, and the
        count restarts, as GradScaler does); an inactive member's scale and count stay."""
        keep = stepped + inactive  # 0 where the step was skipped, else 1
        self.tracker.add_(stepped).mul_(keep)
        grow = self.tracker >= GROWTH_INTERVAL
        # Growing by 2 overflows exactly when the scale is above max / 2.
        grows = grow & (self.scale <= _MAX_GROWABLE)
        self.scale.mul_(torch.where(grows, self._growth, torch.lerp(self._backoff, self._one, keep)))
        self.tracker.masked_fill_(grow, 0.0)


class _Staging:
    """Host rows to the device, one copy per update: from pinned memory on CUDA, two buffers
    in turn so the host never writes one that a copy still reads. On the CPU the copy stays
    (it is the operator call a GPU makes here)."""

    def __init__(self, shape: tuple[int, ...], device: torch.device) -> None:
        cuda = device.type == "cuda"
        self._host = [torch.zeros(shape, pin_memory=cuda) for _ in range(2 if cuda else 1)]
        self._numpy = [h.numpy() for h in self._host]  # written without an operator call
        self._events: list[torch.cuda.Event | None] = [None] * len(self._host)
        self._next = 0

    def send(self, values: np.ndarray, dest: torch.Tensor) -> None:
        i = self._next
        self._next = (i + 1) % len(self._host)
        pending = self._events[i]
        if pending is not None:
            pending.synchronize()
        self._numpy[i][...] = values
        dest.copy_(self._host[i], non_blocking=dest.device.type == "cuda")
        if dest.device.type == "cuda":
            copied = torch.cuda.Event()
            copied.record()
            self._events[i] = copied
