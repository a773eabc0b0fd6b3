"""Early-fusion ESPCN (Shi et al. 2016; early fusion as in VESPCN, Caballero et al. 2017).

``frames`` consecutive LR Y frames are stacked on the channel axis; one network predicts the
centre frame at ``scale`` times the resolution through a sub-pixel convolution.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainable.imaging import upscale_bicubic


class EarlyFusionESPCN(nn.Module):
    """conv5x5 -> 64, tanh; conv3x3 -> 32, tanh; conv3x3 -> scale^2; PixelShuffle(scale).

    Input ``(B, frames, h, w)`` in [0, 1]; output ``(B, 1, h*scale, w*scale)``, *not* clamped, so
    the training graph keeps its gradients everywhere. Clamp with :meth:`predict` for evaluation
    and export. With ``residual=True`` the network learns the difference to the bicubic upscale of
    the centre frame (a global residual).
    """

    def __init__(self, frames: int = 3, scale: int = 4, residual: bool = False) -> None:
        super().__init__()
        self.frames = frames
        self.scale = scale
        self.residual = residual
        self.body = nn.Sequential(
            nn.Conv2d(frames, 64, kernel_size=5, padding=2),
            nn.Tanh(),
            nn.Conv2d(64, 32, kernel_size=3, padding=1),
            nn.Tanh(),
        )
        self.sub_pixel = nn.Conv2d(32, scale * scale, kernel_size=3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        self._init_weights()

    def _init_weights(self) -> None:
        # The reference implementation: He-style normal for the feature convs, N(0, 0.001) for the
        # sub-pixel conv, zero biases.
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size[0]
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.out_channels * k * k)))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.sub_pixel.weight, 0.0, 0.001)
        if self.sub_pixel.bias is not None:
            nn.init.zeros_(self.sub_pixel.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h, w = x.shape
        if t != self.frames:
            raise ValueError(f"expected {self.frames} frames on dim 1, got {t}")
        out: torch.Tensor = self.shuffle(self.sub_pixel(self.body(x)))
        if self.residual:
            centre = x[:, t // 2 : t // 2 + 1]
            out = out + upscale_bicubic(centre.float(), self.scale).to(out.dtype)
        return out

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Inference output clamped to [0, 1]."""
        return self.forward(x).clamp_(0.0, 1.0)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
