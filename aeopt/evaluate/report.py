"""report.md with plots: loss curves and, for images, originals beside reconstructions."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data import Dataset
from ..metrics import mse_per_sample
from ..runs import atomic_write_bytes, atomic_write_text
from .evaluate import reconstruct
from .figures import figure_bytes, pyplot
from .probe import codes, plot_latent


def plot_loss(history: list[dict[str, float]], path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [row["epoch"] for row in history]
    ax.plot(epochs, [row["train_loss"] for row in history], label="train")
    ax.plot(epochs, [row["val_loss"] for row in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    atomic_write_bytes(path, figure_bytes(fig))
    plt.close(fig)


def _as_image(t: torch.Tensor):
    """(C, H, W) in [0, 1] -> something imshow draws: (H, W) grey or (H, W, 3) colour."""
    t = t.clamp(0, 1)
    return t[0].numpy() if t.shape[0] == 1 else t[:3].permute(1, 2, 0).numpy()


def plot_reconstructions(x: torch.Tensor, x_hat: torch.Tensor, path: Path, n: int = 8) -> None:
    """Rows: best originals, their reconstructions, worst originals, their reconstructions."""
    plt = pyplot()

    errors = mse_per_sample(x_hat, x)
    order = torch.argsort(errors)
    n = min(n, len(x))
    picks = [("best", order[:n]), ("worst", order.flip(0)[:n])]
    fig, axes = plt.subplots(4, n, figsize=(1.2 * n, 5.2), squeeze=False)
    for block, (name, idx) in enumerate(picks):
        for col, i in enumerate(idx.tolist()):
            for row, (label, source) in enumerate((("original", x), ("reconstruction", x_hat))):
                ax = axes[2 * block + row][col]
                ax.imshow(_as_image(source[i]), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.set_ylabel(f"{name}\n{label}", fontsize=7)
                if row == 1:
                    ax.set_title(f"mse {errors[i]:.4f}", fontsize=6)
    atomic_write_bytes(path, figure_bytes(fig))
    plt.close(fig)


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def variant_lines(run_dir: Path, model: torch.nn.Module, dataset: Dataset,
                  metrics: dict[str, Any]) -> list[str]:
    """Report lines for the code statistics, the probes (+ latent.png) and each variant's own figures."""
    lines = ["", f"Codes: mean |z| {metrics['mean_code_activation']:.4f}, "
                 f"{100 * metrics['near_zero_fraction']:.1f}% of code values near zero."]
    if "probe" in metrics:

        probe, pca = metrics["probe"], metrics.get("pca_probe")
        lines += ["", "| codes (test accuracy) | linear probe | 5-NN |", "| --- | --- | --- |",
                  f"| autoencoder | {probe['linear_acc']:.4f} | {probe['knn_acc']:.4f} |"]
        if pca:
            lines.append(f"| PCA, same size | {pca['linear_acc']:.4f} | {pca['knn_acc']:.4f} |")
        device = next(model.parameters()).device
        plot_latent(codes(model, dataset.x_test, device=device), dataset.y_test, run_dir / "latent.png",
                    "test codes (2-D PCA), coloured by label")
        lines += ["", "![test codes by label](latent.png)"]
    if "denoise" in metrics:
        d = metrics["denoise"]
        lines += ["", f"Denoising (`{d['noise']}` on the test set): noisy input {d['psnr_noisy']:.2f} dB, "
                      f"output {d['psnr_out']:.2f} dB ({d['psnr_gain']:+.2f} dB)."]
    if "elbo" in metrics["test"]:
        t = metrics["test"]
        lines += ["", f"Test ELBO {t['elbo']:.2f} nats per sample "
                      f"(reconstruction {t['recon_nll']:.2f}, KL {t['kl']:.2f})."]
    if "codebook_perplexity" in metrics:
        lines += ["", f"Codebook: perplexity {metrics['codebook_perplexity']:.1f}, {metrics['codebook_used']} of "
                      f"{metrics['codebook_size']} codes used on the test set, "
                      f"{metrics['code_bits']:.0f} bits per sample."]
    return lines


def write_report(run_dir: Path, model: torch.nn.Module, dataset: Dataset, metrics: dict[str, Any],
                 history: list[dict[str, float]]) -> None:
    plot_loss(history, run_dir / "loss.png")
    test, pca = metrics["test"], metrics.get("pca", {})
    lines = [
        f"# aeopt run: {run_dir.name}", "",
        f"Data `{dataset.name}` ({dataset.n_train} train / {len(dataset.x_val)} validation / "
        f"{len(dataset.x_test)} test, samples {tuple(dataset.sample_shape)}); model with "
        f"{metrics['params']:,} parameters, {metrics['train_flops_per_sample'] / 1e6:.2f} MFLOP per training sample; "
        f"loss `{metrics['loss']}`, {metrics['precision']} ({metrics.get('memory_format', 'contiguous')}) "
        f"on {metrics['device']}.", "",
        "| test set | MSE | PSNR (dB) | SSIM |", "| --- | --- | --- | --- |",
        f"| autoencoder (latent {model.latent_dim}) | {test['mse']:.5f} | {_fmt(test['psnr'], '.2f')} | "
        f"{_fmt(test['ssim'], '.4f')} |",
    ]
    if pca:
        lines.append(f"| PCA, {pca['components']} components | {pca['mse']:.5f} | {_fmt(pca['psnr'], '.2f')} | "
                     f"{_fmt(pca['ssim'], '.4f')} |")
        verdict = "beats" if test["mse"] < pca["mse"] else "does NOT beat"
        lines += ["", f"The autoencoder {verdict} PCA at the same code size "
                      f"({test['psnr'] - pca['psnr']:+.2f} dB)." if pca["psnr"] else ""]
    lines += ["", f"Trained {metrics['epochs']} epochs (best: {metrics['best_epoch']}) in "
                  f"{metrics['train_seconds']:.1f} s of training steps, {metrics['samples_per_second']:.0f} samples/s.",
              "", "![loss curves](loss.png)"]
    if dataset.is_image:
        x = dataset.x_test[:2048]
        plot_reconstructions(x, reconstruct(model, x, device=next(model.parameters()).device), run_dir / "reconstructions.png")
        lines += ["", "Best and worst reconstructed test images:", "", "![reconstructions](reconstructions.png)"]
    lines += variant_lines(run_dir, model, dataset, metrics)
    per_class = test.get("per_class")
    if per_class:
        lines += ["", "| class | count | MSE | PSNR (dB) |", "| --- | --- | --- | --- |"]
        lines += [f"| {c} | {v['count']} | {v['mse']:.5f} | {_fmt(v['psnr'], '.2f')} |" for c, v in per_class.items()]
    atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
