import math

import numpy as np
import pytest
import torch

from trainable.metrics import psnr, ssim, to_uint8


def _pair(seed=0, shape=(3, 40, 48), noise=20):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return a, b


def test_psnr_known_value():
    a = torch.full((1, 16, 16), 100, dtype=torch.uint8)
    b = torch.full((1, 16, 16), 110, dtype=torch.uint8)
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(255**2 / 100))


def test_identical_images():
    a, _ = _pair()
    t = torch.from_numpy(a)
    assert torch.isinf(psnr(t, t)).all()
    assert torch.allclose(ssim(t, t), torch.ones(3, dtype=torch.float64))


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(1, 8, 8), torch.zeros(1, 8, 9))
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(torch.zeros(1, 12, 12), torch.zeros(1, 13, 12))


def test_against_scikit_image_reference():
    skm = pytest.importorskip("skimage.metrics")
    a, b = _pair()
    ours_p = psnr(torch.from_numpy(a), torch.from_numpy(b))
    ours_s = ssim(torch.from_numpy(a), torch.from_numpy(b))
    for i in range(len(a)):
        assert ours_p[i].item() == pytest.approx(
            skm.peak_signal_noise_ratio(a[i], b[i], data_range=255), abs=1e-9)
        ref = skm.structural_similarity(a[i], b[i], data_range=255, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False)
        assert ours_s[i].item() == pytest.approx(ref, abs=1e-6)


def test_crop_border_ignores_the_border():
    a = torch.full((1, 20, 20), 50, dtype=torch.uint8)
    b = a.clone()
    b[:, :2] = 0  # damage only the top two rows
    assert math.isfinite(psnr(a, b).item())
    assert torch.isinf(psnr(a, b, crop_border=2)).all()


def test_to_uint8_rounds_and_clamps():
    x = torch.tensor([-0.5, 0.0, 0.5 / 255, 1.49 / 255, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 0, 0, 1, 255, 255]  # 0.5 rounds to even


def test_to_uint8_gives_uint8():
    assert to_uint8(torch.rand(1, 4, 4, dtype=torch.float16)).dtype == torch.uint8


def test_ssim_crop_border_scores_the_cropped_frames():
    a, b = _pair(seed=1, shape=(2, 30, 34))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    cropped = ssim(ta[:, 3:-3, 3:-3], tb[:, 3:-3, 3:-3])
    assert torch.equal(ssim(ta, tb, crop_border=3), cropped)
    assert not torch.equal(ssim(ta, tb), cropped)


def test_ssim_needs_11x11_and_says_what_it_got():
    a, b = _pair(seed=2, shape=(1, 11, 11))
    assert ssim(torch.from_numpy(a), torch.from_numpy(b)).shape == (1,)  # the smallest frame
    with pytest.raises(ValueError, match=r"at least 11x11 pixels, got \(10, 12\)"):
        ssim(torch.zeros(1, 10, 12), torch.zeros(1, 10, 12))
    with pytest.raises(ValueError, match=r"expected \(B, H, W\) Y frames, got shape \(12, 12\)"):
        psnr(torch.zeros(12, 12), torch.zeros(12, 12))


def test_the_window_is_a_float64_gaussian_and_the_blur_a_valid_convolution():
    from trainable.metrics import _blur_valid, _gaussian_taps

    x = np.arange(11) - 5.0
    g = np.exp(-(x**2) / (2 * 1.5**2))
    assert _gaussian_taps() == pytest.approx((g / g.sum()).tolist(), rel=1e-15, abs=0)
    frames = torch.rand(2, 15, 13, dtype=torch.float64)  # (B, H, W), as well as stacked
    w = torch.tensor(_gaussian_taps(), dtype=torch.float64)
    ref = torch.nn.functional.conv2d(frames[:, None], torch.outer(w, w)[None, None])[:, 0]
    torch.testing.assert_close(_blur_valid(frames, _gaussian_taps()), ref, rtol=1e-12, atol=1e-12)


def _ssim_float64(a: torch.Tensor, b: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """SSIM as it was computed before issue 25: float64, five blurred maps, the batch at once."""
    from trainable.metrics import _C1, _C2, _blur_valid, _gaussian_taps

    if crop_border:
        a = a[:, crop_border:-crop_border, crop_border:-crop_border]
        b = b[:, crop_border:-crop_border, crop_border:-crop_border]
    a, b = a.double(), b.double()
    mu_a, mu_b, aa, bb, ab = _blur_valid(torch.stack([a, b, a * a, b * b, a * b]),
                                         _gaussian_taps()).unbind(0)
    num = (2 * mu_a * mu_b + _C1) * (2 * (ab - mu_a * mu_b) + _C2)
    den = (mu_a**2 + mu_b**2 + _C1) * (aa - mu_a**2 + bb - mu_b**2 + _C2)
    return (num / den).mean(dim=(1, 2))


@pytest.mark.parametrize("noise", [1, 20, 255])
def test_ssim_in_pieces_is_the_whole_batchs_ssim(noise):
    """Issue 25: SSIM a piece of the batch at a time on the CPU, from four maps, on 448x256
    frames that span every level and on a flat bright one (where float32 was off by 3e-5)."""
    a, b = _pair(seed=noise, shape=(5, 256, 448), noise=noise)
    a[1], b[1] = 255, 254  # flat and bright: the means are largest, the variances 0
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ours = ssim(ta, tb)
    assert ours.dtype == torch.float64 and ours.shape == (5,)
    assert torch.allclose(ours, _ssim_float64(ta, tb), rtol=0, atol=1e-12)
    assert torch.allclose(ssim(ta, tb, 3), _ssim_float64(ta, tb, 3), rtol=0, atol=1e-12)
