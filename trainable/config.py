"""`TrainConfig`: every knob of one training run, typed, frozen and validated once.

Defaults are the source document's: lr 1e-2, MultiStepLR milestones at 10% and 80% of the run
with gamma 0.1, batch 16, no accumulation, AMP on, validation every 5 epochs, SGD with momentum
0.9 and weight decay 1e-4. Two options default to the document's behaviour too:
plain SGD (``optimizer``) and no global residual (``residual``).

The budget unit is *training samples*: an epoch is ``epoch_samples`` patches whatever the batch size
or accumulation, so trials that search those are compared at equal data seen.

The learning rate is a pure function of progress (`trainable.schedule`): the source document's
MultiStepLR by default, or the cosine annealing (with or without warm restarts) its sections 5 and
6 recommend, each with an optional linear warm-up. A schedule's own settings exist only under it:
``lr_scheduler_gamma`` given with ``lr_schedule: cosine`` is refused, not ignored.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from trainable import schedule
from trainable.errors import ConfigError, DataError, did_you_mean

OPTIMIZERS = ("sgd", "adam")
# What a comparison at equal budget holds fixed: where and on what a run trains, for how long, how
# it is scored and how the hardware runs it (not how it learns).
RUN_SETTINGS = ("data", "data_lr", "frames", "scale", "init_weights", "epochs", "epoch_samples",
                "validation_interval", "crop_border", "test_clips", "seed", "device", "num_threads",
                "cache_dir", "use_amp", "amp_dtype", "compile", "cuda_graph")
AMP_DTYPES = ("auto", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DataSpec:
    """Which frames a run reads, as one value from the config to `trainable.store.open_split`:
    the data (``"builtin"``, a Vimeo90K root or a folder of clip folders), its optional
    pre-downscaled LR tree, the scale, and where the decoded-frame cache lives (None:
    ``$ESPCN_TUNE_CACHE`` or ``~/.cache/espcn-tune``)."""

    data: str = "builtin"
    scale: int = 4
    data_lr: str | None = None
    cache_dir: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, int) or self.scale < 1:
            raise DataError(f"scale must be a positive integer, got {self.scale!r}")


@dataclass(frozen=True)
class TrainConfig:
    # --- data -------------------------------------------------------------------------------
    data: str = "builtin"  # "builtin", a Vimeo90K root, or a folder of clip folders
    data_lr: str | None = None  # optional pre-downscaled LR tree (sequences_LR style)
    frames: int = 3  # consecutive LR frames fused on the channel axis (1, 3, 5 or 7)
    scale: int = 4  # upscaling factor (2, 3 or 4)
    patch_size: int = 17  # LR patch side, as in the ESPCN paper
    # LR pixels at each side of a patch left out of the loss, except at sides that lie on the
    # frame's own edge. Near a patch's edge inside the frame the network's zero padding and the
    # residual's bicubic see an edge that the whole frame does not have there; 4 (the network's
    # receptive-field radius) trains only on outputs computed as on a whole frame.
    # 0 is the source document's whole-patch loss.
    loss_border: int = 0
    # --- optimisation -----------------------------------------------------------------------
    model_lr: float = 1e-2
    lr_schedule: str = "multistep"  # multistep | cosine | cosine_restarts (trainable.schedule)
    warmup_fraction: float = 0.0  # linear warm-up over this share of the budget (any schedule)
    # multistep only:
    lr_scheduler_milestones: tuple[float, ...] | None = (0.1, 0.8)  # fractions of the budget
    lr_scheduler_gamma: float | None = 0.1
    # cosine and cosine_restarts only (None under multistep):
    lr_min_fraction: float | None = None  # the floor, as a fraction of model_lr (default 0)
    lr_cosine_end: float | None = None  # cosine: where it reaches the floor (default 1: the end)
    lr_restart_period: float | None = None  # cosine_restarts: first cycle (default 0.25 of it)
    lr_restart_mult: float | None = None  # cosine_restarts: each cycle this times the last (1)
    optimizer: str = "sgd"
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only: Nesterov momentum (the source repository's model_nesterov)
    weight_decay: float = 1e-4
    residual: bool = False  # add the bicubic upscale of the centre frame to the output
    # Start from these weights instead of a fresh initialisation: any file trainable.weights reads
    # (an export's .pt, a trainer checkpoint, the source repository's g_best.pth.tar). Only the
    # network's weights are taken; the optimizer, the schedule and the budget start afresh.
    init_weights: str | None = None
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    grad_clip: float = 0.0  # max global grad norm; 0 switches clipping off
    use_amp: bool = True
    amp_dtype: str = "auto"  # auto: fp16 + GradScaler on CUDA (bf16 is opt-in until measured), bf16 on CPU
    compile: bool = False  # torch.compile the training step's model (CUDA graphs on CUDA)
    # The whole step (patch draw, forward, backward, optimizer) replayed as a CUDA graph
    # (trainable.graphed); CUDA and the device gather only. Off until measured on a card.
    cuda_graph: bool = False
    # --- budget and evaluation --------------------------------------------------------------
    epochs: int = 100  # the whole budget, in epochs of `epoch_samples` training samples
    epoch_samples: int = 4096
    validation_interval: int = 5  # epochs between validations
    # Stop after this many validations without a new best (status stopped_early); 0: off. For
    # single runs: inside a search ASHA plays this role (a space that sets it is refused).
    early_stop_patience: int = 0
    crop_border: int = 0  # pixels dropped at each border before scoring (video-paper convention)
    # The end-of-run test scoring (`trainable.train`) scores at most this many test clips, evenly
    # spread over the split, and says "sampled" beside the score; 0 scores every clip. 1,000 of
    # Vimeo90K's 7,824 take about 15 s on 2 CPU cores, under a tenth of the default training
    # (BENCHMARKS.md, "Vimeo90K at full scale"); the built-in clips' 11 are all scored.
    test_clips: int = 1000
    # --- run --------------------------------------------------------------------------------
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0  # torch CPU threads; 0 leaves torch's default
    cache_dir: str | None = None  # decoded-frame cache; None: $ESPCN_TUNE_CACHE or ~/.cache

    def __post_init__(self) -> None:
        _normalise_schedule(self)
        _validate(self)

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, where: str = "config") -> TrainConfig:
        """Build from plain values (YAML, JSON, a Tune config), rejecting unknown keys.

        ``where`` names the source (a file path) in error messages.
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(values).__name__}")
        known = {f.name: f for f in fields(cls)}
        not_names = [k for k in values if not isinstance(k, str)]
        if not_names:
            raise ConfigError(f"{where}: the key {not_names[0]!r} is a "
                              f"{type(not_names[0]).__name__}, but every key must be a name; "
                              f"valid keys are: {', '.join(sorted(known))}")
        unknown = sorted(set(values) - set(known))
        if unknown:
            named = ", ".join(f"{k!r}{did_you_mean(k, known)}" for k in unknown)
            raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {named}; "
                              f"valid keys are: {', '.join(sorted(known))}")
        coerced = {k: _coerce(k, v, str(known[k].type), where) for k, v in values.items()}
        try:
            return cls(**_schedule_fields(coerced))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.lr_scheduler_milestones is not None:
            d["lr_scheduler_milestones"] = list(self.lr_scheduler_milestones)
        return d

    def replace(self, *, where: str = "config", **changes: Any) -> TrainConfig:
        """This config with ``changes`` (validated as `from_dict` does, ``where`` naming them);
        a change of ``lr_schedule`` drops this config's settings of the old schedule, and the
        new one's take their defaults unless given."""
        kept = self.to_dict()
        if changes.get("lr_schedule", self.lr_schedule) != self.lr_schedule:
            kept = {k: v for k, v in kept.items() if k not in schedule.SPECIFIC}
        return TrainConfig.from_dict({**kept, **changes}, where=where)

    def source_defaults(self) -> TrainConfig:
        """The source document's defaults (every learning setting at TrainConfig's default) with
        this config's data, budget, scoring and hardware settings: the reference a tuned
        configuration is compared with, at equal budget on equal data."""
        run = {k: v for k, v in self.to_dict().items() if k in RUN_SETTINGS}
        return TrainConfig.from_dict({**TrainConfig().to_dict(), **run}, where="source defaults")

    # --- derived quantities ---------------------------------------------------------------------
    @property
    def data_spec(self) -> DataSpec:
        """The frames this run reads (`trainable.store.open_split`)."""
        return DataSpec(self.data, self.scale, self.data_lr, self.cache_dir)

    @property
    def total_samples(self) -> int:
        return self.epochs * self.epoch_samples

    @property
    def samples_per_update(self) -> int:
        return self.batch_size * self.gradient_accumulation_steps

    def lr_at(self, samples_seen: int) -> float:
        """The LR of the update after ``samples_seen`` samples (`trainable.schedule`)."""
        return self.model_lr * schedule.factor(self, samples_seen, self.total_samples,
                                               self.samples_per_update)

    def rescaled_budget(self, old_epochs: int) -> TrainConfig:
        """This config (with its new ``epochs``) resuming a run of ``old_epochs``: every position
        in the budget keeps its sample count (each fraction times old/new), a milestone at or
        past the new budget is dropped, so the LR never jumps where the run already trained."""
        ratio = old_epochs / self.epochs
        changes: dict[str, Any] = {}
        for name in schedule.POSITIONS:
            value = getattr(self, name)
            if name == "lr_scheduler_milestones" and value is not None:
                changes[name] = [round(m * ratio, 9) for m in value if m * ratio < 1]
            elif isinstance(value, float) and value > 0:
                changes[name] = round(value * ratio, 9)
        return self.replace(**changes)


