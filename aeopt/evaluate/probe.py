"""Latent quality: how much of the labels a simple classifier reads off the codes.

A logistic-regression (linear) probe and a 5-nearest-neighbour probe are fitted on the training
codes and scored on the test codes, beside the same probes on PCA codes of the same size, plus
the code statistics a sparse autoencoder is judged by.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.datasets import MappedSplit, in_memory
from ..runs import atomic_write_bytes
from .figures import figure_bytes, pyplot

PROBE_TRAIN_MAX = 10_000  # probes fit on at most this many training codes (seconds, not minutes)
NEAR_ZERO = 0.05          # |z| below this counts as a silent code unit
KNN_K = 5
PCA_FIT_MAX = 200_000          # PCA is fitted on all training rows up to here (a split beyond: its head)
MAPPED_PCA_MAX_BYTES = 8 << 20  # a mapped split (data larger than memory): at most this many bytes of rows


def pca_training_rows(dataset) -> np.ndarray:
    """The training rows PCA is fitted on, flattened: the baseline and the PCA probe use the same ones."""
    rows = PCA_FIT_MAX
    if isinstance(dataset.train_split, MappedSplit):
        rows = max(1, min(rows, MAPPED_PCA_MAX_BYTES // (4 * int(np.prod(dataset.sample_shape)))))
    return in_memory(dataset.train_split, rows if dataset.n_train > rows else None).flatten(1).numpy()


def codes(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 1024,
          device: torch.device | str = "cpu") -> torch.Tensor:
    """The model's codes (eval mode: a VAE's mean, a VQ-VAE's quantized vectors) as fp32 on the CPU."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model.encode(x[s:s + batch_size].to(device)).float().flatten(1).cpu()
                          for s in range(0, len(x), batch_size)])


def code_statistics(z: torch.Tensor) -> dict[str, float]:
    """Mean |z| and the fraction of code values with |z| < NEAR_ZERO."""
    return {"mean_code_activation": float(z.abs().mean()),
            "near_zero_fraction": float((z.abs() < NEAR_ZERO).float().mean())}


def probe_accuracy(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray,
                   y_test: np.ndarray) -> dict[str, float]:
    """Test accuracy of a linear (logistic regression) and a k-NN classifier on standardized codes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(z_train)
    a, b = scaler.transform(z_train), scaler.transform(z_test)
    linear = LogisticRegression(max_iter=500).fit(a, y_train)
    knn = KNeighborsClassifier(n_neighbors=min(KNN_K, len(a))).fit(a, y_train)
    return {"linear_acc": float(linear.score(b, y_test)), "knn_acc": float(knn.score(b, y_test))}


def latent_metrics(model: torch.nn.Module, dataset, *, device: torch.device | str = "cpu",
                   pca: bool = True) -> dict[str, Any]:
    """Code statistics of the test codes and, when the data has labels, the probes (and PCA's)."""
    z_test = codes(model, dataset.x_test, device=device)
    metrics: dict[str, Any] = code_statistics(z_test)
    if dataset.y_train is None or dataset.y_test is None:
        return metrics
    x_train, y_train = in_memory(dataset.train_split, PROBE_TRAIN_MAX), dataset.y_train[:PROBE_TRAIN_MAX].numpy()
    y_test = dataset.y_test.numpy()
    z_train = codes(model, x_train, device=device)
    metrics["probe"] = {**probe_accuracy(z_train.numpy(), y_train, z_test.numpy(), y_test),
                        "train_samples": len(x_train)}
    if pca:
        from sklearn.decomposition import PCA

        k = min(z_test.shape[1], *x_train.flatten(1).shape)
        fitted = PCA(n_components=k, random_state=0).fit(pca_training_rows(dataset))
        metrics["pca_probe"] = probe_accuracy(fitted.transform(x_train.flatten(1).numpy()), y_train,
                                              fitted.transform(dataset.x_test.flatten(1).numpy()), y_test)
    return metrics


def plot_latent(z: torch.Tensor, y: torch.Tensor, path, title: str) -> None:
    """2-D PCA projection of the codes, one colour per label."""
    plt = pyplot()
    from sklearn.decomposition import PCA

    flat = z.numpy()
    if flat.shape[1] > 2:
        xy = PCA(n_components=2, random_state=0).fit_transform(flat)
    else:  # a 1- or 2-number code is drawn as it is
        xy = np.pad(flat, ((0, 0), (0, 2 - flat.shape[1])))
    fig, ax = plt.subplots(figsize=(5, 4.5))
    points = ax.scatter(xy[:, 0], xy[:, 1], c=y.numpy(), cmap="tab10", s=4, alpha=0.7)
    ax.legend(*points.legend_elements(), fontsize=6, title="label", title_fontsize=7, loc="best", markerscale=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    atomic_write_bytes(path, figure_bytes(fig))
    plt.close(fig)
