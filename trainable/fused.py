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

How, and why this way (figures in BENCHMARKS.md, "Fused trials (issue 16): CPU"):

- **Model on a card: grouped convolutions.** Member i's frames are channels ``[i*T, (i+1)*T)``
  of one input; all three convolutions use ``groups=N`` (conv1 too: members draw different
  patches), and ``pixel_shuffle`` puts member i's output in channel i. The alternative, the
  members' stacked parameters under ``torch.func.vmap`` (PyTorch's ensembling recipe), was
  measured beside it (``bench/fused_model.py``): vmap lowers to the same grouped convolutions
  plus reshapes, 93 operator calls per forward + backward against 22, and no faster on the CPU.
- **Model on the CPU: each member's own network.** A grouped convolution is no cheaper there
  than the members' own (8 members cost 11x one), and it rounds the last bits differently from
  one network's. So on the CPU each stepping member runs train_step's forward and loss
  (:func:`trainable.loop.micro_batch_loss`, autocast included) on a plain EarlyFusionESPCN whose
  parameters are views of the flat buffer, on the batches a solo PatchSampler yields: with the
  update below, a member trains bit for bit as its solo Trainer (fp16 Adam to float rounding:
  docs/training.md, "Reproducing a trial"). ``grouped=True`` runs a card's form on the CPU.
- **Flat buffers** (``trainable.fused_update``): parameters, gradients and optimizer states are
  each one buffer; the convolutions' weights are views of it, ``torch.autograd.grad`` hands the
  gradients over (one ``_foreach_copy_`` into the buffer) and Adam/SGD with per-member
  coefficients is a fixed number of elementwise kernels whatever N, each in torch.optim's
  single-tensor order of operations. fp16 gives each member its own loss scale, as a GradScaler
  each: a non-finite gradient skips only that member's step.
- **Mixed precision by hand** (grouped), with autocast's casts for this network: the parameter
  buffer is copied into the low precision once per update (not one cast per weight), the
  residual's bicubic (fp32) is added in the low precision, the loss is taken in fp32.
- **Patches** (``trainable.fused_draw``): each member draws exactly what a solo Trainer with its
  seed draws on the device path; the deterministic part of the draw, the float conversion and
  (grouped) the residual's bicubic are done once for a window of batches of all members.
- **Losses** (grouped): each member's summed squared error stays in its own channel and the
  backward is seeded per member with its loss weight (and its loss scale), so each member's
  gradient is the one of its own mean loss, as in train_step, with no extra kernel for the mean.
