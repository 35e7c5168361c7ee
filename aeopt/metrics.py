"""Reconstruction quality measures: MSE, PSNR and SSIM (images in [0, 1])."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def mse_per_sample(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each sample over its pixels/features, shape (N,)."""
    return (x_hat.float() - x.float()).square().flatten(1).mean(1)


def psnr(mse: float, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error (inf for a perfect match)."""
    return math.inf if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-coords.square() / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_per_sample(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, shape (N,), for (N, C, H, W) in [0, 1].

    Gaussian window of 11 pixels (sigma 1.5) as in the paper, shrunk to the image size for small
    images (8x8 digits get a 7-pixel window) so that every image has at least one full window.
    """
    x_hat, x = x_hat.float(), x.float()
    channels, height, width = x.shape[1:]
    size = min(11, height - (1 - height % 2), width - (1 - width % 2))
    sigma = 1.5 * size / 11
    window = _gaussian_window(size, sigma, channels, x.device, x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    mu_a, mu_b = blur(x_hat), blur(x)
    var_a = blur(x_hat * x_hat) - mu_a.square()
    var_b = blur(x * x) - mu_b.square()
    cov = blur(x_hat * x) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(1)