def _coerce(key: str, value: Any, annotation: str, where: str) -> Any:
    """Turn YAML/JSON values into the field's type (``annotation``, as text), with messages that
    name the key."""
    ann = annotation
    if value is None and "None" in ann:
        return None
    if ann.startswith("tuple"):
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: `{key}` is {value!r}, but must be a list of numbers")
        return tuple(_to_float(key, v, where) for v in value)
    if ann.startswith("bool"):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: `{key}` is {value!r}, but must be true or false")
    if ann.startswith("int"):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: `{key}` is {value!r}, but must be an integer")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        raise ConfigError(f"{where}: `{key}` is {value!r}, but must be an integer")
    if ann.startswith("float"):
        return _to_float(key, value, where)
    if ann.startswith("str"):
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: `{key}` is {value!r}, but must be a string")
    return value


def _to_float(key: str, value: Any, where: str) -> float:
    # PyYAML reads `1e-4` (no dot) as a string: accept any string Python parses as a number.
    if isinstance(value, bool):
        raise ConfigError(f"{where}: `{key}` is {value!r}, but must be a number")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}: `{key}` is {value!r}, but must be a number")


def _schedule_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Each schedule's own fields: its defaults where not given, None for the other schedules'.
    One of the others' given with a value is refused, naming the key: in a file it would
    otherwise be silently ignored."""
    chosen = values.get("lr_schedule", "multistep")
    own = schedule.FIELDS.get(chosen)
    if own is None:
        return dict(values)  # `_validate` names the unknown schedule
    out = dict(values)
    for name in schedule.SPECIFIC:
        if name in own:
            if out.get(name) is None:
                out[name] = own[name]
        elif out.get(name) is not None:
            users = " and ".join(s for s, f in schedule.FIELDS.items() if name in f)
            _check(False, name, _plain(out[name]),
                   f"it applies only to lr_schedule {users}, not to {chosen!r}; remove it")
        else:
            out[name] = None
    return out


def _normalise_schedule(c: TrainConfig) -> None:
    """For a config built directly (``TrainConfig(lr_schedule="cosine")``): the other schedules'
    fields still at their dataclass defaults become None, this schedule's unset ones its
    defaults. (`from_dict`, which files go through, knows what was given and refuses more.)"""
    own = schedule.FIELDS.get(c.lr_schedule)
    if own is None:
        return
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    for name in schedule.SPECIFIC:
        value = getattr(c, name)
        if name in own and value is None:
            object.__setattr__(c, name, own[name])
        elif name not in own and value is not None and value == defaults[name]:
            object.__setattr__(c, name, None)


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"The value of `{key}` is {value!r}, but {rule}.")


def _validate(c: TrainConfig) -> None:
    for name in ("model_lr", "momentum", "weight_decay", "grad_clip", "warmup_fraction"):
        v = getattr(c, name)
        _check(isinstance(v, int | float) and math.isfinite(v), name, v, "must be a finite number")
    _check(c.model_lr > 0, "model_lr", c.model_lr, "must be > 0")
    _validate_schedule(c)
    _check(c.optimizer in OPTIMIZERS, "optimizer", c.optimizer, f"must be one of {OPTIMIZERS}")
    _check(0 <= c.momentum < 1, "momentum", c.momentum, "must be in [0, 1)")
    _check(isinstance(c.nesterov, bool), "nesterov", c.nesterov, "must be true or false")
    _check(not c.nesterov or c.optimizer == "sgd", "nesterov", c.nesterov,
           f"it applies only to optimizer 'sgd', not to {c.optimizer!r}")
    _check(not c.nesterov or c.momentum > 0, "nesterov", c.nesterov,
           "Nesterov momentum needs `momentum` > 0")
    _check(c.init_weights is None or (isinstance(c.init_weights, str) and bool(c.init_weights)),
           "init_weights", c.init_weights, "must name a weights file")
    _check(c.weight_decay >= 0, "weight_decay", c.weight_decay, "must be >= 0")
    _check(c.grad_clip >= 0, "grad_clip", c.grad_clip, "must be >= 0 (0 switches clipping off)")
    _check(c.frames in (1, 3, 5, 7), "frames", c.frames, "must be 1, 3, 5 or 7")
    _check(c.scale in (2, 3, 4), "scale", c.scale, "must be 2, 3 or 4")
    _check(c.patch_size >= 4, "patch_size", c.patch_size, "must be >= 4")
    _check(c.loss_border >= 0, "loss_border", c.loss_border, "must be >= 0")
    _check(c.patch_size - 2 * c.loss_border >= 4, "loss_border", c.loss_border,
           f"must leave at least 4 LR pixels of the {c.patch_size}-pixel patch "
           f"(patch_size - 2 * loss_border >= 4)")
    _check(c.batch_size >= 1, "batch_size", c.batch_size, "must be >= 1")
    _check(c.gradient_accumulation_steps >= 1, "gradient_accumulation_steps",
           c.gradient_accumulation_steps, "must be >= 1")
    _check(c.amp_dtype in AMP_DTYPES, "amp_dtype", c.amp_dtype, f"must be one of {AMP_DTYPES}")
    _check(isinstance(c.compile, bool), "compile", c.compile, "must be true or false")
    _check(isinstance(c.cuda_graph, bool), "cuda_graph", c.cuda_graph, "must be true or false")
    _check(not (c.cuda_graph and c.compile), "cuda_graph", c.cuda_graph,
           "`compile` is true too: choose one (compile: false to capture the whole step)")
    _check(not (c.cuda_graph and c.device == "cpu"), "cuda_graph", c.cuda_graph,
           "`device` is 'cpu': a CUDA graph needs a CUDA device (set cuda_graph: false)")
    _check(c.epochs >= 1, "epochs", c.epochs, "must be >= 1")
    _check(c.early_stop_patience >= 0, "early_stop_patience", c.early_stop_patience,
           "must be >= 0 (0 switches early stopping off)")
    _check(c.epoch_samples >= c.samples_per_update, "epoch_samples", c.epoch_samples,
           f"must be >= batch_size * gradient_accumulation_steps = {c.samples_per_update}")
    _check(c.validation_interval >= 1, "validation_interval", c.validation_interval, "must be >= 1")
    _check(c.crop_border >= 0, "crop_border", c.crop_border, "must be >= 0")
    _check(c.test_clips >= 0, "test_clips", c.test_clips, "must be >= 0 (0 scores every test clip)")
    _check(c.device in DEVICES, "device", c.device, f"must be one of {DEVICES}")
    _check(c.num_threads >= 0, "num_threads", c.num_threads, "must be >= 0")
    _check(bool(c.data), "data", c.data, "must name 'builtin' or a data folder")


def _validate_schedule(c: TrainConfig) -> None:
    _check(c.lr_schedule in schedule.SCHEDULES, "lr_schedule", c.lr_schedule,
           f"must be one of {schedule.SCHEDULES}")
    own = schedule.FIELDS[c.lr_schedule]
    for name in schedule.SPECIFIC:
        if name not in own and getattr(c, name) is not None:
            users = " and ".join(s for s, f in schedule.FIELDS.items() if name in f)
            _check(False, name, _plain(getattr(c, name)),
                   f"it applies only to lr_schedule {users}, not to {c.lr_schedule!r}; remove it")
    for name in own:
        v = getattr(c, name)
        if name != "lr_scheduler_milestones":
            _check(isinstance(v, int | float) and math.isfinite(v), name, v,
                   "must be a finite number")
    _check(0 <= c.warmup_fraction < 1, "warmup_fraction", c.warmup_fraction, "must be in [0, 1)")
    if c.lr_schedule == "multistep":
        assert c.lr_scheduler_gamma is not None and c.lr_scheduler_milestones is not None
        _check(0 < c.lr_scheduler_gamma <= 1, "lr_scheduler_gamma", c.lr_scheduler_gamma,
               "must be in (0, 1]")
        ms = c.lr_scheduler_milestones
        _check(all(0 < m < 1 for m in ms), "lr_scheduler_milestones", list(ms),
               "every milestone must be a fraction of the budget in (0, 1)")
        _check(all(a < b for a, b in zip(ms, ms[1:], strict=False)), "lr_scheduler_milestones",
               list(ms), "milestones must be strictly increasing")
        return
    assert c.lr_min_fraction is not None
    _check(0 <= c.lr_min_fraction <= 1, "lr_min_fraction", c.lr_min_fraction, "must be in [0, 1]")
    if c.lr_schedule == "cosine":
        assert c.lr_cosine_end is not None
        _check(c.lr_cosine_end > c.warmup_fraction, "lr_cosine_end", c.lr_cosine_end,
               f"must be > `warmup_fraction` ({c.warmup_fraction:g}): the cosine decays after "
               "the warm-up")
    else:
        assert c.lr_restart_period is not None and c.lr_restart_mult is not None
        _check(c.lr_restart_period > 0, "lr_restart_period", c.lr_restart_period,
               "must be > 0 (a fraction of the budget)")
        _check(c.lr_restart_mult >= 1, "lr_restart_mult", c.lr_restart_mult,
               "must be >= 1 (each cycle at least as long as the one before)")


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
