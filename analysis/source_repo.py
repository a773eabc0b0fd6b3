"""The source repository's ``config.py``, written from a trial's config: what
``python -m analysis.export --format py`` writes.

The source repository (eden-17-9311/espcn-vespcn, a fork of Lornatang/ESPCN-PyTorch) trains with
``config.py`` + ``train.py`` and scores with ``test.py``. Facts read from it (commit 8c6ce1f;
tests/test_source_repo.py pins each, with no code of it here):

- ``train.py`` reads the 33 names of `TRAIN_NAMES` from ``config``, ``test.py`` the 11 of
  `TEST_NAMES` (4 of them its own: ``model_weights_path``, ``lr_dir``, ``sr_dir``, ``gt_dir``,
  which its config.py defines only under ``if mode == "test":``; here every name is defined, so
  both scripts run with the one file).
- It trains SGD (``model_momentum``, ``model_weight_decay``, ``model_nesterov``) under MultiStepLR,
  stepped once per epoch with its milestones in epochs, on MSE, always with autocast + GradScaler
  (``use_amp`` and ``gradient_accumulation_steps`` are never read), validating every epoch on the
  test list with LR frames from ``test_lr_video_dir``.
- An epoch is one pass over the train list: every listed sequence of ``F`` frames gives
  ``F - num_frames + 1`` samples, shuffled, in batches of ``batch_size`` with ``drop_last=True``.
  `plan_epochs` converts the search's budget (samples) into such epochs.
- ``gt_image_size`` is the HR patch side: ``patch_size`` LR pixels times the scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What the source's train.py reads from `config`, in the order its config.py defines them.
TRAIN_NAMES = (
    "device", "only_test_y_channel", "model_arch_name", "in_channels", "out_channels",
    "channels", "upscale_factor", "num_frames", "exp_name", "dataset_type",
    "train_gt_images_dir", "test_gt_images_dir", "test_lr_images_dir",
    "train_gt_video_dir", "test_gt_video_dir", "test_lr_video_dir", "train_list_file",
    "test_list_file", "gt_image_size", "batch_size", "num_workers",
    "pretrained_model_weights_path", "resume_model_weights_path", "epochs", "loss_weights",
    "model_lr", "model_momentum", "model_weight_decay", "model_nesterov",
    "lr_scheduler_milestones", "lr_scheduler_gamma", "train_print_frequency",
    "test_print_frequency",
)
# What the source's test.py reads from `config`.
TEST_NAMES = ("device", "model_arch_name", "in_channels", "out_channels", "channels",
              "upscale_factor", "only_test_y_channel", "model_weights_path", "lr_dir", "sr_dir",
              "gt_dir")
# The official Vimeo90K septuplet train list, assumed where the search's own list is not known.
OFFICIAL_TRAIN_LIST = ("sep_trainlist.txt", 64_612, 7)
# The source's own defaults of the image path, the data paths and test.py's folders (its config.py
# writes them as f-strings of upscale_factor and exp_name).
_SOURCE_VIMEO = "./data/vimeo90k"
_CHANNELS = 64  # the source's `channels`: EarlyFusionESPCN's first conv (its second is half)


@dataclass(frozen=True)
class TrainList:
    """The list file the source's train.py would read, and what each of its lines gives."""

    path: str
    sequences: int  # non-blank lines (the source skips blank ones, as we do)
    frames: int  # frames of each listed sequence
    known: bool  # False: the official list, assumed


@dataclass(frozen=True)
class EpochPlan:
    """The search's budget in the source's epochs."""

    budget_samples: int
    samples_per_epoch: int  # trained per source epoch (drop_last)
    epochs: int
    milestones: list[int]
    lines: list[str] = field(default_factory=list)  # how, for the header


