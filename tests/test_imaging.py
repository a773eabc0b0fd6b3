"""`trainable.imaging`'s resampling against MATLAB's ``imresize``, written out here from its algorithm.

The reference (:func:`matlab_imresize`) follows MATLAB's ``imresize.m`` step by step, in float64:
``contributions()`` places each output pixel at ``u = x / scale + 0.5 * (1 - 1 / scale)`` (1-based),
takes ``P = ceil(width) + 2`` taps from ``floor(u - width / 2)``, weights them with Keys' cubic
(a = -0.5), stretched by ``1 / scale`` when downscaling (``h(x) = scale * cubic(scale * x)``, width
``4 / scale``), normalises each row to sum 1, and mirrors the indices of taps outside the image
through ``aux = [1:n, n:-1:1]`` (symmetric padding: -1 -> 2, 0 -> 1, n + 1 -> n, 1-based). It
resizes the rows first, then the columns (``dimensionOrder``: equal scales keep that order), and,
as the Python ports papers use do, in float throughout: one rounding at the end.

The project's functions are a different computation (mirror-pad, then PyTorch's antialiased
bicubic, then crop), so agreeing with it over whole images, border included, is a real check.
PIL is a third, independent implementation of the kernel; it cuts the kernel off at the edge (as
PyTorch does without the padding), so it is compared on the interior only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from trainable.imaging import downscale, upscale_bicubic

# downscale rounds a float32 result that lies within 1e-4 grey levels of MATLAB's: it can differ
# from the reference by at most half a level (plus that float error), and only by rounding.
ROUNDING = 0.5 + 1e-3
BORDER_LR = 2  # LR pixels at each side whose taps reach outside the frame


# --- the reference: MATLAB's imresize, bicubic, antialiased --------------------------------------
def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return ((1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
            + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((1 < ax) & (ax <= 2)))


def matlab_contributions(in_length: int, out_length: int, scale: float
                         ) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``contributions``: (weights, 0-based mirrored indices), both (out_length, P)."""
    if scale < 1:  # antialiasing: the kernel stretched by 1 / scale
        def h(x: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * x)
        width = 4.0 / scale
    else:
        h, width = _cubic, 4.0
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps)  # 1-based, may lie outside 1..in_length
    weights = h(u[:, None] - indices)
    weights /= weights.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(1, in_length + 1), np.arange(in_length, 0, -1)])
    indices = aux[np.mod(indices - 1, aux.size).astype(np.int64)]
    return weights, indices - 1


def matlab_imresize(image: np.ndarray, scale: float) -> np.ndarray:
    """(H, W) -> (ceil(H * scale), ceil(W * scale)) float64, rows resized first."""
    out = np.asarray(image, dtype=np.float64)
    for axis in (0, 1):
        n = out.shape[axis]
        weights, indices = matlab_contributions(n, math.ceil(n * scale), scale)
        moved = np.moveaxis(out, axis, 0)
        out = np.moveaxis((weights[:, :, None] * moved[indices]).sum(axis=1), 0, axis)
    return out


def test_the_reference_mirrors_as_matlab_does() -> None:
    # Upscaling 4 pixels x2: the first output sits at u = 0.75 (1-based) and takes the 6 taps
    # -2..3, of which -2, -1 and 0 mirror onto pixels 3, 2 and 1 (0-based 2, 1, 0), -2 with weight
    # 0; the last (u = 4.25) takes 2..7, and 5, 6, 7 mirror onto 4, 3, 2.
    weights, indices = matlab_contributions(4, 8, 2.0)
    assert indices[0].tolist() == [2, 1, 0, 0, 1, 2]
    assert indices[-1].tolist() == [1, 2, 3, 3, 2, 1]
    np.testing.assert_allclose(weights[0], [0, -0.0234375, 0.2265625, 0.8671875, -0.0703125, 0])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    # A 1-pixel-wide image mirrors onto itself however far the taps reach.
    _, one = matlab_contributions(1, 4, 4.0)
    assert (one == 0).all()
    # Constants stay constant, up and down, border included.
    flat = np.full((6, 10), 77.0)
    np.testing.assert_allclose(matlab_imresize(flat, 3), 77.0)
    np.testing.assert_allclose(matlab_imresize(matlab_imresize(flat, 3), 1 / 3), 77.0)


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


