"""`aeopt sample RUN --n 64 --out grid.png`: new data from a generative run's prior (vae, aae, vq_vae)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import AeoptError
from ..runs import atomic_write_bytes
from .inference import load


def sample_run(run_dir: str | Path, n: int, *, seed: int = 0) -> torch.Tensor:
    """n samples decoded from the run's prior, in data space (images in [0, 1]), fp32 on the CPU."""
    if not isinstance(n, int) or n < 1:
        raise AeoptError(f"--n must be a positive number of samples, got {n!r}")
    run = load(run_dir)
    if not hasattr(run.model, "sample"):
        raise AeoptError(f"model {run.config.model!r} has no prior to sample from; train --model vae, aae or vq_vae")
    with torch.no_grad():
        return run.model.sample(n, torch.Generator().manual_seed(seed)).float().cpu()


def image_grid(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one uint8 (rows*H, cols*W[, C]) image, as square as possible, 1-pixel gaps."""
    n, c, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.zeros(c, rows * (h + 1) - 1, cols * (w + 1) - 1)
    for i, img in enumerate(x.clamp(0, 1)):
        r, k = divmod(i, cols)
        grid[:, r * (h + 1):r * (h + 1) + h, k * (w + 1):k * (w + 1) + w] = img
    pixels = (grid * 255).round().to(torch.uint8)
    return pixels[0].numpy() if c == 1 else pixels[:3].permute(1, 2, 0).numpy()


def write_samples(x: torch.Tensor, out: str | Path) -> None:
    """A PNG grid for images; a .npy array for tables (or when asked for .npy)."""
    out = Path(out)
    if out.suffix.lower() == ".npy":
        import io

        buffer = io.BytesIO()
        np.save(buffer, x.numpy(), allow_pickle=False)
        atomic_write_bytes(out, buffer.getvalue())
        return
    if out.suffix.lower() != ".png":
        raise AeoptError(f"--out must end in .png (an image grid) or .npy (the raw samples), got {out.name}")
    if x.dim() != 4 or x.shape[1] not in (1, 3, 4):
        raise AeoptError("these samples are not images; write them with --out FILE.npy")
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image_grid(x)).save(buffer, format="PNG")
    atomic_write_bytes(out, buffer.getvalue())