def plan_epochs(budget_samples: int, train_list: TrainList, num_frames: int, batch_size: int,
                fractions: list[float]) -> EpochPlan:
    """``epochs`` and ``lr_scheduler_milestones`` for the source's train.py, so that it trains as
    many samples as the search's budget and drops the LR where the search did, each to the
    nearest whole epoch (a milestone ``m`` drops the LR after ``m`` epochs: MultiStepLR is stepped
    at each epoch's end). A milestone that rounds to 0 moves to 1 (0 would drop the LR before any
    training); one at or past the last epoch would never act and is left out; two on the same
    epoch both act there (MultiStepLR counts them), as two drops in one epoch would."""
    windows = train_list.frames - num_frames + 1
    per_epoch = train_list.sequences * windows // batch_size * batch_size
    listed = (f"{train_list.path}: {train_list.sequences:,} sequences x {windows} windows of "
              f"{num_frames} frames = {train_list.sequences * windows:,} samples")
    if per_epoch == 0:
        return EpochPlan(budget_samples, 0, 1, [], [
            f"{listed}, fewer than one batch of {batch_size}: with drop_last the source's "
            "train.py trains nothing in an epoch; use a longer list or a smaller batch_size"])
    exact = budget_samples / per_epoch
    epochs = max(1, round(exact))
    lines = [f"{listed}; {per_epoch:,} trained per epoch in batches of {batch_size} "
             f"(drop_last)" + ("" if train_list.known else
                               " (the official list, assumed: the search used other data)"),
             f"the search's budget, {budget_samples:,} samples, is {exact:.2f} such epochs: "
             f"epochs = {epochs} ({epochs * per_epoch:,} samples, "
             f"{100 * (epochs * per_epoch / budget_samples - 1):+.1f}%)"]
    milestones: list[int] = []
    for f in fractions:
        at = round(f * epochs)
        where = f"the drop at {100 * f:.1f}% of the budget ({f * budget_samples:,.0f} samples)"
        if at >= epochs:
            lines.append(f"{where} rounds to epoch {at}, the end of training: left out")
            continue
        at = max(at, 1)
        lines.append(f"{where} -> after epoch {at} of {epochs} ({100 * at / epochs:.1f}%, "
                     f"{at * per_epoch:,} samples)")
        milestones.append(at)
    if len(set(milestones)) < len(milestones):
        lines.append(f"milestones {milestones}: drops on the same epoch act together there")
    return EpochPlan(budget_samples, per_epoch, epochs, milestones, lines)


@dataclass(frozen=True)
class DataPaths:
    """The source's video data names, and why they hold what they hold."""

    values: dict[str, str]
    train_list: TrainList
    comments: dict[str, str]


def data_paths(config: dict[str, Any]) -> DataPaths:
    """The Vimeo90K tree the search used, in the source's names; where it used other data (or
    its tree is gone), the source's defaults, with a comment."""
    from trainable.errors import InputError
    from trainable.sources import VimeoSource, open_source

    scale = int(config["scale"])
    source = None
    reason = f"the search used {config['data']!r}, not a Vimeo90K tree"
    if config["data"] != "builtin":
        try:
            source = open_source(str(config["data"]), scale=scale, data_lr=config.get("data_lr"))
        except InputError as e:
            reason = f"the search's data cannot be read now ({e})"
    if isinstance(source, VimeoSource):
        listed = source.list_path("train")
        lines = [s for s in listed.read_text(encoding="utf-8", errors="replace").splitlines()
                 if s.strip()]
        seq = str(source.seq)
        lr = str(source.lr_root) if source.lr_root else str(source.root / f"sequences_lrx{scale}")
        comments = {} if source.lr_root else {
            "test_lr_video_dir": "the source's train.py validates on pre-made LR frames here "
                                 "(the search made its LR on the fly): make them with its "
                                 "downsample_vimeo90k.py"}
        return DataPaths({"train_gt_video_dir": seq, "test_gt_video_dir": seq,
                          "test_lr_video_dir": lr, "train_list_file": str(listed),
                          "test_list_file": str(source.list_path("test"))},
                         TrainList(str(listed), len(lines), source.frames, True), comments)
    name, sequences, frames = OFFICIAL_TRAIN_LIST
    values = {"train_gt_video_dir": f"{_SOURCE_VIMEO}/sequences",
              "test_gt_video_dir": f"{_SOURCE_VIMEO}/sequences",
              "test_lr_video_dir": f"{_SOURCE_VIMEO}/sequences_lrx{scale}",
              "train_list_file": f"{_SOURCE_VIMEO}/{name}",
              "test_list_file": f"{_SOURCE_VIMEO}/sep_testlist.txt"}
    comment = f"the source's default: {reason}"
    return DataPaths(values, TrainList(f"{_SOURCE_VIMEO}/{name}", sequences, frames, False),
                     dict.fromkeys(values, comment))


