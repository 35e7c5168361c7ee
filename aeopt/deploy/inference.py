"""A trained run applied: loaded in any runtime (torch, or ONNX Runtime for exported/int8 runs),
evaluated on its own or other data, and run on image files or .npy batches."""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data import Dataset, load_array_file, load_data, standardize
from ..errors import AeoptError
from ..evaluate.evaluate import evaluate_model, reconstruct
from ..runs import LoadedRun, atomic_write_bytes, load_torch, read_run_record
from .export import load_onnx_run


def load(run_dir: str | Path, *, weights: str = "model.safetensors", runtime: str = "auto") -> LoadedRun:
    """Rebuild a run's model from `config.yaml` and its weights from safetensors (no pickle).

    Args:
        run_dir: the run directory.
        weights: the safetensors file to load (torch runtime).
        runtime: "torch", "onnx" (ONNX Runtime; a float run is exported on the fly), or "auto": the
            run's recorded format (`artifact["format"]`, "onnx" for int8 runs written by `aeopt shrink`).
    """
    if runtime not in ("auto", "torch", "onnx"):
        raise AeoptError(f"unknown runtime {runtime!r}; use auto, torch or onnx")
    config, data_info, artifact = read_run_record(run_dir)
    if runtime == "onnx" or (runtime == "auto" and artifact.get("format") == "onnx"):
        return load_onnx_run(Path(run_dir), config, data_info, artifact)
    return load_torch(run_dir, weights=weights)


def prepare_input(x: np.ndarray, data_info: dict) -> torch.Tensor:
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


def unscale(x_hat: np.ndarray, data_info: dict) -> np.ndarray:
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
    x = prepare_input(load_array_file(str(input_path)), run.data_info)
    x_hat = unscale(reconstruct(run.model, x).numpy(), run.data_info)
    if output_path.suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, x_hat, allow_pickle=False)
        atomic_write_bytes(output_path, buffer.getvalue())
    else:
        if not run.data_info["is_image"] or len(x_hat) != 1:
            raise AeoptError("a .png output holds one image; write a batch or a table to a .npy file")
        atomic_write_bytes(output_path, _png_bytes(x_hat[0]))
    return len(x_hat)


def _rescale(dataset: Dataset, scaler: dict) -> Dataset:
    """Other table data arrives standardized with its own statistics; the model needs the run's."""
    own_mean, own_std = np.asarray(dataset.scaler["mean"]), np.asarray(dataset.scaler["std"])

    def convert(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(standardize(x.numpy() * own_std + own_mean, scaler))

    return dataclasses.replace(dataset, x_train=convert(dataset.x_train), x_val=convert(dataset.x_val),
                               x_test=convert(dataset.x_test), scaler=scaler)


# Models whose figures an application package measures (the codec: on real encoded files):
# name -> evaluate function with evaluate()'s arguments, registered on the application's import.
MODEL_EVALUATORS: dict[str, Callable[..., dict[str, Any]]] = {}


def evaluate(run_dir: str | Path, *, data: str | None = None, data_dir: str | None = None) -> dict[str, Any]:
    """Evaluate a saved run on its own test split, or on other data (`data` spec) of the same shape."""
    model_name = read_run_record(run_dir)[0].architecture.model
    if model_name in MODEL_EVALUATORS:
        return MODEL_EVALUATORS[model_name](run_dir, data=data, data_dir=data_dir)
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
