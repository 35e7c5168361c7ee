"""A detector run's report.md: score histogram with the threshold, ROC and PR curves (with labels),
and for images the most and least anomalous test samples."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..evaluate.figures import figure_bytes, pyplot
from ..evaluate.report import _as_image
from ..runs import atomic_write_bytes, atomic_write_text

GRID = 10  # samples per row of the most / least anomalous grid


def _save(fig, path: Path) -> None:
    atomic_write_bytes(path, figure_bytes(fig))
    pyplot().close(fig)


def plot_histogram(scores: np.ndarray, y: np.ndarray | None, threshold: float, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.histogram_bin_edges(scores, bins=60)
    if y is None:
        ax.hist(scores, bins=bins, color="tab:blue", alpha=0.8, label="test samples")
    else:
        ax.hist(scores[y == 0], bins=bins, color="tab:blue", alpha=0.6, label="normal")
        ax.hist(scores[y == 1], bins=bins, color="tab:red", alpha=0.6, label="anomaly")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel("anomaly score (higher = more abnormal)")
    ax.set_ylabel("test samples")
    ax.legend()
    _save(fig, path)


def plot_curves(scores: np.ndarray, y: np.ndarray, path: Path) -> None:
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    plt = pyplot()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(9, 3.8))
    fpr, tpr, _ = roc_curve(y, scores)
    roc.plot(fpr, tpr, label=f"AUROC {roc_auc_score(y, scores):.4f}")
    roc.plot([0, 1], [0, 1], color="grey", linestyle=":")
    roc.set_xlabel("false positive rate")
    roc.set_ylabel("true positive rate")
    roc.legend(loc="lower right")
    precision, recall, _ = precision_recall_curve(y, scores)
    pr.plot(recall, precision, label=f"AP {average_precision_score(y, scores):.4f}")
    pr.axhline(y.mean(), color="grey", linestyle=":", label=f"chance {y.mean():.3f}")
    pr.set_xlabel("recall")
    pr.set_ylabel("precision")
    pr.legend(loc="lower left")
    _save(fig, path)


def plot_extremes(x, scores: np.ndarray, path: Path) -> None:
    """Top row: the most anomalous test images; bottom row: the least."""
    plt = pyplot()
    order = np.argsort(scores)
    n = min(GRID, len(scores))
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.8), squeeze=False)
    for row, (name, idx) in enumerate((("most anomalous", order[::-1][:n]), ("least anomalous", order[:n]))):
        for col, i in enumerate(idx.tolist()):
            ax = axes[row][col]
            ax.imshow(_as_image(x[i]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{scores[i]:.3g}", fontsize=6)
            if col == 0:
                ax.set_ylabel(name, fontsize=7)
    _save(fig, path)


PART_NAMES = {"recon": "reconstruction error", "latent": "k-NN distance of the code",
              "features": "k-NN distance of the encoder's feature map",
              "gradients": "k-NN distance of the orientation histograms (no autoencoder)",
              "forest": "Isolation Forest on residuals and code"}


def write_report(run_dir: Path, detector, ds, metrics: dict[str, Any], scores: np.ndarray,
                 y: np.ndarray | None) -> None:
    plot_histogram(scores, y, detector.threshold_, run_dir / "scores.png")
    lines = [f"# aeopt detector: {run_dir.name.split('.tmp-')[0].lstrip('.')}", "",
             f"Data `{ds.name}`: trained on {metrics['n_train']} samples of shape {tuple(detector.sample_shape_)}, "
             f"model `{detector.config_.architecture.model}` (latent {detector.config_.architecture.latent_dim}); "
             f"score `{detector.score_type_}`; "
             f"threshold {detector.threshold_:.6g} ({metrics['threshold_method']}); "
             f"{100 * metrics['test_flagged']:.1f}% of the {len(scores)} test samples flagged.", ""]
    if "detect" in metrics:
        d = metrics["detect"]
        lines += ["| test set | AUROC | average precision | F1 at the threshold |", "| --- | --- | --- | --- |",
                  f"| {int(y.sum())} anomalies / {len(y)} | {d['auroc']:.4f} | {d['average_precision']:.4f} | "
                  f"{d['f1']:.4f} |", ""]
    if len(metrics.get("detect_parts", {})) > 1:
        total = sum(part["weight"] for part in metrics["detect_parts"].values())
        lines += ["The score's parts, each alone on the test set (the score is their weighted mean of "
                  "standardized values):", "", "| part | share of the score | AUROC alone |", "| --- | --- | --- |"]
        lines += [f"| {PART_NAMES.get(name, name)} | {part['weight'] / total:.0%} | {part['auroc']:.4f} |"
                  for name, part in metrics["detect_parts"].items()] + [""]
    lines += ["Test scores and the threshold:", "", "![score histogram](scores.png)"]
    if y is not None and 0 < y.sum() < len(y):
        plot_curves(scores, y, run_dir / "curves.png")
        lines += ["", "ROC and precision-recall curves on the test set:", "", "![ROC and PR curves](curves.png)"]
    if ds.is_image:
        plot_extremes(ds.x_test, scores, run_dir / "extremes.png")
        lines += ["", "Most and least anomalous test images (score above each):", "",
                  "![most and least anomalous](extremes.png)"]
    atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
