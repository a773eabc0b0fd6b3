"""Several trials of one shape trained as one network: a fused group (issue 16).

On a GPU one trial of this 28k-parameter network is bound by launching kernels, not by the card
(BENCHMARKS.md, "GPU"). A :class:`FusedTrainer` trains up to ``capacity`` member configurations
as one network, so that each kernel serves every member. Each member is still its own trial: its
own learning rate (a pure function of its own progress, ``cfg.lr_at``), optimizer state, seed and
patch stream, GradScaler scale, divergence status, validations and best PSNR. It is driven one
interval at a time (:meth:`FusedTrainer.run_interval`), and its slots are emptied and refilled
between intervals, so a search can keep it full.

Members must share a *shape* (:meth:`FusedTrainer.shape_key`): what fixes tensor shapes and the
update's form (batch, accumulation, patch, frames, scale, residual, loss border, precision,
optimizer type), what fixes where validations fall (``epoch_samples``, ``validation_interval``)
and what they are trained and scored on (data, ``crop_border``, device). Per member:
``model_lr``, the milestones and gamma, ``momentum``, ``weight_decay``, ``grad_clip``, ``seed`` and
``epochs``. ``compile`` is refused (the group is its own fusion), and the group's own
``num_threads`` and ``cache_dir`` apply to every member.

How, and why this way (measured in BENCHMARKS.md, "Fused trials (issue 16): CPU"):

- **Model: grouped convolutions.** Member i's frames are channels ``[i*T, (i+1)*T)`` of one input;
  all three convolutions use ``groups=N`` (conv1 too: members draw different patches);
  ``pixel_shuffle`` then puts member i's output in channel i, and the residual's bicubic runs on
  all members' centre frames at once. The alternative, the members' stacked parameters under
  ``torch.func.vmap``, was measured beside it (``bench/fused_model.py``): same forward lowering,
  but more operator calls and no faster on the CPU, so grouped convolutions stay.
- **Parameters, gradients and optimizer state are flat buffers** (parameter-major: all members'
  conv1 weights, then conv1 biases, ...). The model's weights are views of the parameter buffer,
  ``torch.autograd.grad`` hands the gradients over and one ``_foreach_copy_`` puts them into the
  gradient buffer, and the update is a fixed number of elementwise kernels whatever N: each
  member's coefficients (lr, bias corrections, active flag, weight decay, momentum) are an
  N-vector spread over the buffer by one ``index_select``.
- **Adam and SGD** follow torch.optim's single-tensor formulas (weight decay added to the
  gradient, as ``make_optimizer`` builds them); Adam's second moment is written as a ``lerp``
  (one kernel less, equal up to rounding). Without a GradScaler the per-member bias corrections
  are computed on the host in double precision exactly as torch.optim does; with one they live on
  the device (a skipped step must not count, and the host does not know which steps skip).
- **grad_clip per member**: each member's gradient norm is one ``index_add`` over the buffer.
- **Precision: fp32, bf16 and fp16, each member with its own loss scale.** The members' loss
  scales are the ``grad_outputs`` of the backward (no extra kernel), unscaling is part of the
  per-member coefficients, a non-finite gradient in member i skips only member i's step (its
  weights, moments and step count stay bitwise as they were), and each scale backs off or grows
  as ``torch.amp.GradScaler`` does (same defaults). AMP is done by hand rather than by autocast,
  with autocast's casts for this network: one copy of the whole parameter buffer into the low
  precision per update instead of one cast per weight, and one cast of the gradients back.
- **Patches: each member draws exactly what a solo Trainer with its seed draws** on the device
  path (``trainable.sampler``: the same per-chunk generator seeds, the same numbers), but the
  deterministic part of the draw is done once for all members: each member's random numbers
  are kept for its current and next chunk, and the group gathers a window of batches for every
  member in one vectorised gather, wherever each member is in its own stream (members that
  joined later or resumed mid-way simply start their window elsewhere). A window is redrawn when
  it is used up or a member's position no longer matches it (after it joins or idles).
- **Isolation.** Nothing crosses members: the grouped convolutions, the per-member losses (the
  backward of a sum of per-member means gives each member its own gradient) and every update
  are per member. A member whose loss turns non-finite is caught at the same update counts as
  a solo Trainer catches it, ends "diverged", and leaves the other members bitwise unchanged.
- **Validation** scores each member's weights with :func:`trainable.evaluate.score_model` in a
  plain EarlyFusionESPCN, so its numbers are exactly those of those weights trained alone.

A member's checkpoint (:meth:`FusedTrainer.member_state`) is in Trainer format
(:meth:`Trainer.state_dict`): a solo Trainer loads it, ``analysis``/``export`` read its ``"model"``
as an EarlyFusionESPCN state dict, and :meth:`FusedTrainer.add` resumes from either kind.

Plain PyTorch, no Ray. Not thread-safe: drive one group from one thread.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from trainable.checkpoint import plain_keys
from trainable.config import TrainConfig
from trainable.errors import ConfigError
from trainable.evaluate import Scores, score_bicubic, score_model
from trainable.imaging import upscale_bicubic
from trainable.loop import (
    _DIVERGENCE_CHECK_EVERY,
    IntervalStats,
    ValidationResult,
    amp_dtype,
    checkpoint_state,
    conclude_interval,
    log_result,
    make_optimizer,
    resolve_device,
    resumed_status,
)
from trainable.model import EarlyFusionESPCN
from trainable.sampler import (
    _chunk_seed,
    _DeviceGather,
    _storage_device,
    chunk_batches,
    chunk_position,
)

if TYPE_CHECKING:
    from trainable.store import SplitData

log = logging.getLogger(__name__)

# Every TrainConfig field is in exactly one of these (a test holds them to it):
# what members must share...
SHARED_FIELDS = ("data", "data_lr", "frames", "scale", "patch_size", "loss_border", "residual",
                 "optimizer", "batch_size", "gradient_accumulation_steps", "use_amp", "amp_dtype",
                 "epoch_samples", "validation_interval", "crop_border", "device")
# ...what each member keeps its own...
MEMBER_FIELDS = ("model_lr", "lr_scheduler_milestones", "lr_scheduler_gamma", "momentum",
                 "weight_decay", "grad_clip", "seed", "epochs")
# ...and what the group's own configuration sets for all (``compile`` must be off).
GROUP_FIELDS = ("num_threads", "cache_dir", "compile")

# HR pixels of one window (all members' batches of it together): its int64 gather indices take
# 8 bytes per pixel for a moment (512 MiB here). 8 members at batch 16 on 32x32 LR patches fit a
# whole device chunk (32 batches) in a window; 32 members get 8 batches.
_WINDOW_HR_PIXELS = 2**26

# torch.optim.Adam's defaults (make_optimizer changes none of them) and GradScaler's.
_BETAS, _EPS = (0.9, 0.999), 1e-8
_INIT_SCALE, _GROWTH, _BACKOFF, _GROWTH_INTERVAL = 2.0**16, 2.0, 0.5, 2000
# EarlyFusionESPCN's parameters, in its parameters() order (the optimizer state's indices).
_KEYS = ("body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias", "sub_pixel.weight",
         "sub_pixel.bias")


@dataclass
class _Member:
    """The host-side state of one member: its progress and its record."""

    cfg: TrainConfig
    samples_seen: int = 0
    updates: int = 0  # optimizer steps taken (Adam's step count without a GradScaler)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_psnr: float = -math.inf
    best_epoch: int = 0
    status: str = "running"
    rng: dict[str, torch.Tensor] = field(default_factory=dict)  # the solo Trainer's RNG states

    @property
    def done(self) -> bool:
        return self.status != "running" or self.samples_seen >= self.cfg.total_samples


@dataclass(frozen=True)
class _Segment:
    key: str
    shape: tuple[int, ...]  # one member's (EarlyFusionESPCN's) shape
    size: int  # elements per member
    offset: int  # where the segment starts in the flat buffers


class FusedTrainer:
    """``capacity`` member configurations of one shape trained as one network.

    Slots are filled with :meth:`add` and emptied with :meth:`remove`, both between intervals;
    :meth:`run_interval` trains every running member to its next validation point and returns one
    ValidationResult per member, as :meth:`Trainer.run_interval` would have for it alone.
    """

    def __init__(self, shape: TrainConfig, train: SplitData, val: SplitData, capacity: int, *,
                 window_hr_pixels: int = _WINDOW_HR_PIXELS) -> None:
        if capacity < 1:
            raise ConfigError(f"The value of `capacity` is {capacity}, but must be >= 1.")
        if shape.compile:
            raise ConfigError("The value of `compile` is True, but a fused group runs its own "
                              "fused step: set compile: false.")
        if shape.frames > train.max_frames:
            raise ConfigError(f"The value of `frames` is {shape.frames}, but the data "
                              f"({train.source}) has clips of only {train.max_frames} frames.")
        self.shape, self.capacity = shape, capacity
        self.train_data, self.val_data = train, val
        self._key = self.shape_key(shape)
        self.device = resolve_device(shape.device)
        if shape.num_threads:
            torch.set_num_threads(shape.num_threads)
        dev, n = self.device, capacity
        dtype = amp_dtype(shape, dev)
        self._lowp = dtype if shape.use_amp else None
        self._scaled = self._lowp == torch.float16  # a loss scale per member, as GradScaler's
        self._adam = shape.optimizer == "adam"
        self._k = shape.gradient_accumulation_steps

        # --- flat buffers and the model's views of them ------------------------------------
        template = EarlyFusionESPCN(shape.frames, shape.scale, shape.residual)
        self._segments: list[_Segment] = []
        at = 0
        for key, p in zip(_KEYS, template.parameters(), strict=True):
            self._segments.append(_Segment(key, tuple(p.shape), p.numel(), at))
            at += n * p.numel()
        self._flat = torch.zeros(at, device=dev)
        self._grad = torch.zeros(at, device=dev)
        self._member_of = torch.cat([torch.arange(n, device=dev).repeat_interleave(s.size)
                                     for s in self._segments])  # (numel,) the member of each
        self._states = [torch.zeros_like(self._flat) for _ in range(2 if self._adam else 1)]
        weights = self._flat if self._lowp is None else torch.empty(at, dtype=self._lowp, device=dev)
        self._weights = weights  # what the forward reads: the parameters, or their low-precision copy
        self._leaves = [self._fused_view(weights, s).detach().requires_grad_() for s in self._segments]
        self._grad_views = [self._fused_view(self._grad, s) for s in self._segments]
        self._zeros = torch.zeros(n, device=dev)
        self._betas = torch.tensor([[_BETAS[0]], [_BETAS[1]]], device=dev)
        self._one_minus_betas = 1 - self._betas
        self._one = torch.ones((), device=dev)
        self._backoff = torch.full((n,), _BACKOFF, device=dev)
        # One backward seed per member: its loss scale (fp16) divided by the accumulation steps.
        self._seed_grad = torch.full((n,), 1.0 / self._k, device=dev)
        if self._scaled:
            self._scale = torch.full((n,), _INIT_SCALE, device=dev)
            self._tracker = torch.zeros(n, device=dev)
            self._steps = torch.zeros(n, device=dev)  # steps taken (not skipped), on the device
        self._loss_sum = torch.zeros(n, device=dev)

        # --- patches, members, validation ---------------------------------------------------
        self._streams = _Streams(train, shape, capacity, self.device, self._lowp,
                                 window_hr_pixels)
        self._members: list[_Member | None] = [None] * n
        self._eval_model = EarlyFusionESPCN(shape.frames, shape.scale, shape.residual).to(dev)
        self._bicubic: Scores | None = None

    # --- the shape ------------------------------------------------------------------------------
    @staticmethod
    def shape_key(cfg: TrainConfig) -> tuple[tuple[str, Any], ...]:
        """What members of one group must share (see the module docstring): the shared fields,
        with the device and AMP precision resolved ('auto' -> what runs)."""
        device = resolve_device(cfg.device)
        dtype = amp_dtype(cfg, device) if cfg.use_amp else None
        values = {k: getattr(cfg, k) for k in SHARED_FIELDS}
        values.update(device=str(device), amp_dtype=str(dtype).removeprefix("torch."))
        return tuple(values.items())

    def _check_shape(self, cfg: TrainConfig) -> None:
        if cfg.compile:
            raise ConfigError("The value of `compile` is True, but a fused group runs its own "
                              "fused step: set compile: false.")
        mine, theirs = dict(self._key), dict(self.shape_key(cfg))
        differ = [k for k in mine if mine[k] != theirs[k]]
        if differ:
            k = differ[0]
            raise ConfigError(f"The value of `{k}` is {theirs[k]!r}, but every member of this fused "
                              f"group must have {mine[k]!r} (members share: "
                              f"{', '.join(SHARED_FIELDS)}).")

    # --- slots ------------------------------------------------------------------------------------
    @property
    def members(self) -> dict[int, TrainConfig]:
        """The occupied slots and their configurations."""
        return {i: m.cfg for i, m in enumerate(self._members) if m is not None}

    def free_slots(self) -> list[int]:
        return [i for i, m in enumerate(self._members) if m is None]

    def status(self, slot: int) -> str:
        return self._member(slot).status

    def samples_seen(self, slot: int) -> int:
        return self._member(slot).samples_seen

    def done(self, slot: int) -> bool:
        """True when the member has nothing left to train (completed or diverged)."""
        return self._member(slot).done

    def add(self, slot: int, cfg: TrainConfig, state: dict[str, Any] | None = None) -> None:
        """Fill the empty ``slot`` with a member trained as ``cfg`` from its start, or from
        ``state``, a Trainer-format checkpoint (:meth:`Trainer.state_dict`, or
        :meth:`member_state` of any group): it then continues exactly from it, as a solo Trainer
        loading it would (``cfg`` wins over the checkpoint's own config, as there)."""
        if not 0 <= slot < self.capacity:
            raise ConfigError(f"The value of `slot` is {slot}, but must be in [0, {self.capacity}).")
        if self._members[slot] is not None:
            raise ConfigError(f"The value of `slot` is {slot}, but that slot is taken: remove() "
                              f"its member first.")
        self._check_shape(cfg)
        member = _Member(cfg)
        with torch.random.fork_rng(devices=[]):
            # What a solo Trainer's constructor does with the global RNG, without touching ours.
            torch.manual_seed(cfg.seed)
            fresh = EarlyFusionESPCN(cfg.frames, cfg.scale, cfg.residual)
            member.rng = {"torch_rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            member.rng["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        weights = fresh.state_dict()
        seed, drawn = cfg.seed, 0
        self._reset_slot(slot)
        if state is not None:
            weights = plain_keys(state["model"])
            self._load_optimizer(slot, state["optimizer"], member)
            self._load_scaler(slot, state["scaler"])
            seed, drawn = chunk_position(state["sampler"])
            member.samples_seen = int(state["samples_seen"])
            member.history = list(state["history"])
            member.best_psnr, member.best_epoch = float(state["best_psnr"]), int(state["best_epoch"])
            member.status = resumed_status(state, cfg)
            member.rng = {k: state[k] for k in ("torch_rng", "cuda_rng") if k in state}
        with torch.no_grad():
            for s in self._segments:
                self._member_view(self._flat, s, slot).copy_(weights[s.key])
        self._streams.assign(slot, seed, drawn)
        self._members[slot] = member

    def remove(self, slot: int) -> None:
        """Empty ``slot`` (take :meth:`member_state` first to keep the member)."""
        self._member(slot)
        self._members[slot] = None
        self._reset_slot(slot)
        self._streams.release(slot)

    def _reset_slot(self, slot: int) -> None:
        """Zero a slot's weights and optimizer state, and give it a fresh loss scale: an empty
        slot computes finite numbers that nothing reads."""
        with torch.no_grad():
            for buf in (self._flat, *self._states):
                for s in self._segments:
                    self._member_view(buf, s, slot).zero_()
            if self._scaled:
                self._scale[slot], self._tracker[slot], self._steps[slot] = _INIT_SCALE, 0.0, 0.0

    def _member(self, slot: int) -> _Member:
        if not 0 <= slot < self.capacity or self._members[slot] is None:
            raise ConfigError(f"The value of `slot` is {slot}, but it holds no member "
                              f"(members: {sorted(self.members)}).")
        return self._members[slot]

    # --- views of the flat buffers ----------------------------------------------------------------
    def _fused_view(self, buf: torch.Tensor, s: _Segment) -> torch.Tensor:
        """All members' parameter ``s`` as the grouped convolution takes it: (N * out, ...)."""
        n = self.capacity
        return buf[s.offset:s.offset + n * s.size].view(n * s.shape[0], *s.shape[1:])

    def _member_view(self, buf: torch.Tensor, s: _Segment, slot: int) -> torch.Tensor:
        at = s.offset + slot * s.size
        return buf[at:at + s.size].view(s.shape)

    # --- training ---------------------------------------------------------------------------------
    def run_interval(self) -> dict[int, ValidationResult]:
        """Train every running member up to its next validation point (as
        :meth:`Trainer.run_interval` does for one), validate each, and return their results by
        slot. Members that are done (completed, diverged) are not trained and get no result."""
        running = [i for i, m in enumerate(self._members) if m is not None and not m.done]
        if not running:
            return {}
        targets = {}
        for i in running:
            cfg, m = self._members[i].cfg, self._members[i]
            epoch = m.samples_seen // cfg.epoch_samples
            next_epoch = min((epoch // cfg.validation_interval + 1) * cfg.validation_interval,
                             cfg.epochs)
            spu = cfg.samples_per_update
            targets[i] = max(0, -(-(next_epoch * cfg.epoch_samples - m.samples_seen) // spu))
        stats = self._train(targets)
        results = {}
        for i in running:
            m = self._members[i]
            with torch.no_grad():
                for s in self._segments:
                    self._eval_model.get_parameter(s.key).copy_(self._member_view(self._flat, s, i))
            result = conclude_interval(
                m.cfg, stats[i], samples_seen=m.samples_seen, status=m.status,
                best=(m.best_psnr, m.best_epoch), bicubic=self.bicubic_scores(),
                score=lambda cfg=m.cfg: score_model(self._eval_model, self.val_data,
                                                    frames=cfg.frames, crop_border=cfg.crop_border,
                                                    device=self.device))
            m.status, m.best_psnr, m.best_epoch = result.status, result.best_psnr, result.best_epoch
            m.history.append(result.to_dict())
            log_result(result)
            results[i] = result
        return results

    def bicubic_scores(self) -> Scores:
        if self._bicubic is None:
            self._bicubic = score_bicubic(self.val_data, frames=self.shape.frames,
                                          crop_border=self.shape.crop_border, device=self.device)
        return self._bicubic

    def _train(self, updates: dict[int, int]) -> dict[int, IntervalStats]:
        """``updates[i]`` optimizer updates for each member ``i``, all in lock step (a member
        with fewer idles, unchanged, once it has had its own). Per member, what Trainer's
        train_until returns, with the group's wall time: the members shared it."""
        steps = max(updates.values())
        done = dict.fromkeys(updates, 0)
        diverged: set[int] = set()
        self._loss_sum.zero_()
        data_time = 0.0
        start = time.perf_counter()
        for t in range(steps):
            active = [i for i in updates if t < updates[i] and i not in diverged]
            if not active:
                break
            t0 = time.perf_counter()
            horizon = max(updates[i] for i in active) - t  # updates left in this interval
            batches = self._streams.next_batches(active, self._k, horizon * self._k)
            data_time += time.perf_counter() - t0
            self._update(batches, active)
            for i in active:
                m = self._members[i]
                m.samples_seen += m.cfg.samples_per_update
                m.updates += 1
                done[i] += 1
            if (t + 1) % _DIVERGENCE_CHECK_EVERY == 0:  # where a solo Trainer looks too
                finite = torch.isfinite(self._loss_sum).tolist()
                diverged.update(i for i in active if not finite[i])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        means = (self._loss_sum / self._k).tolist()
        finite_weights = self._finite_members()
        return {i: IntervalStats(loss=means[i] / max(done[i], 1), updates=done[i], seconds=elapsed,
                                 data_seconds=data_time,
                                 diverged=(i in diverged or not math.isfinite(means[i])
                                           or not finite_weights[i]))
                for i in updates}

    def _finite_members(self) -> list[bool]:
        """Per member: are all its weights finite (one reduction for all members)."""
        with torch.no_grad():
            nan = torch.index_add(self._zeros, 0, self._member_of, self._flat, alpha=0.0)
        return (~nan.isnan()).tolist()

    def _forward(self, lr: torch.Tensor, lr_lowp: torch.Tensor | None) -> torch.Tensor:
        """All members at once: (B, N*T, p, p) -> (B, N, p*s, p*s), float32."""
        n, t, s = self.capacity, self.shape.frames, self.shape.scale
        w1, b1, w2, b2, w3, b3 = self._leaves
        x = lr if lr_lowp is None else lr_lowp
        y = torch.tanh(F.conv2d(x, w1, b1, padding=2, groups=n))
        y = torch.tanh(F.conv2d(y, w2, b2, padding=1, groups=n))
        out = F.pixel_shuffle(F.conv2d(y, w3, b3, padding=1, groups=n), s)
        if self.shape.residual:
            # As EarlyFusionESPCN under autocast: the bicubic in fp32, added in the net's dtype.
            out = out + upscale_bicubic(lr[:, t // 2::t], s).to(out.dtype)
        return out.float()

    def _losses(self, out: torch.Tensor, hr: torch.Tensor, mask: torch.Tensor | None,
                count: torch.Tensor | None) -> torch.Tensor:
        """Each member's mean loss (N,), train_step's formula: the backward of their sum gives
        each member the gradient of its own loss."""
        err = F.mse_loss(out, hr, reduction="none")
        if mask is None:
            return err.mean((0, 2, 3))
        b, n, hh, ww = err.shape
        p, s = hh // self.shape.scale, self.shape.scale
        return err.view(b, n, p, s, p, s).mul(mask).sum((0, 2, 3, 4, 5)) / count

    def _update(self, batches: list[tuple[torch.Tensor, ...]], active: list[int]) -> None:
        """One optimizer update of every member over ``k`` micro-batches; members not in
        ``active`` (idle, diverged, empty slots) are left exactly as they are."""
        host = self._host_rows(active)
        a, *rows = host.unbind(0)
        if self._scaled:
            seed_grad = self._scale * (1.0 / self._k) if self._k > 1 else self._scale
        else:
            seed_grad = self._seed_grad
        if self._lowp is not None:
            with torch.no_grad():
                self._weights.copy_(self._flat)
        for j, (lr, lr_lowp, hr_u8, *masked) in enumerate(batches):
            out = self._forward(lr, lr_lowp)
            hr = torch.div(hr_u8, 255.0)
            losses = self._losses(out, hr, *(masked or (None, None)))
            grads = torch.autograd.grad(losses, self._leaves, grad_outputs=seed_grad)
            with torch.no_grad():
                (torch._foreach_copy_ if j == 0 else torch._foreach_add_)(self._grad_views, grads)
                self._loss_sum.addcmul_(losses, a)
        cfgs = [self._members[i].cfg for i in active]
        clipping = any(c.grad_clip > 0 for c in cfgs)
        with torch.no_grad():
            if self._scaled:
                spread = self._device_rows(a, rows, clipping)
                full = torch.stack(spread).index_select(1, self._member_of).unbind(0)
            else:
                full = host.index_select(1, self._member_of).unbind(0)[1:-1]  # not `on`, `clip`
                if clipping:
                    self._grad.mul_(self._clip_factor(rows[-1]).index_select(0, self._member_of))
            self._apply(full, decay=any(c.weight_decay for c in cfgs))

    def _clip_factor(self, clip: torch.Tensor, unscale: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """clip_grad_norm_'s factor per member (N,): min(1, max_norm / (norm + 1e-6)) of the
        (unscaled) gradient, with ``clip`` inf for members that do not clip (a factor of 1)."""
        norm = torch.index_add(self._zeros, 0, self._member_of, self._grad.square()).sqrt_()
        if unscale is not None:
            norm = norm.mul_(unscale)
        return (clip / norm.add_(1e-6)).clamp_(max=1.0)

    # The per-member coefficients of one update are rows of N numbers, spread over the flat
    # buffers by one index_select. Adam: m += w1 (g - m); v = b2m v + g (c2 g);
    # p += neg m / (sqrt(v) / bc2s + eps), with w1 = 1 - beta1, b2m = beta2, c2 = 1 - beta2,
    # neg = -lr / (1 - beta1^t), bc2s = sqrt(1 - beta2^t) for a member that steps, and
    # w1 = c2 = neg = 0, b2m = bc2s = 1 (every buffer exactly unchanged) for one that does not.
    # SGD: buf = mom buf + on g; p += neg buf, with (mom, on, neg) = (momentum, 1, -lr) or (1, 0, 0).
    # Then weight decay per member (g += wd p), as torch.optim adds it.
    def _host_rows(self, active: list[int]) -> torch.Tensor:
        """Per-member numbers the host knows, as one (rows, N) tensor (one copy to the device):
        ``[on, coefficients..., wd, clip]``. Without a GradScaler the coefficients are final,
        in double precision as torch.optim computes them; with one they are finished on the
        device (:meth:`_device_rows`)."""
        n = self.capacity
        on, lr, wd, mom = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
        clip = np.full(n, np.inf)
        on[active] = 1.0
        for i in active:
            cfg = self._members[i].cfg
            lr[i] = cfg.lr_at(self._members[i].samples_seen)
            wd[i], mom[i] = cfg.weight_decay, cfg.momentum
            if cfg.grad_clip > 0:
                clip[i] = cfg.grad_clip
        if self._scaled:
            coef = [-lr, mom - 1.0]
        elif self._adam:
            (b1, b2), steps = _BETAS, np.zeros(n)
            for i in active:
                steps[i] = self._members[i].updates + 1
            bc1 = 1.0 - b1 ** np.maximum(steps, 1)
            coef = [(1 - b1) * on, np.where(on > 0, b2, 1.0), (1 - b2) * on,
                    np.where(on > 0, -lr / bc1, 0.0),
                    np.where(on > 0, (1.0 - b2 ** np.maximum(steps, 1)) ** 0.5, 1.0)]
        else:
            coef = [np.where(on > 0, mom, 1.0), on, -lr * on]
        h = torch.from_numpy(np.stack([on, *coef, wd, clip]).astype(np.float32))
        return h.to(self.device, non_blocking=True) if self.device.type != "cpu" else h

    def _device_rows(self, a: torch.Tensor, rows: list[torch.Tensor], clipping: bool
                     ) -> list[torch.Tensor]:
        """With a GradScaler, per member as GradScaler + torch.optim: a member whose gradients
        are not all finite skips its step (found on the scaled gradients: a positive finite
        unscale cannot change which are finite), its scale backs off or grows, and the rows to
        spread are finished here: ``[coefficients..., wd, gradient multiplier]``. The skipped
        members' gradients become exactly 0, so nothing of theirs moves."""
        neg_lr, mom_m1, wd, clip = rows
        g = self._grad
        nan = torch.index_add(self._zeros, 0, self._member_of, g, alpha=0.0)
        stepped = torch.where(nan.isnan(), 0.0, a)  # active and finite: takes its step
        g.nan_to_num_(0.0, 0.0, 0.0)
        unscale = self._scale.reciprocal()
        multiplier = unscale * stepped  # 0 where skipped
        if clipping:  # the norm of the unscaled gradients, as unscale_ then clip_grad_norm_
            multiplier.mul_(self._clip_factor(clip, unscale))
        self._update_scales(a, stepped)
        self._steps.add_(stepped)
        if self._adam:
            bc1, bc2 = (1 - torch.pow(self._betas, self._steps.clamp(min=1))).unbind(0)
            w1, c2 = (self._one_minus_betas * stepped).unbind(0)
            b2m = torch.lerp(self._one, self._betas[1], stepped)
            coef = [w1, b2m, c2, neg_lr * stepped / bc1, bc2.sqrt()]
        else:
            coef = [torch.addcmul(self._one, stepped, mom_m1), stepped, neg_lr * stepped]
        return [*coef, wd, multiplier]

    def _update_scales(self, a: torch.Tensor, stepped: torch.Tensor) -> None:
        """GradScaler.update per member: back off after a skipped step, grow after
        ``_GROWTH_INTERVAL`` steps in a row (unless the scale would overflow); an inactive
        member's scale and count stay."""
        keep = stepped - a + 1  # 0 where the step was skipped, else 1
        self._tracker.add_(stepped).mul_(keep)
        grow = self._tracker >= _GROWTH_INTERVAL
        new = self._scale * torch.where(grow, _GROWTH, torch.lerp(self._backoff, self._one, keep))
        self._scale.copy_(torch.where(new.isfinite(), new, self._scale))
        self._tracker.masked_fill_(grow, 0.0)

    def _apply(self, full: list[torch.Tensor], *, decay: bool) -> None:
        """The update over the flat buffers from the spread rows: a fixed number of elementwise
        kernels for all members."""
        p, g = self._flat, self._grad
        if self._scaled:
            *full, multiplier = full
            g.mul_(multiplier)
        *coef, wd = full
        if decay:
            g = g.addcmul(p, wd)
        if self._adam:
            m, v = self._states
            w1, b2m, c2, neg, bc2s = coef
            m.lerp_(g, w1)
            v.mul_(b2m).addcmul_(g, g * c2)
            p.addcmul_(m / v.sqrt().div_(bc2s).add_(_EPS), neg)
        else:
            (buf,) = self._states
            mom, on, neg = coef
            buf.mul_(mom).addcmul_(g, on)
            p.addcmul_(buf, neg)

    # --- checkpoints ------------------------------------------------------------------------------
    def member_state(self, slot: int) -> dict[str, Any]:
        """Member ``slot``'s checkpoint in Trainer format (:meth:`Trainer.state_dict`): a solo
        Trainer loads it and continues from it, :meth:`add` resumes it in any group, and its
        ``"model"`` is an EarlyFusionESPCN state dict."""
        m = self._member(slot)
        cfg = m.cfg
        model = EarlyFusionESPCN(cfg.frames, cfg.scale, cfg.residual).to(self.device)
        with torch.no_grad():
            for s in self._segments:
                model.get_parameter(s.key).copy_(self._member_view(self._flat, s, slot))
        optimizer = make_optimizer(cfg, model.parameters(), self.device)
        steps = int(self._steps[slot].item()) if self._scaled else m.updates
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_at(max(m.samples_seen - cfg.samples_per_update, 0))
        if steps > 0 and (self._adam or cfg.momentum != 0):
            for s, p in zip(self._segments, model.parameters(), strict=True):
                views = [self._member_view(b, s, slot).clone() for b in self._states]
                optimizer.state[p] = ({"step": torch.tensor(float(steps)), "exp_avg": views[0],
                                       "exp_avg_sq": views[1]} if self._adam
                                      else {"momentum_buffer": views[0]})
        scaler = {}
        if self._scaled:
            scaler = {"scale": float(self._scale[slot]), "growth_factor": _GROWTH,
                      "backoff_factor": _BACKOFF, "growth_interval": _GROWTH_INTERVAL,
                      "_growth_tracker": int(self._tracker[slot])}
        return checkpoint_state(
            cfg, model=model.state_dict(), optimizer=optimizer.state_dict(), scaler=scaler,
            sampler=self._streams.state_dict(slot), rng=dict(m.rng), samples_seen=m.samples_seen,
            history=m.history, best_psnr=m.best_psnr, best_epoch=m.best_epoch, status=m.status)

    def _load_optimizer(self, slot: int, state: dict[str, Any], member: _Member) -> None:
        """A Trainer-format optimizer state into the slot's part of the flat state buffers."""
        saved = state.get("state", {})
        want = ("exp_avg", "exp_avg_sq") if self._adam else ("momentum_buffer",)
        with torch.no_grad():
            for j, s in enumerate(self._segments):
                entry = saved.get(j, saved.get(str(j), {}))
                if not entry:
                    continue  # not stepped yet (or SGD without momentum): zeros
                missing = [k for k in want if k not in entry]
                if missing:
                    raise ConfigError(f"The checkpoint's optimizer state has {sorted(entry)}, but a "
                                      f"{self.shape.optimizer} member needs {list(want)}.")
                for buf, k in zip(self._states, want, strict=True):
                    self._member_view(buf, s, slot).copy_(entry[k])
                # Adam: its step count; SGD: only whether it has a momentum buffer.
                member.updates = int(float(entry["step"])) if self._adam else 1
            if self._scaled:
                self._steps[slot] = float(member.updates)

    def _load_scaler(self, slot: int, state: dict[str, Any]) -> None:
        # As checkpoint.load_scaler: a state saved without fp16 ({}) starts fresh.
        if self._scaled and state:
            self._scale[slot] = float(state["scale"])
            self._tracker[slot] = float(state["_growth_tracker"])


class _Streams:
    """Every member's patch stream, gathered for all members at once.

    Member i draws what a solo PatchSampler (device path) seeded ``seed_i`` draws: chunk c of
    its stream comes from a generator seeded ``_chunk_seed(seed_i, c)``. Each member's random
    numbers (targets, flips, crops) for the chunks its window touches are kept in a ring; a
    window of ``W`` batches for every member is then one vectorised gather (the index arithmetic
    and the take of _DeviceGather) from wherever each member is in its own stream.
    """

    def __init__(self, data: SplitData, shape: TrainConfig, capacity: int, device: torch.device,
                 lowp: torch.dtype | None, window_hr_pixels: int) -> None:
        self.n, self.b = capacity, shape.batch_size
        self.frames, self.scale, self.patch = shape.frames, shape.scale, shape.patch_size
        self.device, self.lowp = device, lowp
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
        self._window: list[tuple[torch.Tensor | None, ...]] | None = None
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
        return {"kind": "torch-chunks", "seed": int(self.seeds[slot]),
                "drawn": int(self.drawn[slot])}

    def next_batches(self, active: list[int], k: int, horizon: int
                     ) -> list[tuple[torch.Tensor | None, ...]]:
        """The next ``k`` batches of every member, each (LR float, LR in the low precision or
        None, HR uint8[, loss mask, mask count]) over all members; only ``active`` members'
        streams advance (the others' rows are computed and ignored). A new window covers at
        most ``horizon`` batches (what is left to train before the next validation)."""
        if (self._window is None or self._row + k > len(self._window)
                or any(self.drawn[i] != self._base[i] + self._row for i in active)):
            self._draw_window(min(self.window, max(horizon, k)))
        rows = self._window[self._row:self._row + k]
        self._row += k
        self.drawn[active] += k
        return rows

    def _draw_window(self, w: int) -> None:
        n, b, c, r = self.n, self.b, self.chunk, self.slots
        start = self.drawn * b  # each member's first sample of the window
        for i in range(n):
            if self.seeds[i] is None:
                continue  # an empty slot gathers sample 0, unflipped, and nothing reads it
            for chunk in range(start[i] // c, (start[i] + w * b - 1) // c + 1):
                if self.held[i, chunk % r] != chunk:
                    self.gather.generator.manual_seed(_chunk_seed(self.seeds[i], chunk))
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
        lr = torch.div(lr.to(self.device).view(w, b, n * t, p, p), 255.0)
        parts = [lr.unbind(0), lr.to(self.lowp).unbind(0) if self.lowp else (None,) * w,
                 hr.to(self.device).view(w, b, n, p * s, p * s).unbind(0)]
        if mask:
            m = mask[0].to(self.device).view(w, b, n, p, 1, p, 1).float()
            count = m.sum((1, 3, 4, 5, 6)).mul_(s * s).clamp_(min=1.0)
            parts += [m.unbind(0), count.unbind(0)]
        self._window = list(zip(*parts, strict=True))
        self._base = self.drawn.copy()
        self._row = 0
