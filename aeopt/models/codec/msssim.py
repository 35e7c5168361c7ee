"""Multi-scale SSIM (Wang et al. 2003) for images in [0, 1], as a loss and a metric.

Small images get fewer scales: a scale is used only while the image is at least as large as the
11-pixel Gaussian window, and the standard per-scale weights are renormalized over the scales
used. Without that, 28x28 images would have no valid third scale at all.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al.'s per-scale exponents
WINDOW, SIGMA = 11, 1.5
C1, C2 = 0.01 ** 2, 0.03 ** 2


def _window(channels: int, size: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-coords.square() / (2 * SIGMA ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def _ssim_parts(x: torch.Tensor, y: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = x.shape[1]
    w = _window(c, size, x.device, x.dtype)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    cs = (2 * sxy + C2) / (sxx + syy + C2)
    lum = (2 * mx * my + C1) / (mx * mx + my * my + C1)
    return (lum * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim_per_sample(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MS-SSIM of each image, shape (N,); values in about [0, 1], 1 = identical."""
    x_hat, x = x_hat.float(), x.float()
    size = min(WINDOW, x.shape[-1], x.shape[-2])
    scales = 1
    while scales < len(WEIGHTS) and min(x.shape[-2:]) // 2 ** scales >= size:
        scales += 1
    weights = torch.tensor(WEIGHTS[:scales], device=x.device)
    weights = weights / weights.sum()
    values = []
    for s in range(scales):
        ssim, cs = _ssim_parts(x_hat, x, size)
        values.append((ssim if s == scales - 1 else cs).clamp_min(1e-6))  # relu-like floor keeps pow real
        if s < scales - 1:
            x_hat, x = F.avg_pool2d(x_hat, 2), F.avg_pool2d(x, 2)
    return torch.prod(torch.stack(values, 1) ** weights, 1)
