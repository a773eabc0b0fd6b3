import pytest
import torch

from trainable.model import EarlyFusionESPCN, count_parameters


@pytest.mark.parametrize(("frames", "scale", "params"), [(3, 4, 27_952), (1, 4, 24_752)])
def test_parameter_count_matches_the_paper_layout(frames, scale, params):
    assert count_parameters(EarlyFusionESPCN(frames=frames, scale=scale)) == params


@pytest.mark.parametrize("frames", [1, 3, 5, 7])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape(frames, scale):
    model = EarlyFusionESPCN(frames=frames, scale=scale)
    assert model(torch.rand(2, frames, 9, 11)).shape == (2, 1, 9 * scale, 11 * scale)


def test_wrong_frame_count_raises():
    with pytest.raises(ValueError, match="expected 3 frames"):
        EarlyFusionESPCN(frames=3)(torch.rand(1, 5, 8, 8))


def test_training_output_is_not_clamped_but_predict_is():
    model = EarlyFusionESPCN()
    with torch.no_grad():
        model.sub_pixel.bias.fill_(2.0)  # push every output above 1
    x = torch.rand(1, 3, 6, 6, requires_grad=True)
    out = model(x)
    assert out.min() > 1.0
    out.sum().backward()
    assert x.grad.abs().sum() > 0  # gradients flow where a clamp would have zeroed them
    assert model.predict(x.detach()).max() == 1.0


def test_reference_initialisation():
    torch.manual_seed(0)
    model = EarlyFusionESPCN()
    assert model.sub_pixel.weight.std().item() == pytest.approx(0.001, rel=0.2)
    first = model.body[0]
    assert first.weight.std().item() == pytest.approx((2 / (64 * 25)) ** 0.5, rel=0.1)
    assert all((m.bias == 0).all() for m in (first, model.body[2], model.sub_pixel))


def test_residual_starts_near_bicubic():
    # The sub-pixel conv starts near zero, so a residual model starts as the bicubic upscale.
    from trainable.imaging import upscale_bicubic

    x = torch.rand(2, 3, 8, 8)
    model = EarlyFusionESPCN(residual=True)
    with torch.no_grad():
        model.sub_pixel.weight.zero_()
        assert torch.allclose(model(x), upscale_bicubic(x[:, 1:2], 4), atol=1e-6)


def test_bicubic_upscale_is_matlab_kernel_in_the_interior():
    """The baseline and the residual use Keys' cubic with a = -0.5 (MATLAB imresize), not
    PyTorch's default a = -0.75: checked against the kernel written out in numpy."""
    import numpy as np
    import torch

    from trainable.imaging import upscale_bicubic

    def keys(t, a=-0.5):
        t = np.abs(t)
        return np.where(t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1,
                        np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0))

    n, s = 12, 4
    weights = np.zeros((n * s, n))
    for i in range(n * s):
        c = (i + 0.5) / s - 0.5
        for j in range(int(np.floor(c)) - 1, int(np.floor(c)) + 3):
            weights[i, min(max(j, 0), n - 1)] += keys(c - j)
    x = torch.rand(1, 1, n, n, dtype=torch.float64)
    ref = weights @ x[0, 0].numpy() @ weights.T
    got = upscale_bicubic(x, s)[0, 0].numpy()
    inner = slice(2 * s, -2 * s)
    np.testing.assert_allclose(got[inner, inner], ref[inner, inner], atol=1e-9)
    ref_075 = torch.nn.functional.interpolate(x, scale_factor=s, mode="bicubic")[0, 0].numpy()
    assert np.abs(ref_075 - ref)[inner, inner].max() > 1e-3  # the old kernel differs
