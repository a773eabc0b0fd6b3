"""The training loop: AMP, real gradient accumulation, LR as a pure function of progress,
validation every ``validation_interval`` epochs, full save/resume.

Plain PyTorch, no Ray: the Tune entry point is a thin wrapper that turns the validation callback
into ``tune.report`` and :meth:`Trainer.save` into a checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F

from trainable.checkpoint import load_optimizer, load_scaler, model_state, plain_keys, restore_rng, rng_state
from trainable.config import TrainConfig
from trainable.errors import ConfigError
from trainable.evaluate import Scores, bicubic_scores, score_model
from trainable.graphed import StepGraph, check_device
from trainable.model import EarlyFusionESPCN
from trainable.result import ValidationResult
from trainable.sampler import PatchSampler

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from trainable.store import SplitData

log = logging.getLogger(__name__)

# How often (in optimizer updates) the loop looks at the loss for NaN/inf: one host sync each.
_DIVERGENCE_CHECK_EVERY = 32


@dataclass(frozen=True)
class IntervalStats:
    loss: float  # mean training loss over the updates
    updates: int
    seconds: float
    data_seconds: float  # of which sampling patches
    diverged: bool


def resolve_device(name: str, what: str = "`device`") -> torch.device:
    """'auto', 'cpu' or 'cuda' as a torch device; CUDA with its index (the current device), which
    torch.cuda's memory and RNG calls require (a bare 'cuda' raises there, found on an H100)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"The value of {what} is 'cuda', but no CUDA device is available.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    if cfg.amp_dtype == "float16":
        return torch.float16
    if cfg.amp_dtype == "bfloat16":
        return torch.bfloat16
    # fp16 + GradScaler on CUDA (the source document's setting); CPU autocast runs bf16. On an
    # H100 bf16 (no scaler) stepped 2-15% faster than fp16 and fp32 faster still, the step being
    # bound by kernel launches (BENCHMARKS.md, "GPU"); what bf16 does to the PSNR a search
    # reaches is unmeasured, so the source document's fp16 stays.
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def make_optimizer(cfg: TrainConfig, params: Iterable[torch.nn.Parameter], device: torch.device,
                   *, lr_tensor: bool = False) -> torch.optim.Optimizer:
    """SGD or Adam as configured; fused kernels on CUDA (one launch for all parameters, and the
    GradScaler's inf check stays on the device instead of an ``.item()`` per step).

    ``lr_tensor`` (``cuda_graph``): the LR a 0-dim float32 tensor on ``device``, written in place
    (trainable.graphed), fused kernels on any device and Adam ``capturable`` on CUDA, as a
    captured step needs them."""
    fused = True if device.type == "cuda" or lr_tensor else None  # None: torch's own choice
    lr: float | torch.Tensor = cfg.model_lr
    if lr_tensor:
        lr = torch.tensor(cfg.model_lr, dtype=torch.float32, device=device)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.nesterov, fused=fused)
    return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay, fused=fused,
                            capturable=lr_tensor and device.type == "cuda")


