"""Apply a trained run to new inputs: image files or .npy batches in, reconstructions out."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from .data import load_array_file, standardize
from .errors import AeoptError
from .evaluate import reconstruct
from .runs import atomic_write_bytes, load


def _prepare(x: np.ndarray, data_info: dict) -> torch.Tensor:
    """Check the input's shape against the model's and apply the run's table scaler."""
    shape = tuple(data_info["sample_shape"])
    if x.ndim == len(shape):  # a single sample: add the batch dimension
        x = x[None]
    if tuple(x.shape[1:]) != shape:
        raise AeoptError(f"input samples have shape {tuple(x.shape[1:])} but the model expects {shape}; "
                         "resize or reshape the input")
    if data_info.get("scaler"):
        x = standardize(x, data_info["scaler"])
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _unscale(x_hat: np.ndarray, data_info: dict) -> np.ndarray:
    scaler = data_info.get("scaler")
    if not scaler:
        return x_hat
    return x_hat * np.asarray(scaler["std"], dtype=np.float32) + np.asarray(scaler["mean"], dtype=np.float32)


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def reconstruct_file(run_dir: str | Path, input_path: str | Path, output_path: str | Path) -> int:
    """Reconstruct INPUT (image or .npy) with a run's model into OUTPUT (.png or .npy); returns the count."""
    output_path = Path(output_path)
    if output_path.suffix.lower() not in (".png", ".npy"):
        raise AeoptError(f"cannot write {output_path}: the output must end in .png or .npy")
    run = load(run_dir)
    x = _prepare(load_array_file(str(input_path)), run.data_info)
    x_hat = _unscale(reconstruct(run.model, x).numpy(), run.data_info)
    if output_path.suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, x_hat, allow_pickle=False)
        atomic_write_bytes(output_path, buffer.getvalue())
    else:
        if not run.data_info["is_image"] or len(x_hat) != 1:
            raise AeoptError("a .png output holds one image; write a batch or a table to a .npy file")
        atomic_write_bytes(output_path, _png_bytes(x_hat[0]))
    return len(x_hat)
