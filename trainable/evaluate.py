"""Validation and test scoring: the model and the bicubic baseline through exactly the same code.

Every target frame of the split is scored once: the ``frames``-long window centred on it (clamped
at clip edges) goes in, the output is clamped to [0, 1] and rounded to 8 bits, and PSNR/SSIM are
computed on the Y channel against the HR frame (see :mod:`trainable.metrics`), then averaged over
frames. The bicubic baseline of a split is the same for every run that scores it: it is computed
once per machine and kept with the split's cache (:func:`bicubic_scores`).

The source repository's test.py (and the validation of its train.py) scores otherwise: border crop
= the scale, the output not rounded to 8 bits (`source_convention`). `score_conventions` scores
one pass of a model in several conventions, so its numbers can stand beside ours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from trainable.imaging import upscale_bicubic
from trainable.metrics import psnr, ssim, to_uint8
from trainable.progress import Progress
from trainable.sampler import as_tensor

if TYPE_CHECKING:
    from trainable.store import SplitData

# Pixels per evaluation batch: bounds memory whatever the frame size. (9 Vimeo frames a batch
# instead of 36 ran the model no faster in a whole validation on the CPU: BENCHMARKS.md, "Vimeo90K
# at full scale".)
_HR_PIXELS_PER_BATCH = 1 << 22


def convention(crop_border: int) -> str:
    return Convention(crop_border).describe()


class Convention(NamedTuple):
    """How a number is scored: pixels cropped at each border, and whether the output is rounded
    to 8 bits first (ours) or scored as the float it is (the source repository's)."""

    crop_border: int
    rounded: bool = True

    def describe(self) -> str:
        output = "output rounded to 8 bits" if self.rounded else "output not rounded (float)"
        return f"Y (BT.601 studio range) of the centre frame, {output}, border crop {self.crop_border}"


def source_convention(scale: int) -> Convention:
    """The source repository's test.py: border crop = the scale, the output not rounded. (Its HR
    Y is computed in float from the PNG; ours is stored rounded to 8 bits, which moves a PSNR
    near 30 dB by about 0.005 dB.)"""
    return Convention(scale, rounded=False)


@dataclass(frozen=True)
class Scores:
    psnr: float  # mean over the split's target frames
    ssim: float
    frames: int
    # PSNR of every target frame, in the split's fixed order: the same frames in the same order for
    # every model scored on a split, so two models can be compared frame by frame (paired).
    psnr_frames: tuple[float, ...] = ()


def _windows(data: SplitData, frames: int, device: torch.device
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (LR windows (B, frames, h, w) in [0, 1], HR centres (B, H, W) uint8) for every target."""
    offsets = torch.arange(frames) - frames // 2
    for g in data.groups:
        lr_all, hr_all = as_tensor(g.lr, torch.device("cpu")), as_tensor(g.hr, torch.device("cpu"))
        n, t_len = lr_all.shape[:2]
        pairs = [(i, c) for i in range(n) for c in g.centres]
        per_batch = max(1, _HR_PIXELS_PER_BATCH // (hr_all.shape[-1] * hr_all.shape[-2]))
        for k in range(0, len(pairs), per_batch):
            clip = torch.tensor([p[0] for p in pairs[k : k + per_batch]])
            centre = torch.tensor([p[1] for p in pairs[k : k + per_batch]])
            times = (centre[:, None] + offsets).clamp_(0, t_len - 1)
            lr = lr_all[clip[:, None], times].to(device).float().div_(255.0)
            hr = hr_all[clip, centre].to(device)
            yield lr, hr


def score(predict: Callable[[torch.Tensor], torch.Tensor], data: SplitData, *, frames: int,
          crop_border: int, device: torch.device, progress: str | None = None) -> Scores:
    """Average PSNR/SSIM of ``predict`` (LR windows -> (B, 1, H, W) in [0, 1]) over the split.
    ``progress``: what to call it on a progress bar (a long scoring, the test split's)."""
    return score_conventions(predict, data, frames=frames, device=device,
                             conventions=(Convention(crop_border),), progress=progress)[0]


def score_conventions(predict: Callable[[torch.Tensor], torch.Tensor], data: SplitData, *,
                      frames: int, device: torch.device, conventions: Sequence[Convention],
                      progress: str | None = None) -> tuple[Scores, ...]:
    """`score` in each of ``conventions``, from one pass of ``predict`` over the split."""
    per_frame: list[list[float]] = [[] for _ in conventions]
    s_sum = [0.0 for _ in conventions]
    with torch.no_grad(), Progress(data.num_targets, progress or "", unit="frame",
                                   terminal=None if progress else False) as bar:
        for lr, hr in _windows(data, frames, device):
            out = predict(lr)[:, 0]
            for k, c in enumerate(conventions):
                sr = to_uint8(out) if c.rounded else out.float().clamp(0, 1) * 255.0
                per_frame[k] += psnr(sr, hr, c.crop_border).tolist()
                s_sum[k] += ssim(sr, hr, c.crop_border).sum().item()
            if progress:
                bar.update(len(hr))
    count = len(per_frame[0])
    if count == 0:
        raise ValueError(f"{data.source}: the {data.split} split has no frames to score")
    return tuple(Scores(psnr=sum(p) / count, ssim=s / count, frames=count, psnr_frames=tuple(p))
                 for p, s in zip(per_frame, s_sum, strict=True))


def model_predictor(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network's clamped output, in fp32 on purpose: the reported number must not depend on
    the AMP setting. The caller puts the model in eval mode."""
    return lambda x: model(x).clamp(0, 1)


def bicubic_predictor(frames: int, scale: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The baseline: the bicubic upscale of the centre frame, clamped."""
    def bicubic(lr: torch.Tensor) -> torch.Tensor:
        centre = lr[:, frames // 2 : frames // 2 + 1]
        return upscale_bicubic(centre, scale).clamp(0, 1)

    return bicubic


def score_model(model: torch.nn.Module, data: SplitData, *, frames: int, crop_border: int,
                device: torch.device, progress: str | None = None) -> Scores:
    was_training = model.training
    model.eval()
    try:
        return score(model_predictor(model), data, frames=frames, crop_border=crop_border,
                     device=device, progress=progress)
    finally:
        model.train(was_training)


def score_bicubic(data: SplitData, *, frames: int, crop_border: int,
                  device: torch.device, progress: str | None = None) -> Scores:
    return score(bicubic_predictor(frames, data.scale), data, frames=frames,
                 crop_border=crop_border, device=device, progress=progress)


def bicubic_scores(data: SplitData, *, frames: int, crop_border: int, device: torch.device,
                   progress: str | None = None) -> Scores:
    """:func:`score_bicubic`, once per machine (:func:`bicubic_conventions`)."""
    return bicubic_conventions(data, frames=frames, device=device,
                               conventions=(Convention(crop_border),), progress=progress)[0]


def bicubic_conventions(data: SplitData, *, frames: int, device: torch.device,
                        conventions: Sequence[Convention], progress: str | None = None
                        ) -> tuple[Scores, ...]:
    """The bicubic baseline in each of ``conventions``, each computed once per split, convention
    and clip sample (those missing in one pass) and kept with the split's cache for every later
    run on the machine (`trainable.store.keep`). Bicubic upscales the window's centre, the target
    frame itself, so ``frames`` does not change it."""
    from trainable.store import keep, recall

    sample = f"-of{data.sampled_from}-n{data.num_clips}" if data.sampled_from else ""
    names = [f"bicubic-c{c.crop_border}{'' if c.rounded else '-float'}{sample}"
             for c in conventions]
    kept = [recall(data, name) for name in names]
    missing = [k for k, value in enumerate(kept) if value is None]
    if missing:
        computed = score_conventions(bicubic_predictor(frames, data.scale), data, frames=frames,
                                     device=device, progress=progress,
                                     conventions=[conventions[k] for k in missing])
        for k, scores in zip(missing, computed, strict=True):
            value = dataclasses.asdict(scores)
            keep(data, names[k], value)
            kept[k] = value
    return tuple(Scores(psnr=v["psnr"], ssim=v["ssim"], frames=v["frames"],
                        psnr_frames=tuple(v["psnr_frames"])) for v in kept if v is not None)