def config_epochs(config: dict[str, Any], paths: DataPaths | None = None) -> EpochPlan:
    """`plan_epochs` for a trial's config (its data's train list, else the official one); a
    schedule other than MultiStepLR gets the source's own milestones, ``int(epochs * 0.1)`` and
    ``int(epochs * 0.8)``, of the converted epochs."""
    c = config
    paths = paths or data_paths(c)
    multistep = c["lr_schedule"] == "multistep"
    fractions = [float(f) for f in c["lr_scheduler_milestones"]] if multistep else [0.1, 0.8]
    plan = plan_epochs(int(c["epochs"]) * int(c["epoch_samples"]), paths.train_list,
                       int(c["frames"]), int(c["batch_size"]), fractions)
    if multistep:
        return plan
    return EpochPlan(plan.budget_samples, plan.samples_per_epoch, plan.epochs,
                     [int(plan.epochs * 0.1), int(plan.epochs * 0.8)], plan.lines[:2])


def not_run(config: dict[str, Any]) -> list[str]:
    """One line for each thing the trial used that the source's train.py does not run."""
    c = config
    lines = []
    if c["optimizer"] != "sgd":
        lines.append(f"optimizer {c['optimizer']!r}: the source's train.py runs SGD only; "
                     f"model_lr {c['model_lr']:g} was tuned for {c['optimizer']}")
    if c["lr_schedule"] != "multistep":
        lines.append(f"lr_schedule {c['lr_schedule']!r} (cosine annealing): the source's train.py "
                     "runs MultiStepLR only; its milestones and gamma here are the source's "
                     "defaults (10% and 80%, gamma 0.1)")
    if c.get("warmup_fraction"):
        lines.append(f"warmup_fraction {c['warmup_fraction']:g}: the source's train.py has no "
                     "warm-up")
    if c["residual"]:
        lines.append("residual: the source's model has no global residual (no .pth.tar is "
                     "written: these weights need the bicubic upscale added)")
    if c["gradient_accumulation_steps"] > 1:
        lines.append(f"gradient_accumulation_steps {c['gradient_accumulation_steps']}: the "
                     "source's train.py never reads it and steps after every batch")
    if not c["use_amp"]:
        lines.append("use_amp false (fp32): the source's train.py always runs autocast + "
                     "GradScaler")
    elif c.get("amp_dtype") == "bfloat16":
        lines.append("amp_dtype bfloat16: the source's train.py autocasts to float16")
    if c.get("grad_clip"):
        lines.append(f"grad_clip {c['grad_clip']:g}: the source's train.py does not clip")
    if c.get("loss_border"):
        lines.append(f"loss_border {c['loss_border']}: the source's loss covers the whole patch")
    if c["frames"] != 3:
        lines.append(f"frames {c['frames']}: the source's test.py always builds 3 input frames "
                     "(its train.py takes num_frames)")
    if c.get("init_weights") and not str(c["init_weights"]).endswith(".pth.tar"):
        lines.append(f"init_weights {c['init_weights']}: in espcn-tune's format; the source's "
                     "pretrained loader needs a .pth.tar (export that file's trial, or convert "
                     "it with trainable.weights.source_checkpoint)")
    # Not a setting but a difference all the same: the search's patches share one crop window.
    lines.append("one crop window and flip per sample for all its frames: the source's train.py "
                 "crops each frame at its own random place and does not flip")
    return lines


