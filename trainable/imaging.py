"""Colour conversion and the one resampling function used for training and evaluation alike.

Convention (stated next to every number this project prints):
- Y is ITU-R BT.601 studio range, computed from 8-bit RGB in [0, 1]:
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` and rounded to uint8.
- Bicubic is MATLAB's ``imresize`` in both directions, border included: Keys' kernel (a = -0.5),
  stretched by the scale when downscaling (antialiasing), and the image mirrored at its edges
  (symmetric padding: the edge pixel repeated), as MATLAB's ``contributions`` mirror the indices of
  taps that fall outside the image. Both functions pad that way, then let
  ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)`` (the same kernel, which on
  its own cuts the kernel off at the edge and renormalises it) resample, and crop the padding.
- LR frames ("BIx4") are that downscale of the HR Y frame, in float, rounded to uint8 once, as
  the Python ports of ``imresize`` do. (MATLAB itself, given uint8, rounds after each of its two
  passes too, since ``imresizemex`` keeps the input's class: on test frames that moves 0-17% of LR
  pixels by one level, two at most.) HR frames are first cropped so both sides are multiples of
  the scale.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float32) / 255.0
# BT.601 studio range, the rows of Y, Cb, Cr from RGB in [0, 1], and the offsets (8-bit units).
_YCBCR = np.array([[65.481, 128.553, 24.966],
                   [-37.797, -74.203, 112.0],
                   [112.0, -93.786, -18.214]], dtype=np.float64)
_OFFSET = np.array([16.0, 128.0, 128.0])
_RGB_FROM_YCBCR = np.linalg.inv(_YCBCR / 255.0).T.astype(np.float32)


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) uint8 RGB -> (..., H, W) uint8 BT.601 studio-range Y."""
    if rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected (..., H, W, 3) RGB, got shape {rgb.shape}")
    y = 16.0 + rgb.astype(np.float32) @ _Y_WEIGHTS
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def rgb_to_cbcr(rgb: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) uint8 RGB -> (..., H, W, 2) float32 BT.601 studio-range Cb, Cr (8-bit units,
    not rounded: they are resampled before they are stored)."""
    if rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected (..., H, W, 3) RGB, got shape {rgb.shape}")
    weights = (_YCBCR[1:].T / 255.0).astype(np.float32)
    return rgb.astype(np.float32) @ weights + _OFFSET[1:].astype(np.float32)


def ycbcr_to_rgb(y: np.ndarray, cbcr: np.ndarray) -> np.ndarray:
    """(..., H, W) Y and (..., H, W, 2) Cb, Cr (8-bit units, studio range) -> uint8 RGB."""
    ycc = np.concatenate([y[..., None].astype(np.float32), cbcr.astype(np.float32)], axis=-1)
    rgb = (ycc - _OFFSET.astype(np.float32)) @ _RGB_FROM_YCBCR
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def mod_crop(frames: np.ndarray, scale: int) -> np.ndarray:
    """Crop (..., H, W) so H and W are multiples of ``scale`` (top-left anchored)."""
    h, w = frames.shape[-2:]
    return frames[..., : h - h % scale, : w - w % scale]


# Every bicubic tap, up or down, lies at most 2 LR pixels beyond the image (MATLAB's contributions:
# the kernel's half-width is 2 input pixels upscaling, 2 * scale HR pixels downscaling), so this
# much mirrored border makes every output's taps real or mirrored pixels, never cut off.
_PAD_LR = 2


def downscale(hr_y: np.ndarray, scale: int) -> np.ndarray:
    """(..., H, W) uint8 -> (..., H/scale, W/scale) uint8: MATLAB's ``imresize(x, 1/scale)``.

    H and W must be multiples of ``scale`` (see :func:`mod_crop`). Works in float32 on the CPU in
    chunks so a whole video fits in memory, and rounds once at the end.
    """
    h, w = hr_y.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"frame size {h}x{w} is not a multiple of scale {scale}")
    lead = hr_y.shape[:-2]
    flat = hr_y.reshape(-1, 1, h, w)
    out = np.empty((flat.shape[0], 1, h // scale, w // scale), dtype=np.uint8)
    p, q = _PAD_LR * scale, _PAD_LR
    for i in range(0, flat.shape[0], 64):
        # numpy's "symmetric" is MATLAB's mirror (edge pixel repeated), for any pad, even one
        # wider than the frame; padding the uint8 frames costs less than padding floats.
        padded = np.pad(flat[i : i + 64], ((0, 0), (0, 0), (p, p), (p, p)), mode="symmetric")
        x = torch.from_numpy(padded).float()
        y = F.interpolate(x, size=(h // scale + 2 * q, w // scale + 2 * q), mode="bicubic",
                          antialias=True, align_corners=False)
        out[i : i + 64] = y[..., q:-q, q:-q].round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out.reshape(*lead, h // scale, w // scale)


def upscale_bicubic(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, C, h, w) float -> (B, C, h*scale, w*scale) bicubic upscale (the baseline and residual).

    MATLAB ``imresize``'s bicubic (Keys, a = -0.5), as the SR papers' bicubic baselines use, border
    included: the frame is mirrored by 2 LR pixels (MATLAB's symmetric padding), upscaled with
    ``antialias=True`` (PyTorch's a = -0.5 kernel, equal to MATLAB's away from the edge) and
    cropped. Without the mirror, PyTorch cuts the kernel off at the edge, which changed the outer
    1.5 * scale HR pixels (3 at x2, 4 at x3, 6 at x4). Plain ``mode="bicubic"`` is a = -0.75 and
    scores 0.14-0.22 dB higher on our val frames. Any number of channels; any device.
    """
    b, c, h, w = lr.shape
    q = _PAD_LR
    padded = lr.index_select(2, _mirror_index(h, q, lr.device)).index_select(
        3, _mirror_index(w, q, lr.device))
    up = F.interpolate(padded, scale_factor=scale, mode="bicubic", align_corners=False,
                       antialias=True)
    return up[..., q * scale : (q + h) * scale, q * scale : (q + w) * scale]


def _mirror_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded by ``pad`` on each side, mirrored as MATLAB's
    imresize does (``aux = [1:n, n:-1:1]``, taken periodically): -1 -> 0, -2 -> 1, n -> n - 1.

    Cached per device, so an eager training step adds only the two gathers; under torch.compile
    the arithmetic is traced into the graph instead (Dynamo ignores an lru_cache, with a warning).
    """
    if torch.compiler.is_compiling():
        return _mirror_arange(n, pad, device)
    return _cached_mirror_index(n, pad, device)


def _mirror_arange(n: int, pad: int, device: torch.device) -> torch.Tensor:
    i = torch.arange(-pad, n + pad, device=device)
    m = torch.remainder(i, 2 * n)
    return torch.where(m < n, m, 2 * n - 1 - m)


@functools.lru_cache(maxsize=64)
def _cached_mirror_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    return _mirror_arange(n, pad, device)