def initial_weights(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights ``cfg.init_weights`` names, checked against the config's network (a
    WeightsError, exit 2, naming the file and the layer that does not fit)."""
    from trainable.weights import initial_weights as read

    assert cfg.init_weights is not None
    return read(Path(cfg.init_weights), cfg.frames, cfg.scale, cfg.residual)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, micro_batches: Sequence[tuple[torch.Tensor, ...]],
               *, autocast: Callable[[], contextlib.AbstractContextManager[object]],
               grad_clip: float, zero_grad: bool = True
               ) -> torch.Tensor:
    """One optimizer update over ``k`` micro-batches: loss / k, backward through the scaler,
    unscale before clipping, step, update, zero_grad. Returns the mean loss (no host sync).
    A micro-batch ``(lr, hr, mask)`` counts the loss only where ``mask`` is 1 (the sampler's
    ``loss_border``). ``zero_grad=False`` leaves the gradients where they are (a captured step's
    live at fixed addresses; trainable.graphed)."""
    k = len(micro_batches)
    losses = []
    for lr, hr, *mask in micro_batches:
        loss = micro_batch_loss(model, lr, hr, mask[0] if mask else None, autocast=autocast, k=k)
        torch.autograd.backward(scaler.scale(loss))
        losses.append(loss.detach())
    # Without accumulation no division and no running sum: on a GPU, where this step is bound by
    # kernel launches (BENCHMARKS.md, "GPU"), every kernel left out counts.
    total = losses[0] if k == 1 else torch.stack(losses).sum()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
    return total


def micro_batch_loss(model: Callable[[torch.Tensor], torch.Tensor], lr: torch.Tensor,
                     hr: torch.Tensor, mask: torch.Tensor | None, *,
                     autocast: Callable[[], contextlib.AbstractContextManager[object]], k: int
                     ) -> torch.Tensor:
    """One micro-batch's share of an update's loss, as train_step takes it (and a fused group on
    the CPU, member by member): the model under ``autocast``, the mean squared error in fp32
    (with a ``mask``, over the pixels it counts), divided by the ``k`` micro-batches."""
    with autocast():
        out = model(lr)
    if mask is not None:
        err = (out.float() - hr).square_().mul_(mask)
        loss = err.sum() / mask.sum().clamp_(min=1.0)
    else:
        loss = F.mse_loss(out.float(), hr)
    if k > 1:
        loss = loss / k
    return loss


def autocast_for(device: torch.device, dtype: torch.dtype | None
                 ) -> Callable[[], contextlib.AbstractContextManager[object]]:
    """The training step's autocast: ``dtype`` (the AMP precision, None: off) on ``device``."""
    return functools.partial(torch.autocast, device.type, dtype=dtype or torch.float32,
                             enabled=dtype is not None)


def conclude_interval(cfg: TrainConfig, stats: IntervalStats, *, samples_seen: int, status: str,
                      best: tuple[float, int], bicubic: Scores, score: Callable[[], Scores]
                      ) -> ValidationResult:
    """The validation that ends an interval of training: ``score`` (the trained weights on the
    val split) unless the interval diverged, the status and the best PSNR/epoch that follow, in
    one ValidationResult. Shared by :class:`Trainer` and the fused group's members, so both
    report in exactly one way."""
    best_psnr, best_epoch = best
    epoch = samples_seen // cfg.epoch_samples
    if stats.diverged:
        status = "diverged"
        scores = Scores(psnr=math.nan, ssim=math.nan, frames=0)  # no psnr_frames
        log.warning("training diverged at epoch %d (loss %s)", epoch, stats.loss)
    else:
        scores = score()
        if samples_seen >= cfg.total_samples:
            status = "completed"
        if scores.psnr > best_psnr:
            best_psnr, best_epoch = scores.psnr, epoch
        # Validations fall every validation_interval epochs: that many since the best one.
        since_best = (epoch - best_epoch) // cfg.validation_interval
        if status == "running" and 0 < cfg.early_stop_patience <= since_best:
            status = "stopped_early"
            log.info("no new best in %d validations (early_stop_patience %d): stopping at epoch "
                     "%d, the best being epoch %d", since_best, cfg.early_stop_patience, epoch,
                     best_epoch)
    elapsed = max(stats.seconds, 1e-9)
    return ValidationResult(
        epoch=epoch, samples=samples_seen, max_epochs=cfg.epochs,
        psnr=scores.psnr, ssim=scores.ssim, bicubic_psnr=bicubic.psnr,
        bicubic_ssim=bicubic.ssim, gain_db=scores.psnr - bicubic.psnr,
        best_psnr=best_psnr, best_epoch=best_epoch, loss=stats.loss,
        lr=cfg.lr_at(max(samples_seen - 1, 0)),
        samples_per_s=stats.updates * cfg.samples_per_update / elapsed,
        steps_per_s=stats.updates / elapsed,
        data_time_share=stats.data_seconds / elapsed, status=status,
        psnr_frames=tuple(round(p, 4) for p in scores.psnr_frames))


