"""What the training loop reports after each validation: one :class:`ValidationResult`.

Plain data, no torch: the run folder's result row (`analysis.result_row.ResultRow`) is this with
what a search writes around it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ValidationResult:
    """What the loop hands to its callback after each validation (and what Tune reports)."""

    epoch: int  # epochs completed
    samples: int  # training samples seen
    max_epochs: int
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float
    gain_db: float  # psnr - bicubic_psnr
    best_psnr: float
    best_epoch: int
    loss: float  # mean training loss since the previous validation
    lr: float
    samples_per_s: float
    steps_per_s: float  # optimizer updates per second
    data_time_share: float  # share of the interval's wall time spent sampling patches
    status: str  # "running" | "completed" | "diverged" | "stopped_early" (early_stop_patience)
    # PSNR of each validation target frame, in the split's fixed order (empty when diverged):
    # lets analysis compare two trials frame by frame and call near-equal ones a tie.
    psnr_frames: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["psnr_frames"] = list(self.psnr_frames)
        return d