# LR sizes: odd and even on each side, a frame as small as the padding, and one a single pixel
# wide (its mirror wraps round more than once).
LR_SIZES = [(6, 8), (7, 5), (9, 12), (3, 2), (1, 4)]


# --- downscale: the LR frames ------------------------------------------------------------------
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("lr_size", LR_SIZES)
def test_downscale_is_matlabs_imresize_border_included(scale: int, lr_size: tuple[int, int]
                                                       ) -> None:
    h, w = lr_size[0] * scale, lr_size[1] * scale
    frames = _frames(h, w)
    ours = downscale(np.stack(list(frames.values())), scale)  # a stack: the leading axes kept
    assert ours.shape == (len(frames), *lr_size) and ours.dtype == np.uint8
    for i, (name, frame) in enumerate(frames.items()):
        ref = np.clip(matlab_imresize(frame, 1 / scale), 0, 255)
        diff = np.abs(ours[i] - ref)
        assert diff.max() <= ROUNDING, (
            f"{name} {h}x{w} x{scale}: {diff.max():.3f} levels from MATLAB at "
            f"{np.unravel_index(diff.argmax(), diff.shape)}")


def test_downscale_keeps_leading_axes_and_rejects_a_size_off_the_scale() -> None:
    clip = np.random.default_rng(3).integers(0, 256, (2, 3, 12, 16), dtype=np.uint8)
    out = downscale(clip, 4)
    assert out.shape == (2, 3, 3, 4)
    np.testing.assert_array_equal(out[1, 2], downscale(clip[1, 2], 4))
    with pytest.raises(ValueError, match="10x16 is not a multiple of scale 4"):
        downscale(clip[..., :10, :], 4)


# --- upscale_bicubic: the baseline and the residual ---------------------------------------------
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("lr_size", LR_SIZES)
def test_upscale_is_matlabs_imresize_border_included(scale: int, lr_size: tuple[int, int]) -> None:
    rng = np.random.default_rng(scale)
    lr = rng.random((2, 3, *lr_size))  # batch 2, 3 channels: every channel resized alike
    ref = np.stack([[matlab_imresize(c, scale) for c in b] for b in lr])
    got = upscale_bicubic(torch.from_numpy(lr), scale)
    assert got.shape == (2, 3, lr_size[0] * scale, lr_size[1] * scale)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12)
    got32 = upscale_bicubic(torch.from_numpy(lr).float(), scale)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), ref, rtol=0, atol=2e-6)


def test_upscale_any_number_of_channels_and_a_strided_input() -> None:
    # A fused trainer upscales many channels at once, and takes the centre frame as a slice.
    x = torch.rand(3, 7, 10, 13)
    many = upscale_bicubic(x, 4)
    for c in range(7):
        torch.testing.assert_close(many[:, c : c + 1], upscale_bicubic(x[:, c : c + 1], 4),
                                   rtol=0, atol=1e-6)
    window = torch.rand(2, 3, 9, 11)
    torch.testing.assert_close(upscale_bicubic(window[:, 1:2], 3),
                               upscale_bicubic(window[:, 1:2].contiguous(), 3))


# --- the checks above can fail: the cut-off kernel passes the interior, not the border ------------
def _cut_off_up(lr: np.ndarray, scale: int) -> np.ndarray:
    x = torch.from_numpy(lr)[None, None]
    return F.interpolate(x, scale_factor=scale, mode="bicubic", antialias=True,
                         align_corners=False)[0, 0].numpy()


