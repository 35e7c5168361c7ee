"""Evaluation: MSE, PSNR, SSIM per set and per class, beside PCA at the same latent size."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data import Dataset
from ..metrics import mse_per_sample, psnr, ssim_per_sample
from ..models.noise import EVAL_SEED as NOISE_EVAL_SEED
from ..models.noise import Noise, parse_noise
from .probe import latent_metrics, pca_training_rows



def reconstruct(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 1024,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """x_hat for every sample of x, in data space, as fp32 on the CPU."""
    model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            outs.append(model(x[start:start + batch_size].to(device))["x_hat"].float().cpu())
    return torch.cat(outs)


def peak_of(dataset: Dataset) -> float:
    """PSNR's peak: 1.0 for data in [0, 1]; the training data's value range for standardized tables."""
    if dataset.in_unit_range:
        return 1.0
    return float(dataset.train_split.max() - dataset.train_split.min())


def quality(x_hat: torch.Tensor, x: torch.Tensor, *, is_image: bool, peak: float) -> dict[str, Any]:
    """mse, psnr (of the mean MSE, as the benchmarks report it), ssim (images only, else None)."""
    mse = float(mse_per_sample(x_hat, x).mean())
    ssim = float(ssim_per_sample(x_hat.clamp(0, 1), x).mean()) if is_image else None
    return {"mse": mse, "psnr": psnr(mse, peak), "ssim": ssim}


def per_class(x_hat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, peak: float) -> dict[str, dict[str, float]]:
    errors = mse_per_sample(x_hat, x)
    return {str(int(c)): {"mse": float(errors[y == c].mean()), "psnr": psnr(float(errors[y == c].mean()), peak),
                          "count": int((y == c).sum())} for c in torch.unique(y)}


def pca_reconstruction(dataset: Dataset, k: int, x: torch.Tensor) -> torch.Tensor:
    """PCA with k components fitted on the training data: the best linear autoencoder of size k."""
    from sklearn.decomposition import PCA

    train = pca_training_rows(dataset)
    k = min(k, *train.shape)
    pca = PCA(n_components=k, svd_solver="randomized" if k < min(train.shape) // 2 else "full", random_state=0)
    pca.fit(train)
    flat = pca.inverse_transform(pca.transform(x.flatten(1).numpy()))
    return torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float32)).reshape(x.shape)


def deep_merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge nested dicts: {"test": {"elbo": ...}} adds a key to `into["test"]` rather than replacing it."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = value
    return into


def evaluate_model(model: torch.nn.Module, dataset: Dataset, *, device: torch.device | str = "cpu",
                   pca: bool = True, noise: str | None = None) -> dict[str, Any]:
    """Test-set quality of `model` and, beside it, PCA at the model's latent size.

    Also: code statistics and, with labels, linear / k-NN probes on the codes (aeopt.probe); the
    model's own figures (`model.extra_metrics`); and with `noise` ("KIND:LEVEL", default: the
    noise the model was trained with, if any) the denoising PSNR of the noisy input and the output.
    """
    peak = peak_of(dataset)
    x_hat = reconstruct(model, dataset.x_test, device=device)
    metrics: dict[str, Any] = {"test": quality(x_hat, dataset.x_test, is_image=dataset.is_image, peak=peak)}
    if dataset.y_test is not None:
        metrics["test"]["per_class"] = per_class(x_hat, dataset.x_test, dataset.y_test, peak=peak)
    if pca:
        x_pca = pca_reconstruction(dataset, model.latent_dim, dataset.x_test)
        metrics["pca"] = {**quality(x_pca, dataset.x_test, is_image=dataset.is_image, peak=peak),
                          "components": model.latent_dim}
    metrics.update(latent_metrics(model, dataset, device=device, pca=pca))
    noise_used = parse_noise(noise) if noise else getattr(model, "input_noise", None)
    if noise_used is not None:
        metrics["denoise"] = denoise_metrics(model, dataset.x_test, noise_used, peak=peak,
                                             in_unit_range=dataset.in_unit_range, device=device)
    return deep_merge(metrics, model.extra_metrics(dataset.x_test))


def denoise_metrics(model: torch.nn.Module, x: torch.Tensor, noise: Noise, *, peak: float, in_unit_range: bool,
                    device: torch.device | str = "cpu") -> dict[str, Any]:
    """PSNR of the noisy test input and of the model's output on it, both against the clean data."""
    noisy = noise(x, torch.Generator().manual_seed(NOISE_EVAL_SEED), clip=in_unit_range)
    x_hat = reconstruct(model, noisy, device=device)
    psnr_noisy = psnr(float(mse_per_sample(noisy, x).mean()), peak)
    psnr_out = psnr(float(mse_per_sample(x_hat, x).mean()), peak)
    return {"noise": noise.spec, "psnr_noisy": psnr_noisy, "psnr_out": psnr_out, "psnr_gain": psnr_out - psnr_noisy}
