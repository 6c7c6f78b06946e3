"""Image and latent-space metrics in torch: PSNR, SSIM, KL per dimension, active latent units."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_pair(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"{name}: expected two (N, C, H, W) tensors of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _as_float(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float64 else t.float()


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, (N,), in dB: 10 log10(data_range^2 / MSE); inf for identical images."""
    _check_pair(a, b, "psnr")
    # one temporary, squared in place; summed in NCHW order whatever the memory layout, so that equal images give
    # equal PSNRs (an edit that changes nothing is not "closer" to a target than its base by rounding)
    diff = torch.sub(_as_float(a).contiguous(), _as_float(b).contiguous())
    mse = diff.mul_(diff).mean(dim=(1, 2, 3))  # (N,)
    return 10.0 * torch.log10(data_range**2 / mse)


def _window(size: int, sigma: float | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised 1-D window (size,): Gaussian with std `sigma`, or uniform when sigma is None. The 2-D window is its
    outer product with itself, so it is applied as two 1-D passes (2 x size taps per pixel instead of size^2)."""
    if sigma is None:
        return torch.full((size,), 1.0 / size, dtype=dtype, device=device)
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    w1 = torch.exp(-(coords**2) / (2 * sigma**2))
    return w1 / w1.sum()


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    data_range: float = 2.0,
    window: int = 11,
    sigma: float | None = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity per image, (N,) (Wang, Bovik, Sheikh & Simoncelli 2004).

    Local statistics under a `window`x`window` Gaussian (std `sigma`; uniform if sigma is None) window, computed per
    channel over the valid region only (no padding), C1 = (k1 L)^2, C2 = (k2 L)^2 with L = data_range; the SSIM map
    is averaged over channels and positions.
    """
    _check_pair(a, b, "ssim")
    n, c, h, w = a.shape
    if h < window or w < window:
        raise ValueError(f"ssim: images of {h}x{w} are smaller than the {window}x{window} window")
    out_dtype = _as_float(a).dtype
    x, y = a.double(), b.double()  # float64: E[x^2] - mu^2 cancels badly in float32 next to C2 = 3.6e-3
    w1 = _window(window, sigma, x.dtype, x.device)
    rows, cols = w1.view(1, 1, 1, window).expand(c, 1, 1, window), w1.view(1, 1, window, 1).expand(c, 1, window, 1)

    def local_mean(t: torch.Tensor) -> torch.Tensor:  # depthwise, one window per channel
        return F.conv2d(F.conv2d(t, rows, groups=c), cols, groups=c)  # (N, C, H-window+1, W-window+1)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1).to(out_dtype)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over images of KL(q(z_d|x) || N(0, 1)) for each latent dimension d, (D,)."""
    mu, logvar = mu.double(), logvar.double()
    return (0.5 * (mu**2 + logvar.exp() - 1.0 - logvar)).mean(0)


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """Active latent units (Burda, Grosse & Salakhutdinov 2016): dims with Cov_x(E[z|x]) > threshold.

    mu: (N, D) posterior means over a data set. Returns (count, per-dimension variance (D,)).
    """
    if mu.dim() != 2 or mu.shape[0] < 2:
        raise ValueError(f"active_units: expected (N>=2, D) posterior means, got {tuple(mu.shape)}")
    variance = mu.double().var(0, unbiased=True)  # (D,)
    return int((variance > threshold).sum()), variance
