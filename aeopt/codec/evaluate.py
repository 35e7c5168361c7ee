"""Codec figures measured on real files: every byte of every .aec file counted.

bpp = 8 * file bytes / pixels (pixels = image locations; an RGB pixel is one pixel). PSNR comes
from the mean squared error over all test pixels (peak 255), the convention of the codec tables
in benchmarks/; MS-SSIM is the mean over images. `test` counts one file per image (what a user
storing images one by one pays); `test_batch` one many-image file for the whole set.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..models.codec.msssim import ms_ssim_per_sample
from .api import CodecRun, decompress_files, latents, streams


def quality(originals: list[np.ndarray], decoded: list[np.ndarray]) -> dict[str, float]:
    se = sum(float(np.square(a.astype(np.float64) - b.astype(np.float64)).sum()) for a, b in zip(originals, decoded))
    values = sum(a.size for a in originals)
    mse = se / values
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)
    ms = [float(ms_ssim_per_sample(torch.tensor(b[None]).float() / 255, torch.tensor(a[None]).float() / 255))
          for a, b in zip(originals, decoded)]
    return {"psnr": psnr, "mse": mse / 255.0 ** 2, "ms_ssim": float(np.mean(ms))}


def measure(run: CodecRun, images: list[np.ndarray], *, progress=None, refine: int = 0) -> dict:
    """bpp, PSNR, MS-SSIM, bytes per image and per-image times over `images` (uint8 (C, H, W) each);
    `refine`: steps of the encode-time latent search (refine.py), counted in the encode time."""
    pixels = sum(im.shape[1] * im.shape[2] for im in images)
    started = time.perf_counter()
    sizes, parts = latents(run, images, progress=progress, refine=refine)
    files = [run.pack([size], stream) for size, stream in zip(sizes, streams(run, parts, len(sizes), joint=False))]
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    decoded = [images[0] for images in decompress_files(run, files)]
    decode_s = time.perf_counter() - started
    batch = run.pack(sizes, streams(run, parts, len(sizes)))  # the same latents as one many-image file
    total = sum(len(f) for f in files)
    return {"images": len(images), "pixels": pixels, "bytes": total, "bpp": 8 * total / pixels,
            "bytes_per_image": total / len(images), "max_file_bytes": max(len(f) for f in files),
            **quality(images, decoded),
            "encode_ms_per_image": 1000 * encode_s / len(images),
            "decode_ms_per_image": 1000 * decode_s / len(images),  # one file per image, decoded in batches
            "batch_file": {"bytes": len(batch), "bpp": 8 * len(batch) / pixels,
                           "bytes_per_image": len(batch) / len(images)}}
