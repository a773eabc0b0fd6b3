"""PSNR and SSIM on 8-bit Y frames (BasicSR / Wang et al. 2004 conventions).

Contract, for every function here:
- inputs are batches ``(B, H, W)`` of the Y channel holding integer values in [0, 255] (uint8, or
  float already rounded to 8 bits: quantise model outputs with :func:`to_uint8` before scoring;
  only the source repository's convention, `trainable.evaluate.source_convention`, passes the
  float output times 255 unrounded);
- ``crop_border`` pixels are dropped at each border before scoring;
- the result is one value per frame, ``(B,)`` float64; average over frames yourself;
- shapes must match exactly, otherwise ``ValueError``.
PSNR of identical frames is ``inf``.
"""

from __future__ import annotations

import torch

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model output in [0, 1] (any float dtype) -> rounded 8-bit values, as uint8."""
    return (x.float().clamp(0, 1) * 255.0).round_().to(torch.uint8)


def _prepare(a: torch.Tensor, b: torch.Tensor, crop_border: int) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim != 3:
        raise ValueError(f"expected (B, H, W) Y frames, got shape {tuple(a.shape)}")
    if crop_border:
        a = a[:, crop_border:-crop_border, crop_border:-crop_border]
        b = b[:, crop_border:-crop_border, crop_border:-crop_border]
    return a.double(), b.double()


def psnr(a: torch.Tensor, b: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB with peak 255, per frame."""
    a, b = _prepare(a, b, crop_border)
    mse = (a - b).pow(2).mean(dim=(1, 2))
    return 10.0 * torch.log10(255.0**2 / mse)


def _gaussian_taps(size: int = 11, sigma: float = 1.5) -> list[float]:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).tolist()


def _blur_valid(x: torch.Tensor, taps: list[float]) -> torch.Tensor:
    """Separable Gaussian over the last two axes, valid region only, as shifted adds: 1-channel
    ``conv2d`` on the CPU was 14x slower on 720p frames (it dominated validation)."""
    n = len(taps)
    h = x.shape[-2] - n + 1
    rows = x[..., 0:h, :] * taps[0]
    for k in range(1, n):
        rows.add_(x[..., k : k + h, :], alpha=taps[k])
    w = x.shape[-1] - n + 1
    out = rows[..., 0:w] * taps[0]
    for k in range(1, n):
        out.add_(rows[..., k : k + w], alpha=taps[k])
    return out


# SSIM's pixels per piece on the CPU (two 448x256 frames): a piece's four float64 maps (about
# 7 MB) stay in the cache through the blur's 22 passes; the whole batch at once streamed a hundred
# MB through memory for each of them, and SSIM took two thirds of a validation.
_SSIM_CPU_PIXELS = 1 << 18


def ssim(a: torch.Tensor, b: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """Structural similarity (11x11 Gaussian window, sigma 1.5, valid region only), per frame.

    In float64 (float32's windowed variances were off by up to 3e-5 on flat bright regions), a
    piece of the batch at a time on the CPU, and from four blurred maps (a, b, a^2 + b^2, ab:
    the two variances are only ever summed): 3.7x faster than the whole batch's five maps over a
    validation of 200 Vimeo frames, the same values to 1e-15 (BENCHMARKS.md, "Vimeo90K at full
    scale")."""
    a, b = _prepare(a, b, crop_border)
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs frames of at least 11x11 pixels, got {tuple(a.shape[-2:])}")
    per = a.shape[0] if a.device.type != "cpu" else max(1, _SSIM_CPU_PIXELS // a[0].numel())
    return torch.cat([_ssim(a[i : i + per], b[i : i + per]) for i in range(0, a.shape[0], per)])


def _ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mu_a, mu_b, sq, ab = _blur_valid(torch.stack([a, b, a * a + b * b, a * b]),
                                     _gaussian_taps()).unbind(0)
    mu_aa, mu_bb = mu_a * mu_a, mu_b * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * (ab - mu_a * mu_b) + _C2)
    den = (mu_aa + mu_bb + _C1) * (sq - mu_aa - mu_bb + _C2)
    return (num / den).mean(dim=(1, 2))
