"""A codec run's report: rd.png (this codec's point beside PNG/JPEG/WebP/AVIF), strip.png
(original | aeopt | WebP | JPEG at about the same file size) and report.md.

The peers are measured on the first REPORT_IMAGES test images (AVIF takes ~0.5 s per photo), and
aeopt's point in the figure on the same images, so the figure compares like with like.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..evaluate.figures import figure_bytes, pyplot
from ..runs import atomic_write_bytes, atomic_write_text
from .api import CodecRun, compress, decompress_images
from .evaluate import measure
from .peers import closest_setting, decode_file, measure_peers

REPORT_SETTINGS = {"PNG": [None], "JPEG": [10, 30, 50, 75], "WebP": [0, 10, 30, 50, 75], "AVIF": [10, 30, 50]}
STRIP_IMAGES = 4
STYLE = {"PNG": "k*", "JPEG": "s-", "WebP": "o-", "AVIF": "^-", "aeopt": "D-"}


def report_images(test: list[np.ndarray]) -> list[np.ndarray]:
    large = test[0].shape[1] * test[0].shape[2] > 256 * 256
    return test[:8 if large else 200]


def rd_figure(path: Path, peers: list[dict], ours: list[dict], title: str) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for codec in ("JPEG", "WebP", "AVIF"):
        pts = sorted((p["bpp"], p["psnr"]) for p in peers if p["codec"] == codec)
        if pts:
            ax.plot(*zip(*pts), STYLE[codec], label=codec, ms=4)
    png = [p for p in peers if p["codec"] == "PNG"]
    for p in png:
        ax.axvline(p["bpp"], color="k", ls=":", lw=1, label=f"PNG (lossless) {p['bpp']:.2f} bpp")
    pts = sorted((p["bpp"], p["psnr"]) for p in ours)
    ax.plot(*zip(*pts), STYLE["aeopt"], color="C3", label="aeopt codec", ms=5)
    ax.set_xlabel("bits per pixel (whole files)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, figure_bytes(fig, dpi=120))  # a kill mid-write leaves the old figure or none, never half of one
    plt.close(fig)


def strip_figure(path: Path, run: CodecRun, images: list[np.ndarray]) -> None:
    """Rows of original | aeopt | WebP | JPEG, the peers at the setting closest to aeopt's bytes."""
    plt = pyplot()

    rows = images[:STRIP_IMAGES]
    fig, axes = plt.subplots(len(rows), 4, figsize=(8, 2.1 * len(rows)), squeeze=False)
    for r, im in enumerate(rows):
        ours = compress(run, im)
        panels = [("original", im), (f"aeopt {len(ours)} B", decompress_images(run, ours)[0])]
        for codec in ("WebP", "JPEG"):
            q, data = closest_setting(im, codec, len(ours))
            panels.append((f"{codec} q{q} {len(data)} B", decode_file(data, im.shape[0])))
        for ax, (label, pixels) in zip(axes[r], panels):
            ax.imshow(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255)
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    atomic_write_bytes(path, figure_bytes(fig, dpi=120))
    plt.close(fig)


def write_codec_report(run_dir: Path, run: CodecRun, test: list[np.ndarray], metrics: dict) -> None:
    subset = report_images(test)
    peers = measure_peers(subset, REPORT_SETTINGS)
    ours = measure(run, subset)
    rd_figure(run_dir / "rd.png", peers, [ours], f"{len(subset)} test images, whole files")
    strip_figure(run_dir / "strip.png", run, subset)
    t = metrics["test"]
    lines = [f"# Codec run {run_dir.name}", "",
             f"{metrics['entropy']} entropy model, lambda {metrics['lmbda']}, {metrics['params']:,} parameters, "
             f"{metrics['epochs']} epochs in {metrics['train_seconds']:.0f} s; model id {metrics['model_id']}.", "",
             f"Test set ({t['images']} images, one .aec file each, every byte counted): **{t['bpp']:.4f} bpp**, "
             f"{t['bytes_per_image']:.1f} bytes/image, PSNR {t['psnr']:.2f} dB, MS-SSIM {t['ms_ssim']:.4f}; "
             f"one many-image file: {t['batch_file']['bytes_per_image']:.1f} bytes/image. "
             f"Encode {t['encode_ms_per_image']:.2f} ms, decode {t['decode_ms_per_image']:.2f} ms per image.", "",
             f"Peers on the first {len(subset)} test images (aeopt on the same: {ours['bpp']:.4f} bpp, "
             f"{ours['psnr']:.2f} dB):", "",
             "| codec | setting | bytes/image | bpp | PSNR dB |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {p['codec']} | {p['setting'] if p['setting'] is not None else '-'} | {p['bytes_per_image']:.1f} | "
              f"{p['bpp']:.4f} | {p['psnr']:.2f} |" for p in peers]
    lines += ["", "![rate-distortion](rd.png)", "", "![original, aeopt, WebP, JPEG](strip.png)", ""]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))