def log_result(r: ValidationResult) -> None:
    log.info("epoch %d/%d  loss %.5f  lr %.2e  PSNR %.3f dB (bicubic %.3f, %+.3f)  SSIM %.4f  "
             "%.0f samples/s  data %.1f%%", r.epoch, r.max_epochs, r.loss, r.lr, r.psnr,
             r.bicubic_psnr, r.gain_db, r.ssim, r.samples_per_s, 100 * r.data_time_share)


def checkpoint_state(cfg: TrainConfig, *, model: dict[str, torch.Tensor], optimizer: dict[str, Any],
                     scaler: dict[str, Any], sampler: dict[str, Any], rng: dict[str, torch.Tensor],
                     samples_seen: int, history: Sequence[dict[str, Any]], best_psnr: float,
                     best_epoch: int, status: str) -> dict[str, Any]:
    """A training checkpoint in the one format that :meth:`Trainer.load_state_dict` reads, whoever
    trained it (a Trainer, or a member of a fused group): the parts as their own state dicts."""
    return {
        "config": cfg.to_dict(),
        "model": model,
        "optimizer": optimizer,
        "scaler": scaler,
        "sampler": sampler,
        **rng,
        "samples_seen": samples_seen,
        "epoch": samples_seen // cfg.epoch_samples,
        "history": list(history),
        "best_psnr": best_psnr,
        "best_epoch": best_epoch,
        "status": status,
    }


def resumed_status(state: dict[str, Any], cfg: TrainConfig) -> str:
    """The status a run resumed from ``state`` under ``cfg`` continues with."""
    status = str(state["status"])
    if status == "completed" and int(state["samples_seen"]) < cfg.total_samples:
        return "running"  # resumed with a larger budget: carry on
    return status


