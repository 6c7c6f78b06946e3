"""PSNR / SSIM against closed forms and an independent loop implementation; KL per dim and active units."""
import math

import numpy as np
import pytest
import torch

from models.metrics import active_units, kl_per_dimension, psnr, ssim


def test_psnr_of_known_mse():
    a = torch.zeros(2, 3, 8, 8)
    b = a.clone()
    b[0] += 0.1  # MSE 0.01
    b[1, :, :4] = 0.2  # MSE 0.04 / 2 = 0.02
    expected = torch.tensor([10 * math.log10(4 / 0.01), 10 * math.log10(4 / 0.02)])
    assert torch.allclose(psnr(a, b), expected, atol=1e-4)
    assert torch.allclose(psnr(a, b, data_range=1.0), expected - 10 * math.log10(4), atol=1e-4)
    assert torch.isinf(psnr(a, a)).all()


def test_ssim_identical_images_is_one():
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-5)


def test_ssim_constant_images_reduce_to_the_luminance_term():
    mx, my, L = 0.3, -0.5, 2.0
    a, b = torch.full((1, 3, 16, 16), mx), torch.full((1, 3, 16, 16), my)
    c1 = (0.01 * L) ** 2
    expected = (2 * mx * my + c1) / (mx**2 + my**2 + c1)  # sigma terms vanish: (0 + C2) / (0 + C2) = 1
    assert ssim(a, b).item() == pytest.approx(expected, abs=1e-5)


def test_ssim_uniform_window_hand_computed():
    # 3x3 images, 3x3 uniform window: one window. x has one bright pixel, y that pixel and a corner.
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1
    y = x.clone()
    y[0, 0, 0, 0] = 1
    c1, c2 = 0.01**2, 0.03**2
    # mu_x = 1/9, mu_y = 2/9, var_x = 1/9 - 1/81 = 8/81, var_y = 2/9 - 4/81 = 14/81, cov = 1/9 - 2/81 = 7/81
    expected = ((4 / 81 + c1) * (14 / 81 + c2)) / ((5 / 81 + c1) * (22 / 81 + c2))
    assert ssim(x, y, data_range=1.0, window=3, sigma=None).item() == pytest.approx(expected, rel=1e-5)


def _reference_ssim(x: np.ndarray, y: np.ndarray, size: int, sigma: float, L: float) -> float:
    """Independent loop implementation: explicit windows, weighted statistics, per channel, valid positions."""
    g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    values = []
    for c in range(x.shape[0]):
        for i in range(x.shape[1] - size + 1):
            for j in range(x.shape[2] - size + 1):
                px, py = x[c, i : i + size, j : j + size], y[c, i : i + size, j : j + size]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cov = (w * (px - mx) * (py - my)).sum()
                values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_gaussian_window_matches_loop_reference():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 3, 14, 13))
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1)
    got = ssim(torch.from_numpy(x), torch.from_numpy(y))
    expected = [_reference_ssim(x[n], y[n], 11, 1.5, 2.0) for n in range(2)]
    assert got.dtype == torch.float64 and got.shape == (2,)
    assert np.allclose(got.numpy(), expected, atol=1e-10)
    assert (got < 1).all() and (got > 0).all()


def test_metric_shape_errors_are_clear():
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="equal shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 4))


def test_kl_per_dimension_and_active_units():
    mu = torch.zeros(100, 3)
    mu[:, 0] = torch.linspace(-1, 1, 100)  # varies with x: active
    mu[:, 1] = 0.05 * torch.linspace(-1, 1, 100)  # variance ~0.00085: inactive
    logvar = torch.zeros(100, 3)
    logvar[:, 2] = math.log(0.5)
    count, variance = active_units(mu)
    assert count == 1 and variance.shape == (3,)
    kl = kl_per_dimension(mu, logvar)
    assert kl[2].item() == pytest.approx(0.5 * (0.5 - 1 - math.log(0.5)))
    assert kl[0].item() == pytest.approx(0.5 * float((mu[:, 0].double() ** 2).mean()))