def _cut_off_down(hr: np.ndarray, scale: int) -> np.ndarray:
    h, w = hr.shape
    x = torch.from_numpy(hr.astype(np.float32))[None, None]
    y = F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True,
                      align_corners=False)
    return y.round().clamp(0, 255)[0, 0].numpy()


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_the_old_cut_off_border_fails_and_its_interior_passes(scale: int) -> None:
    # What downscale and upscale_bicubic did before issue 20: PyTorch's kernel without the mirror.
    hr = _frames(12 * scale, 16 * scale)["noise"]
    ref = np.clip(matlab_imresize(hr, 1 / scale), 0, 255)
    diff = np.abs(_cut_off_down(hr, scale) - ref)
    b = BORDER_LR
    assert diff[b:-b, b:-b].max() <= ROUNDING  # the interior was MATLAB's already
    assert diff.max() > 5  # the border was not, by far more than rounding
    lr = np.random.default_rng(0).random((10, 12))
    ref_up = matlab_imresize(lr, scale)
    diff_up = np.abs(_cut_off_up(lr, scale) - ref_up)
    inner = slice(2 * scale, -2 * scale)
    assert diff_up[inner, inner].max() < 1e-6
    # Rows of the outer 1.5 * scale HR pixels (rounded down) differed, and no row further in.
    rows = set(np.nonzero(diff_up[:, inner].max(axis=1) > 1e-9)[0].tolist())
    outer, n = int(1.5 * scale), 10 * scale
    assert {0, outer - 1, n - 1, n - outer} <= rows <= set(range(outer)) | set(range(n - outer, n))
    assert diff_up.max() > 1e-3


# --- PIL: an independent implementation of the same antialiased kernel (interior only) ----------
MAX_DIFF = 1  # grey levels: PIL's 8-bit fixed-point weights against our float32 then rounding
MEAN_DIFF = 0.25


def pil_bicubic(frame: np.ndarray, scale: int) -> np.ndarray:
    """PIL's antialiased bicubic downscale of one uint8 frame (kernel cut off at the edge)."""
    h, w = frame.shape
    return np.asarray(Image.fromarray(frame).resize((w // scale, h // scale), Image.BICUBIC))


def assert_matches_matlab(lr: np.ndarray, hr: np.ndarray, scale: int) -> None:
    """Every (H, W) frame of ``lr`` is MATLAB's imresize of ``hr``'s, up to the final rounding."""
    lr, hr = lr.reshape(-1, *lr.shape[-2:]), hr.reshape(-1, *hr.shape[-2:])
    for i, (small, big) in enumerate(zip(lr, hr, strict=True)):
        diff = np.abs(small - np.clip(matlab_imresize(big, 1 / scale), 0, 255)).max()
        assert diff <= ROUNDING, f"frame {i}: {diff:.3f} levels from MATLAB's imresize"


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_downscale_matches_pil_bicubic_in_the_interior(scale: int) -> None:
    h, w = 12 * scale, 16 * scale
    frames = _frames(h, w)
    ours = downscale(np.stack(list(frames.values())), scale)
    b = BORDER_LR
    for i, (name, frame) in enumerate(frames.items()):
        pil = pil_bicubic(frame, scale)
        diff = np.abs(ours[i].astype(int) - pil.astype(int))[b:-b, b:-b]
        assert diff.max() <= MAX_DIFF, f"{name} x{scale}: max difference {diff.max()}"
        assert diff.mean() <= MEAN_DIFF, f"{name} x{scale}: mean difference {diff.mean():.3f}"


def test_the_tolerance_catches_a_resampler_without_antialiasing() -> None:
    # The PIL check is able to fail: plain (point-sampled) bicubic is far outside it.
    frame = _frames(48, 64)["noise"]
    x = torch.from_numpy(frame).float()[None, None]
    aliased = F.interpolate(x, size=(12, 16), mode="bicubic", antialias=False,
                            align_corners=False).round().clamp(0, 255)[0, 0].numpy()
    pil = pil_bicubic(frame, 4)
    assert np.abs(aliased.astype(int) - pil.astype(int))[2:-2, 2:-2].max() > 10 * MAX_DIFF
