"""Evaluation: MSE, PSNR, SSIM per set and per class, beside PCA at the same latent size."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Dataset, load_data
from .metrics import mse_per_sample, psnr, ssim_per_sample


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
    return float(dataset.x_train.max() - dataset.x_train.min())


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

    train = dataset.x_train.flatten(1).numpy()
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
    from .noise import denoise_metrics, parse_noise
    from .probe import latent_metrics

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


def _rescale(dataset: Dataset, scaler: dict) -> Dataset:
    """Other table data arrives standardized with its own statistics; the model needs the run's."""
    import dataclasses

    from .data import standardize

    own_mean, own_std = np.asarray(dataset.scaler["mean"]), np.asarray(dataset.scaler["std"])

    def convert(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(standardize(x.numpy() * own_std + own_mean, scaler))

    return dataclasses.replace(dataset, x_train=convert(dataset.x_train), x_val=convert(dataset.x_val),
                               x_test=convert(dataset.x_test), scaler=scaler)


def evaluate(run_dir: str | Path, *, data: str | None = None, data_dir: str | None = None) -> dict[str, Any]:
    """Evaluate a saved run on its own test split, or on other data (`data` spec) of the same shape."""
    from .errors import AeoptError
    from .runs import load, read_config

    if read_config(run_dir)[0].model == "codec":  # figures from real files (aeopt/codec/train.py)
        from .codec.train import evaluate_codec

        return evaluate_codec(run_dir, data=data, data_dir=data_dir)
    run = load(run_dir)
    cfg = run.config
    dataset = load_data(data or cfg.data, data_dir=data_dir or cfg.data_dir, seed=cfg.seed, limit=cfg.limit)
    if list(dataset.sample_shape) != list(run.data_info["sample_shape"]):
        raise AeoptError(f"the data's samples have shape {tuple(dataset.sample_shape)} but the model expects "
                         f"{tuple(run.data_info['sample_shape'])}; evaluate on data like the training data")
    if dataset.scaler and run.data_info.get("scaler") and data:
        dataset = _rescale(dataset, run.data_info["scaler"])
    metrics = evaluate_model(run.model, dataset, noise=cfg.noise)
    metrics["data"] = data or cfg.data
    return metrics