class Trainer:
    def __init__(self, cfg: TrainConfig, train: SplitData, val: SplitData, *,
                 log_dir: str | os.PathLike[str] | None = None) -> None:
        if cfg.frames > train.max_frames:
            raise ConfigError(f"The value of `frames` is {cfg.frames}, but the data ({train.source}) "
                              f"has clips of only {train.max_frames} frames.")
        self.cfg = cfg
        self.train_data, self.val_data = train, val
        self.device = resolve_device(cfg.device)
        check_device(cfg, self.device)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        self.model = EarlyFusionESPCN(cfg.frames, cfg.scale, cfg.residual)
        if cfg.init_weights is not None:
            # After the fresh initialisation, so the RNG (and the patches drawn) stay those of
            # a run from scratch with this seed.
            self.model.load_state_dict(initial_weights(cfg))
        self.model.to(self.device)
        self.optimizer = make_optimizer(cfg, self.model.parameters(), self.device,
                                        lr_tensor=cfg.cuda_graph)
        # The training step runs the compiled module; evaluation and checkpoints use the plain
        # one (whole frames would recompile, and a compiled state_dict has prefixed keys).
        self._step_model = _compiled(self.model, self.device) if cfg.compile else self.model
        dtype = amp_dtype(cfg, self.device)
        self.amp_dtype = dtype if cfg.use_amp else None
        if self.amp_dtype == torch.bfloat16 and self.device.type == "cpu":
            log.warning("use_amp on the CPU runs bf16 autocast, which is several times slower than "
                        "fp32 on CPUs without native bf16 (see BENCHMARKS.md); set use_amp: false "
                        "to train faster here")
        # The scaler is only active for fp16: bf16 has fp32's range.
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=cfg.use_amp and dtype == torch.float16)
        self.sampler = PatchSampler(train, frames=cfg.frames, patch_size=cfg.patch_size,
                                    seed=cfg.seed, device=self.device, loss_border=cfg.loss_border)
        if cfg.cuda_graph:
            self.sampler.device_gather()  # a DataError now if the split stays on the CPU
        self._graphed: StepGraph | None = None  # cuda_graph: built at the first update
        self.samples_seen = 0
        self.history: list[dict[str, Any]] = []
        self.best_psnr = -math.inf
        self.best_epoch = 0
        self.status = "running"
        self._bicubic: Scores | None = None
        self._writer = _summary_writer(log_dir)

    # --- the loop ---------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        return autocast_for(self.device, self.amp_dtype)()

    @property
    def epoch(self) -> int:
        return self.samples_seen // self.cfg.epoch_samples

    @property
    def done(self) -> bool:
        return self.status != "running" or self.samples_seen >= self.cfg.total_samples

    def bicubic_scores(self) -> Scores:
        if self._bicubic is None:
            self._bicubic = bicubic_scores(self.val_data, frames=self.cfg.frames,
                                           crop_border=self.cfg.crop_border, device=self.device)
        return self._bicubic

    def run(self, on_validation: Callable[[ValidationResult, Trainer], None] | None = None
            ) -> ValidationResult | None:
        """Train from the current progress to the end of the budget (or divergence), validating
        every ``validation_interval`` epochs and calling ``on_validation`` after each."""
        result = None
        while not self.done:
            result = self.run_interval()
            if on_validation is not None:
                on_validation(result, self)
        return result

    def run_interval(self) -> ValidationResult:
        """Train up to the next validation point, validate, and return the result."""
        cfg = self.cfg
        next_epoch = min((self.epoch // cfg.validation_interval + 1) * cfg.validation_interval,
                         cfg.epochs)
        stats = self.train_until(next_epoch * cfg.epoch_samples)
        return self._validate(stats)

    def train_until(self, target_samples: int) -> IntervalStats:
        """Optimizer updates until ``target_samples`` training samples have been seen (or the
        loss stops being finite). No validation: the benchmark times this alone."""
        cfg = self.cfg
        if cfg.cuda_graph:
            return self._train_graphed(target_samples)
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        updates = 0
        data_time = 0.0
        start = time.perf_counter()
        diverged = False
        k = cfg.gradient_accumulation_steps
        n_updates = max(0, -(-(target_samples - self.samples_seen) // cfg.samples_per_update))
        stream = self.sampler.batches(n_updates * k, cfg.batch_size)
        # A gather on the GPU costs GPU time, which the host clock does not see (it only queues
        # the kernels): time it with CUDA events, read once at the end of the interval.
        events: list[tuple[torch.cuda.Event, torch.cuda.Event]] | None = (
            [] if self.sampler.gathers_on_device and self.device.type == "cuda" else None)
        try:
            for _ in range(n_updates):
                lr = cfg.lr_at(self.samples_seen)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                if events is not None:
                    events.append((torch.cuda.Event(enable_timing=True),
                                   torch.cuda.Event(enable_timing=True)))
                    events[-1][0].record()
                t0 = time.perf_counter()
                batches = [next(stream) for _ in range(k)]
                data_time += time.perf_counter() - t0  # time the step waited for its data
                if events is not None:
                    events[-1][1].record()
                loss_sum += train_step(self._step_model, self.optimizer, self.scaler, batches,
                                       autocast=self._autocast, grad_clip=cfg.grad_clip)
                self.samples_seen += cfg.samples_per_update
                updates += 1
                if updates % _DIVERGENCE_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
                    diverged = True
                    break
        finally:
            stream.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        if events is not None:
            data_time = sum(a.elapsed_time(b) for a, b in events) / 1000.0
        mean_loss = (loss_sum / max(updates, 1)).item()
        diverged = diverged or not math.isfinite(mean_loss) or not all(
            torch.isfinite(p).all() for p in self.model.parameters())
        return IntervalStats(loss=mean_loss, updates=updates, seconds=elapsed,
                             data_seconds=data_time, diverged=diverged)

    def _train_graphed(self, target_samples: int) -> IntervalStats:
        """:meth:`train_until` with ``cuda_graph``: the same updates, each a StepGraph replay."""
        cfg = self.cfg
        self.model.train()
        if self._graphed is None:
            # A captured step must not cache autocast's casts (make_graphed_callables' rule);
            # the same numbers either way. Nothing here refers back to the Trainer, so dropping
            # it frees the graphs' memory at once.
            autocast = functools.partial(torch.autocast, self.device.type,
                                         dtype=self.amp_dtype or torch.float32,
                                         enabled=self.amp_dtype is not None, cache_enabled=False)
            step = functools.partial(train_step, self.model, self.optimizer, self.scaler,
                                     autocast=autocast, grad_clip=cfg.grad_clip, zero_grad=False)
            self._graphed = StepGraph(cfg, self.sampler, self.model, self.optimizer, self.scaler,
                                      step)
        n_updates = max(0, -(-(target_samples - self.samples_seen) // cfg.samples_per_update))
        start = time.perf_counter()
        updates, diverged, data_time = self._graphed.train(n_updates, self.samples_seen,
                                                           _DIVERGENCE_CHECK_EVERY)
        self.samples_seen += updates * cfg.samples_per_update
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        mean_loss = (self._graphed.loss_sum / max(updates, 1)).item()
        diverged = diverged or not math.isfinite(mean_loss) or not all(
            torch.isfinite(p).all() for p in self.model.parameters())
        return IntervalStats(loss=mean_loss, updates=updates, seconds=elapsed,
                             data_seconds=data_time, diverged=diverged)

    def _validate(self, stats: IntervalStats) -> ValidationResult:
        cfg = self.cfg
        result = conclude_interval(
            cfg, stats, samples_seen=self.samples_seen, status=self.status,
            best=(self.best_psnr, self.best_epoch), bicubic=self.bicubic_scores(),
            score=lambda: score_model(self.model, self.val_data, frames=cfg.frames,
                                      crop_border=cfg.crop_border, device=self.device))
        self.status, self.best_psnr, self.best_epoch = result.status, result.best_psnr, result.best_epoch
        self.history.append(result.to_dict())
        self._log(result)
        return result

    def _log(self, r: ValidationResult) -> None:
        log_result(r)
        if self._writer is None:
            return
        for key in ("loss", "lr", "psnr", "ssim", "gain_db", "data_time_share", "samples_per_s"):
            value = getattr(r, key)
            if math.isfinite(value):
                self._writer.add_scalar(f"train/{key}" if key in ("loss", "lr") else f"val/{key}",
                                        value, r.epoch)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    # --- save / resume ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs; see trainable/checkpoint.py for what travels between
        devices and AMP settings."""
        return checkpoint_state(
            self.cfg, model=model_state(self.model), optimizer=_plain_lr(self.optimizer.state_dict()),
            scaler=self.scaler.state_dict(), sampler=self.sampler.state_dict(),
            rng=rng_state(self.device), samples_seen=self.samples_seen, history=self.history,
            best_psnr=self.best_psnr, best_epoch=self.best_epoch, status=self.status)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # The optimizer's load replaces its state tensors: a captured step would read stale ones.
        self._graphed = None
        self.model.load_state_dict(plain_keys(state["model"]))
        load_optimizer(self.optimizer, state["optimizer"])
        load_scaler(self.scaler, state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        restore_rng(state, self.device)
        self.samples_seen = int(state["samples_seen"])
        self.history = list(state["history"])
        self.best_psnr = float(state["best_psnr"])
        self.best_epoch = int(state["best_epoch"])
        self.status = resumed_status(state, self.cfg)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the full state to ``path`` atomically (temp file + rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load(self, path: str | os.PathLike[str]) -> None:
        # Onto the CPU first, whatever device wrote it: the RNG states must stay CPU tensors, and
        # load_state_dict moves weights and optimizer state to this trainer's device. Tensors,
        # plain containers and numbers only: the safe loader is enough.
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def _plain_lr(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict with a tensor LR (``cuda_graph``) saved as the float every other
    checkpoint holds (the LR is a function of progress anyway; a load keeps the live tensor)."""
    for group in state["param_groups"]:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"] = float(group["lr"])
    return state


def _compiled(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    # This 28k-parameter network is bound by kernel launches on a GPU: CUDA graphs replay the
    # whole step in one launch. Off CUDA there is no graph to capture, only kernel fusion.
    compiled = torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else None)
    # An OptimizedModule, a Module: torch.compile's annotations promise only a callable.
    return cast(torch.nn.Module, compiled)


def _summary_writer(log_dir: str | os.PathLike[str] | None) -> SummaryWriter | None:
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))
