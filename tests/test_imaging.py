"""`trainable.imaging.downscale` against an independent bicubic: PIL's ``Image.resize(BICUBIC)``.

PIL resamples with the same Keys kernel (a = -0.5), antialiased (the kernel stretched by the
scale) and edge-clamped, but in 8-bit fixed point. Measured on these frames (noise, a smooth
pattern, hard edges; x2, x3, x4): the largest difference is 1 grey level, the mean at most 0.2.
A wrong resampler is far outside that: without antialiasing the noise frame differs by up to 132
levels (mean 41), antialiased bilinear by up to 8 (mean 2.6), area averaging by up to 23.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from trainable.imaging import downscale

MAX_DIFF = 1  # grey levels: PIL's 8-bit fixed-point weights against our float32 then rounding
MEAN_DIFF = 0.25


def pil_bicubic(frame: np.ndarray, scale: int) -> np.ndarray:
    """The independent reference: PIL's antialiased bicubic downscale of one uint8 frame."""
    h, w = frame.shape
    return np.asarray(Image.fromarray(frame).resize((w // scale, h // scale), Image.BICUBIC))


def assert_close_to_pil(lr: np.ndarray, hr: np.ndarray, scale: int) -> None:
    """Every (H, W) frame of ``lr`` within MAX_DIFF of PIL's downscale of ``hr``'s."""
    lr, hr = lr.reshape(-1, *lr.shape[-2:]), hr.reshape(-1, *hr.shape[-2:])
    for i, (small, big) in enumerate(zip(lr, hr, strict=True)):
        diff = np.abs(small.astype(int) - pil_bicubic(big, scale).astype(int)).max()
        assert diff <= MAX_DIFF, f"frame {i}: max difference {diff} from PIL"


def _frames(h: int, w: int) -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    edges = np.zeros((h, w), np.uint8)
    edges[:, w // 3:] = 200
    edges[h // 2:, :] //= 2
    return {
        "noise": np.random.default_rng(0).integers(0, 256, (h, w), dtype=np.uint8),
        "smooth": np.clip(128 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0), 0, 255
                          ).astype(np.uint8),
        "edges": edges,
    }


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_downscale_matches_pil_bicubic(scale: int) -> None:
    h, w = 12 * scale, 16 * scale
    frames = _frames(h, w)
    ours = downscale(np.stack(list(frames.values())), scale)  # a stack: the leading axes kept
    assert ours.shape == (len(frames), 12, 16) and ours.dtype == np.uint8
    for i, (name, frame) in enumerate(frames.items()):
        pil = pil_bicubic(frame, scale)
        diff = np.abs(ours[i].astype(int) - pil.astype(int))
        assert diff.max() <= MAX_DIFF, f"{name} x{scale}: max difference {diff.max()}"
        assert diff.mean() <= MEAN_DIFF, f"{name} x{scale}: mean difference {diff.mean():.3f}"


def test_the_tolerance_catches_a_resampler_without_antialiasing() -> None:
    # The check above is able to fail: plain (point-sampled) bicubic is far outside it.
    import torch
    import torch.nn.functional as F

    frame = _frames(48, 64)["noise"]
    x = torch.from_numpy(frame).float()[None, None]
    aliased = F.interpolate(x, size=(12, 16), mode="bicubic", antialias=False,
                            align_corners=False).round().clamp(0, 255)[0, 0].numpy()
    pil = pil_bicubic(frame, 4)
    assert np.abs(aliased.astype(int) - pil.astype(int)).max() > 10 * MAX_DIFF
