"""R + lambda * D for the codec, in the Objective protocol (aeopt/models/objective.py).

rate: bits per pixel from the likelihoods (pixel = one image location, all channels together, as
codec papers count it). distortion: 255^2 * MSE or 1 - MS-SSIM, so that `lmbda` means what it
means in CompressAI and its published quality presets carry over. The density's quantiles are
trained by their own Adam (the aux loss, an ExtraStep) and kept out of the main optimizer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..objective import ExtraStep, Forward, Objective
from .msssim import ms_ssim_per_sample

if TYPE_CHECKING:
    from .model import CodecModel
AUX_LR = 1e-3  # CompressAI's aux learning rate: the quantiles only need to track the density


def bits_per_pixel(likelihoods: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    pixels = x.shape[0] * x.shape[-2] * x.shape[-1]
    return sum(-torch.log2(p).sum() for p in likelihoods.values()) / pixels


def bits_per_pixel_per_sample(likelihoods: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """bits_per_pixel for each image of the batch (N,)."""
    return sum(-torch.log2(p).flatten(1).sum(1) for p in likelihoods.values()) / (x.shape[-2] * x.shape[-1])


def distortion(kind: str, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if kind == "ms-ssim":
        return 1 - ms_ssim_per_sample(x_hat, x).mean()
    return 255.0 ** 2 * (x_hat.float() - x.float()).square().mean()


def distortion_per_sample(kind: str, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """distortion for each image of the batch (N,)."""
    if kind == "ms-ssim":
        return 1 - ms_ssim_per_sample(x_hat, x)
    return 255.0 ** 2 * (x_hat.float() - x.float()).square().flatten(1).mean(1)


class CodecObjective(Objective):
    graph_reason = "the codec's auxiliary (quantile) step runs eagerly"

    def __init__(self, lmbda: float, kind: str = "mse"):
        self.lmbda, self.kind = lmbda, kind
        self.spec = f"bpp + {lmbda:g} * {'255^2 MSE' if kind == 'mse' else '(1 - MS-SSIM)'}"

    def compute(self, forward: Forward, x_in: torch.Tensor, x: torch.Tensor):
        out = forward(x_in)
        bpp = bits_per_pixel(out["likelihoods"], x)
        dist = distortion(self.kind, out["logits"], x)
        mse = (out["x_hat"].float() - x.float()).square().mean()
        parts = {"loss": bpp + self.lmbda * dist, "bpp": bpp.detach(), "distortion": dist.detach(),
                 "psnr": -10 * torch.log10(mse.detach().clamp_min(1e-12))}
        parts["rate"] = parts["bpp"]
        return parts, out

    @staticmethod
    def main_parameters(model: "CodecModel"):
        return [p for name, p in model.named_parameters() if not name.endswith("quantiles")]

    @staticmethod
    def extra_steps(model: "CodecModel") -> dict[str, ExtraStep]:
        quantiles = [p for name, p in model.named_parameters() if name.endswith("quantiles")]
        optimizer = torch.optim.Adam(quantiles, lr=AUX_LR)

        def step(outputs: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
            optimizer.zero_grad(set_to_none=True)
            loss = model.aux_loss()
            loss.backward()
            optimizer.step()
            return {"aux": loss.detach()}

        return {"aux": ExtraStep(optimizer, step)}