def render(config: dict[str, Any], header: list[str], *, trial: str,
           weights: Path | None, scores: list[str]) -> str:
    """The text of ``config.py``. ``header``: the
    provenance lines; ``weights``: the exported .pth.tar (None: none written); ``scores``: the
    test-split lines, ours beside the source's convention."""
    c = config
    scale, frames = int(c["scale"]), int(c["frames"])
    paths = data_paths(c)
    multistep = c["lr_schedule"] == "multistep"
    plan = config_epochs(c, paths)
    missing = not_run(c)
    exp_name = f"ESPCN_x{scale}_EarlyFusion_{trial}"
    init = c.get("init_weights")
    pretrained = str(init) if init and str(init).endswith(".pth.tar") else ""
    sgd = c["optimizer"] == "sgd"
    values: dict[str, Any] = {
        "only_test_y_channel": False, "model_arch_name": f"espcn_x{scale}",
        "in_channels": frames, "out_channels": 1, "channels": _CHANNELS,
        "upscale_factor": scale, "num_frames": frames, "exp_name": exp_name,
        "dataset_type": "video",
        "train_gt_images_dir": "./data/T91/ESPCN/train",
        "test_gt_images_dir": "./data/Set5/GTmod12",
        "test_lr_images_dir": f"./data/Set5/LRbicx{scale}",
        **paths.values,
        "gt_image_size": int(c["patch_size"]) * scale, "batch_size": int(c["batch_size"]),
        "num_workers": 16,
        "pretrained_model_weights_path": pretrained, "resume_model_weights_path": "",
        "epochs": plan.epochs, "loss_weights": 1.0,
        "model_lr": float(c["model_lr"]),
        "model_momentum": float(c["momentum"]) if sgd else 0.9,
        "model_weight_decay": float(c["weight_decay"]),
        "model_nesterov": bool(c.get("nesterov", False)) and sgd,
        "lr_scheduler_milestones": plan.milestones,
        "lr_scheduler_gamma": float(c["lr_scheduler_gamma"]) if multistep else 0.1,
        "train_print_frequency": 100, "test_print_frequency": 1,
        "lr_dir": f"./data/Set5/LRbicx{scale}", "sr_dir": f"./results/test/{exp_name}",
        "gt_dir": "./data/Set5/GTmod12",
        "model_weights_path": str(weights) if weights is not None else "",
    }
    comments = {
        **paths.comments,
        "gt_image_size": f"HR pixels: patch_size {c['patch_size']} LR pixels x {scale}",
        "epochs": "passes over train_list_file; see the header",
        "lr_scheduler_milestones": "in epochs; see the header",
        "num_workers": "the source's value (its loaders need > 0: persistent_workers)",
        "model_weights_path": ("test.py's weights: this trial's, exported beside this file"
                               if weights is not None else "no .pth.tar was written: see above"),
        "pretrained_model_weights_path": ("the weights this trial started from"
                                          if pretrained else "the source's value"),
    }
    out = [f"# {line}" for line in [
        "espcn-tune export: config.py for the source repository (eden-17-9311/espcn-vespcn).",
        "Replace its config.py with this file and run its train.py and test.py unchanged.",
        *header]]
    out += ["#", "# What this trial used that the source's train.py does not run:"]
    out += [f"# NOT RUN: {line}" for line in missing]
    out += ["#", "# epochs and lr_scheduler_milestones, in the source's epochs:"]
    out += [f"#   {line}" for line in plan.lines]
    if scores:
        out += ["#", "# Test split:"] + [f"#   {line}" for line in scores]
    out += ["", "import random", "", "import numpy as np", "import torch",
            "from torch.backends import cudnn", "",
            "# The source's preamble: fixed seeds, cuDNN autotuning, TF32.",
            "random.seed(0)", "torch.manual_seed(0)", "np.random.seed(0)",
            'device = torch.device("cuda", 0) if torch.cuda.is_available() else '
            'torch.device("cpu")',
            "cudnn.benchmark = True", "cudnn.enabled = True",
            "torch.backends.cuda.matmul.allow_tf32 = True",
            "torch.backends.cudnn.allow_tf32 = True", ""]
    for name, value in values.items():
        note = comments.get(name)
        out.append(f"{name} = {_literal(value)}" + (f"  # {note}" if note else ""))
    out += ["", "# In the source's config.py but never read by its train.py: what it really runs.",
            "use_amp = True", "gradient_accumulation_steps = 1", "pin_memory = True",
            "prefetch_queue_size = 4", "persistent_workers = True", "model_ema_decay = 0.999",
            "", "# This trial's full espcn-tune config (python -m trainable reads it as YAML; "
            "nothing here reads it).", f"espcn_tune_config = {_literal(c)}"]
    return "\n".join(out) + "\n"


def _literal(v: Any) -> str:
    if isinstance(v, tuple):
        v = list(v)
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{v!r} has no Python literal")
    return repr(v)
