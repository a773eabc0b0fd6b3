"""Validation and test scoring: the model and the bicubic baseline through exactly the same code.

Every target frame of the split is scored once: the ``frames``-long window centred on it (clamped
at clip edges) goes in, the output is clamped to [0, 1] and rounded to 8 bits, and PSNR/SSIM are
computed on the Y channel against the HR frame (see :mod:`trainable.metrics`), then averaged over
frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from trainable.imaging import upscale_bicubic
from trainable.metrics import psnr, ssim, to_uint8
from trainable.sampler import as_tensor

if TYPE_CHECKING:
    from trainable.store import SplitData

# Pixels per evaluation batch: bounds memory whatever the frame size.
_HR_PIXELS_PER_BATCH = 1 << 22


def convention(crop_border: int) -> str:
    return (f"Y (BT.601 studio range) of the centre frame, output rounded to 8 bits, "
            f"border crop {crop_border}")


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
          crop_border: int, device: torch.device) -> Scores:
    """Average PSNR/SSIM of ``predict`` (LR windows -> (B, 1, H, W) in [0, 1]) over the split."""
    per_frame: list[float] = []
    s_sum = 0.0
    with torch.no_grad():
        for lr, hr in _windows(data, frames, device):
            sr = to_uint8(predict(lr)[:, 0])
            per_frame += psnr(sr, hr, crop_border).tolist()
            s_sum += ssim(sr, hr, crop_border).sum().item()
    count = len(per_frame)
    if count == 0:
        raise ValueError(f"{data.source}: the {data.split} split has no frames to score")
    return Scores(psnr=sum(per_frame) / count, ssim=s_sum / count, frames=count,
                  psnr_frames=tuple(per_frame))


def score_model(model: torch.nn.Module, data: SplitData, *, frames: int, crop_border: int,
                device: torch.device) -> Scores:
    was_training = model.training
    model.eval()
    try:
        # fp32 on purpose: the reported number must not depend on the AMP setting.
        return score(lambda x: model(x).clamp(0, 1), data, frames=frames,
                     crop_border=crop_border, device=device)
    finally:
        model.train(was_training)


def score_bicubic(data: SplitData, *, frames: int, crop_border: int,
                  device: torch.device) -> Scores:
    def bicubic(lr: torch.Tensor) -> torch.Tensor:
        centre = lr[:, frames // 2 : frames // 2 + 1]
        return upscale_bicubic(centre, data.scale).clamp(0, 1)

    return score(bicubic, data, frames=frames, crop_border=crop_border, device=device)