- **Isolation.** Nothing crosses members: the grouped convolutions, the per-member losses and
  every update are per member. A member whose loss turns non-finite is caught at the same
  update counts as a solo Trainer catches it (every 32 updates and at an interval's end), ends
  "diverged", and leaves the other members bitwise unchanged. Members that have fewer updates
  to their next validation than others (uneven intervals, another budget) idle, exactly
  unchanged, until the group's interval ends.
- **Validation** scores each member's weights with :func:`trainable.evaluate.score_model` in a
  plain EarlyFusionESPCN: its numbers are exactly those of those weights, one member at a time.

A member's checkpoint (:meth:`FusedTrainer.member_state`) is in Trainer format
(:meth:`Trainer.state_dict`): a solo Trainer loads it, ``analysis``/``export`` read its ``"model"``
as an EarlyFusionESPCN state dict, and :meth:`FusedTrainer.add` resumes from either kind.

Plain PyTorch, no Ray. Not thread-safe: drive one group from one thread.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from trainable import graphed
from trainable.checkpoint import plain_keys
from trainable.config import TrainConfig
from trainable.errors import ConfigError
from trainable.evaluate import Scores, bicubic_scores, score_model
from trainable.fused_draw import WINDOW_HR_PIXELS, Batch, MemberStreams
from trainable.fused_graph import FusedStepGraph
from trainable.fused_update import FlatUpdate, MemberStep
from trainable.loop import (
    _DIVERGENCE_CHECK_EVERY,
    IntervalStats,
    amp_dtype,
    autocast_for,
    checkpoint_state,
    conclude_interval,
    initial_weights,
    log_result,
    make_optimizer,
    micro_batch_loss,
    resolve_device,
    resumed_status,
)
from trainable.model import EarlyFusionESPCN
from trainable.result import ValidationResult
from trainable.sampler import chunk_position

if TYPE_CHECKING:
    from trainable.store import SplitData

log = logging.getLogger(__name__)

# Every TrainConfig field is in exactly one of these (a test holds them to it):
# what members must share...
SHARED_FIELDS = ("data", "data_lr", "frames", "scale", "patch_size", "loss_border", "residual",
                 "optimizer", "batch_size", "gradient_accumulation_steps", "use_amp", "amp_dtype",
                 "epoch_samples", "validation_interval", "crop_border", "device")
# ...what each member keeps its own (its LR schedule is whatever cfg.lr_at computes; its starting
# weights, init_weights; nesterov only as False: the fused SGD has no Nesterov momentum; fields of
# a TrainConfig this version does not have are left out)...
MEMBER_FIELDS = tuple(f for f in (
    "model_lr", "lr_schedule", "warmup_fraction", "lr_scheduler_milestones", "lr_scheduler_gamma",
    "lr_min_fraction", "lr_cosine_end", "lr_restart_period", "lr_restart_mult", "momentum",
    "weight_decay", "grad_clip", "seed", "epochs", "early_stop_patience", "init_weights",
    "nesterov")
    if f in {f.name for f in dataclasses.fields(TrainConfig)})
# ...and what the group's own configuration sets for all (``compile`` must be off;
# ``cuda_graph`` replays the group's update as one CUDA graph, trainable.fused_graph; a group
# never scores the test split, so ``test_clips`` changes nothing in it).
GROUP_FIELDS = ("num_threads", "cache_dir", "compile", "cuda_graph", "test_clips")

# EarlyFusionESPCN's parameters, in its parameters() order (the optimizer state's indices).
_KEYS = ("body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias", "sub_pixel.weight",
         "sub_pixel.bias")


@dataclass
class _Member:
    """The host-side state of one member: its progress and its record."""

    cfg: TrainConfig
    samples_seen: int = 0
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

    ``grouped``: every member's convolutions in one grouped kernel (default: on a card) or each
    member through its own network (default: on the CPU); tests run the card's form on the CPU.
    """

    def __init__(self, shape: TrainConfig, train: SplitData, val: SplitData, capacity: int, *,
                 window_hr_pixels: int = WINDOW_HR_PIXELS, grouped: bool | None = None) -> None:
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
        graphed.check_device(shape, self.device)
        if shape.num_threads:
            torch.set_num_threads(shape.num_threads)
        dev, n = self.device, capacity
        self._lowp = amp_dtype(shape, dev) if shape.use_amp else None
        self._k = shape.gradient_accumulation_steps

        # --- flat buffers and the model's views of them ------------------------------------
        template = EarlyFusionESPCN(shape.frames, shape.scale, shape.residual)
        self._segments: list[_Segment] = []
        at = 0
        for key, p in zip(_KEYS, template.parameters(), strict=True):
            self._segments.append(_Segment(key, tuple(p.shape), p.numel(), at))
            at += n * p.numel()
        member_of = torch.cat([torch.arange(n, device=dev).repeat_interleave(s.size)
                               for s in self._segments])  # (numel,) the member of each element
        # fp16: a loss scale per member, as a GradScaler each.
        self._opt = FlatUpdate(shape.optimizer, n, member_of,
                               [(s.offset, s.size) for s in self._segments],
                               scaled=self._lowp == torch.float16)
        self._flat, self._grad = self._opt.params, self._opt.grad
        # On the CPU each member steps through its own plain network, with the operators a solo
        # Trainer's train_step runs (``_member_steps``): a grouped convolution is no cheaper
        # there than the members' own, and a member then trains bit for bit as it does alone.
        # On a card one grouped convolution serves every member.
        self._grouped = dev.type != "cpu" if grouped is None else grouped
        # What the forward reads: the parameters, or their copy in the low precision (grouped;
        # per member autocast casts them, as in a solo Trainer).
        weights = (torch.empty(at, dtype=self._lowp, device=dev)
                   if self._lowp is not None and self._grouped else self._flat)
        self._weights = weights
        self._leaves = [self._fused_view(weights, s).detach().requires_grad_()
                        for s in self._segments] if self._grouped else []
        self._grad_views = [self._fused_view(self._grad, s) for s in self._segments]
        # Per member: its parameters as leaves (views of the flat buffer), by name, and its
        # gradients' place in the flat buffer.
        self._member_params = [{s.key: self._member_view(self._flat, s, i).detach()
                                .requires_grad_() for s in self._segments}
                               for i in range(n)] if not self._grouped else []
        self._member_grads = [[self._member_view(self._grad, s, i) for s in self._segments]
                              for i in range(n)]
        self._stepping: list[int] = []  # the members that step in the update being prepared
        self._zeros = torch.zeros(n, device=dev)
        # Per-member losses are sums kept in the member's channel, (1, N, 1, 1[, 1, 1]) with a
        # loss border; these views of N-vectors have that shape.
        sum_shape = (1, n, 1, 1) if shape.loss_border == 0 else (1, n, 1, 1, 1, 1)
        hr_pixels = shape.batch_size * (shape.patch_size * shape.scale) ** 2
        # Without a border a member's mean loss is its sum / hr_pixels (its seed in the backward).
        self._unit = 1.0 / (self._k * hr_pixels)
        self._unit_seed = torch.full(sum_shape, self._unit, device=dev)
        # A member's summed loss (``_loss_sum``) times this is its sum of per-update losses; per
        # member the sum is that already, as train_until's.
        self._loss_unit = (1.0 if not self._grouped else
                           (1.0 / hr_pixels if shape.loss_border == 0 else 1.0) / self._k)
        self._scale_view = self._opt.scale.view(sum_shape) if self._opt.scaled else None
        self._loss_sum = torch.zeros(n, device=dev)
        self._loss_view = self._loss_sum.view(sum_shape)

        # --- patches, members, validation ---------------------------------------------------
        # Per member, the batches are a solo PatchSampler's (fp32 LR, HR target): the network
        # adds the residual itself.
        self._streams = MemberStreams(train, shape, capacity, self.device,
                                      self._lowp if self._grouped else None, window_hr_pixels,
                                      residual=shape.residual and self._grouped)
        self._members: list[_Member | None] = [None] * n
        self._eval_model = EarlyFusionESPCN(shape.frames, shape.scale, shape.residual).to(dev)
        self._bicubic: Scores | None = None
        self._graph = (FusedStepGraph(self, capture=graphed._CAPTURE) if shape.cuda_graph
                       else None)

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
        if cfg.nesterov:
            raise ConfigError("The value of `nesterov` is True, but a fused group's SGD update "
                              "has no Nesterov momentum: train it solo (resources.fuse 1).")
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
        weights = fresh.state_dict() if cfg.init_weights is None else initial_weights(cfg)
        seed, drawn = cfg.seed, 0
        self._opt.reset(slot)
        if state is not None:
            weights = plain_keys(state["model"])
            self._load_optimizer(slot, state["optimizer"])
            self._opt.load_scaler(slot, state["scaler"])
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
        self._opt.cover_steps(-(-cfg.total_samples // cfg.samples_per_update) + 1)
        self._members[slot] = member

    def remove(self, slot: int) -> None:
        """Empty ``slot`` (take :meth:`member_state` first to keep the member)."""
        self._member(slot)
        self._members[slot] = None
        self._opt.reset(slot)
        self._streams.release(slot)

    def _member(self, slot: int) -> _Member:
        member = self._members[slot] if 0 <= slot < self.capacity else None
        if member is None:
            raise ConfigError(f"The value of `slot` is {slot}, but it holds no member "
                              f"(members: {sorted(self.members)}).")
        return member

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
            m = self._member(i)
            cfg = m.cfg
            epoch = m.samples_seen // cfg.epoch_samples
            next_epoch = min((epoch // cfg.validation_interval + 1) * cfg.validation_interval,
                             cfg.epochs)
            spu = cfg.samples_per_update
            targets[i] = max(0, -(-(next_epoch * cfg.epoch_samples - m.samples_seen) // spu))
        stats = self._train(targets)
        results = {}
        for i in running:
            m = self._member(i)
            with torch.no_grad():
                for s in self._segments:
                    self._eval_model.get_parameter(s.key).copy_(self._member_view(self._flat, s, i))
            result = conclude_interval(
                m.cfg, stats[i], samples_seen=m.samples_seen, status=m.status,
                best=(m.best_psnr, m.best_epoch), bicubic=self.bicubic_scores(),
                score=functools.partial(score_model, self._eval_model, self.val_data,
                                        frames=m.cfg.frames, crop_border=m.cfg.crop_border,
                                        device=self.device))
            m.status, m.best_psnr, m.best_epoch = result.status, result.best_psnr, result.best_epoch
            m.history.append(result.to_dict())
            log_result(result)
            results[i] = result
        return results

    def bicubic_scores(self) -> Scores:
        if self._bicubic is None:
            self._bicubic = bicubic_scores(self.val_data, frames=self.shape.frames,
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
        # Every member's loss is summed at every step; one that stops early keeps the sum it
        # had then (a copy, taken only when some member stops).
        stopped: dict[int, torch.Tensor] = {}
        active = list(updates)
        data_time = 0.0
        events: list[tuple[torch.cuda.Event, torch.cuda.Event]] | None = (
            [] if self.device.type == "cuda" else None)
        start = time.perf_counter()
        for t in range(steps):
            now = [i for i in active if t < updates[i] and i not in diverged]
            if len(now) < len(active):
                snapshot = self._loss_sum.clone()
                stopped.update((i, snapshot) for i in active if i not in now)
            active = now
            if not active:
                break
            t0 = time.perf_counter()
            if events is not None:  # as Trainer: a gather on the GPU costs GPU time
                events.append((torch.cuda.Event(enable_timing=True),
                               torch.cuda.Event(enable_timing=True)))
                events[-1][0].record()
            horizon = max(updates[i] for i in active) - t  # updates left in this interval
            batches = self._streams.next_batches(active, self._k, horizon * self._k)
            data_time += time.perf_counter() - t0
            if events is not None:
                events[-1][1].record()
            if self._graph is not None:
                self._graph.update(batches, active)
            else:
                self._update(batches, active)
            for i in active:
                m = self._member(i)
                m.samples_seen += m.cfg.samples_per_update
                done[i] += 1
            if (t + 1) % _DIVERGENCE_CHECK_EVERY == 0:  # where a solo Trainer looks too
                finite = torch.isfinite(self._loss_sum).tolist()
                diverged.update(i for i in active if not finite[i])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        # Each member's mean loss per update, in fp32 as train_until takes it.
        members = list(updates)
        sums = torch.stack([stopped.get(i, self._loss_sum)[i] for i in members])
        counts = torch.tensor([max(done[i], 1) for i in members], dtype=sums.dtype,
                              device=sums.device)
        means = dict(zip(members, sums.mul_(self._loss_unit).div_(counts).tolist(), strict=True))
        if events:
            data_time = sum(a.elapsed_time(b) for a, b in events) / 1000.0
        finite_weights = self._finite_members()
        stats = {}
        for i in updates:
            mean = means[i]
            stats[i] = IntervalStats(
                loss=mean, updates=done[i], seconds=elapsed, data_seconds=data_time,
                diverged=i in diverged or not math.isfinite(mean) or not finite_weights[i])
        return stats

    def _finite_members(self) -> list[bool]:
        """Per member: are all its weights finite (one reduction for all members)."""
        with torch.no_grad():
            nan = torch.index_add(self._zeros, 0, self._opt.member_of, self._flat, alpha=0.0)
        return (~nan.isnan()).tolist()

    def _forward(self, batch: Batch) -> torch.Tensor:
        """All members at once: (B, N*T, p, p) -> (B, N, p*s, p*s), float32. The residual's
        bicubic comes with the batch: subtracted from the target in fp32 (where that is the
        same sum), added in the low precision as EarlyFusionESPCN under autocast adds it."""
        n, s = self.capacity, self.shape.scale
        w1, b1, w2, b2, w3, b3 = self._leaves
        y = torch.tanh(F.conv2d(batch.x, w1, b1, padding=2, groups=n))
        y = torch.tanh(F.conv2d(y, w2, b2, padding=1, groups=n))
        out = F.pixel_shuffle(F.conv2d(y, w3, b3, padding=1, groups=n), s)
        if batch.bicubic is not None:
            out = out + batch.bicubic
        return out.float()

    def _loss_sums(self, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Each member's summed squared error (over its counted pixels), kept in its channel:
        (1, N, 1, 1[, 1, 1]). Each member's mean (train_step's loss) is that times its weight,
        which the backward gets as its seed, so the sum's backward gives each member the
        gradient of its own loss."""
        err = F.mse_loss(out, batch.target, reduction="none")
        if batch.mask is None:
            return err.sum((0, 2, 3), keepdim=True)
        b, n, hh, _ = err.shape
        s = self.shape.scale
        return err.view(b, n, hh // s, s, hh // s, s).mul(batch.mask).sum(
            (0, 2, 3, 4, 5), keepdim=True)

    def _update(self, batches: list[Batch], active: list[int]) -> None:
        """One optimizer update of every member over ``k`` micro-batches; members not in
        ``active`` (idle, diverged, empty slots) are left exactly as they are."""
        self._prepare(active)
        self._apply_update(batches)

    def _prepare(self, active: list[int]) -> None:
        """The host's part of an update: each stepping member's rows, one copy to the device."""
        opt = self._opt
        self._stepping = list(active)
        opt.prepare([MemberStep(i, m.cfg.lr_at(m.samples_seen), m.cfg.weight_decay,
                                m.cfg.momentum, m.cfg.grad_clip)
                     for i, m in ((i, self._member(i)) for i in active)])

    def _apply_update(self, batches: Sequence[Batch]) -> None:
        """The device's part of an update, from `_prepare`'s rows: grouped, a fixed set of
        kernels whatever N, which trainable.fused_graph captures; per member, each stepping
        member's own network, then the same flat update."""
        opt = self._opt
        if not self._grouped:
            self._member_steps(batches)
            with torch.no_grad():
                opt.apply()
            return
        if self._lowp is not None:
            with torch.no_grad():
                self._weights.copy_(self._flat)
        for j, batch in enumerate(batches):
            sums = self._loss_sums(self._forward(batch), batch)
            # The backward's seed per member: its loss scale (fp16) x its weight (1 / pixels
            # counted) / k; the weight is one number for all members without a loss border.
            if batch.weight is None:
                seed = self._unit_seed if self._scale_view is None else self._scale_view * self._unit
            else:
                seed = batch.weight * (1.0 / self._k if self._scale_view is None
                                       else self._scale_view)
            grads = torch.autograd.grad(sums, self._leaves, grad_outputs=seed)
            with torch.no_grad():
                (torch._foreach_copy_ if j == 0 else torch._foreach_add_)(self._grad_views, grads)
                if batch.weight is None:
                    self._loss_view.add_(sums)
                else:
                    self._loss_view.addcmul_(sums, batch.weight)
        with torch.no_grad():
            opt.apply()

    def _member_steps(self, batches: Sequence[Batch]) -> None:
        """Per member (on the CPU), the gradients of an update as train_step computes them: each
        stepping member's micro-batches through its own network (micro_batch_loss), its loss
        times its loss scale (fp16), the gradients summed over the micro-batches; each member's
        loss summed as train_until sums it."""
        t, s, k = self.shape.frames, self.shape.scale, self._k
        stepping = self._stepping
        losses: list[list[torch.Tensor]] = [[] for _ in stepping]
        autocast = autocast_for(self.device, self._lowp)
        for j, batch in enumerate(batches):
            scaled = []
            for n, i in enumerate(stepping):
                mask = None
                if batch.mask is not None:  # (B, p, 1, p, 1) -> (B, 1, H, W), the sampler's
                    m = batch.mask[:, i]
                    b, p = m.shape[0], m.shape[1]
                    mask = m.expand(b, p, s, p, s).reshape(b, 1, p * s, p * s)
                net = functools.partial(torch.func.functional_call, self._eval_model,
                                        self._member_params[i])
                loss = micro_batch_loss(net, batch.x[:, i * t:(i + 1) * t],
                                        batch.target[:, i:i + 1], mask, autocast=autocast, k=k)
                losses[n].append(loss.detach())
                scaled.append(loss * self._opt.scale.narrow(0, i, 1) if self._opt.scaled
                              else loss)
            leaves = [v for i in stepping for v in self._member_params[i].values()]
            grads = torch.autograd.grad(scaled, leaves)
            views = [v for i in stepping for v in self._member_grads[i]]
            with torch.no_grad():
                (torch._foreach_copy_ if j == 0 else torch._foreach_add_)(views, grads)
        with torch.no_grad():
            for n, i in enumerate(stepping):
                total = losses[n][0] if k == 1 else torch.stack(losses[n]).sum()
                self._loss_sum.narrow(0, i, 1).add_(total)

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
        steps = self._opt.step_count(slot)
        for group in optimizer.param_groups:  # the lr of its last update, as a Trainer leaves it
            group["lr"] = cfg.lr_at(max(m.samples_seen - cfg.samples_per_update, 0))
        if steps > 0 and (self._opt.adam or cfg.momentum != 0):
            for s, p in zip(self._segments, model.parameters(), strict=True):
                views = [self._member_view(b, s, slot).clone() for b in self._opt.states]
                optimizer.state[p] = ({"step": torch.tensor(float(steps)), "exp_avg": views[0],
                                       "exp_avg_sq": views[1]} if self._opt.adam
                                      else {"momentum_buffer": views[0]})
        scaler = self._opt.scaler_state(slot)
        return checkpoint_state(
            cfg, model=model.state_dict(), optimizer=optimizer.state_dict(), scaler=scaler,
            sampler=self._streams.state_dict(slot), rng=dict(m.rng), samples_seen=m.samples_seen,
            history=m.history, best_psnr=m.best_psnr, best_epoch=m.best_epoch, status=m.status)

    def _load_optimizer(self, slot: int, state: dict[str, Any]) -> None:
        """A Trainer-format optimizer state into the slot's part of the flat state buffers."""
        if "state" not in state:  # torch writes one, empty before the first step: an edited file
            raise ConfigError("The checkpoint's optimizer has no `state`, but torch writes one "
                              "(empty before the first step): the file was not written by a "
                              "Trainer or a fused group.")
        saved = state["state"]
        adam = self._opt.adam
        want = ("exp_avg", "exp_avg_sq") if adam else ("momentum_buffer",)
        steps = 0
        with torch.no_grad():
            for j, s in enumerate(self._segments):
                entry = saved.get(j, saved.get(str(j), {}))
                if not entry:
                    continue  # not stepped yet (or SGD without momentum): zeros
                missing = [k for k in want if k not in entry]
                if missing:
                    raise ConfigError(f"The checkpoint's optimizer state has {sorted(entry)}, but a "
                                      f"{self.shape.optimizer} member needs {list(want)}.")
                for buf, k in zip(self._opt.states, want, strict=True):
                    self._member_view(buf, s, slot).copy_(entry[k])
                # Adam: its step count; SGD: only whether it has a momentum buffer.
                steps = int(float(entry["step"])) if adam else 1
        self._opt.set_steps(slot, steps)
