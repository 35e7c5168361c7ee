"""`aeopt train --model codec`: train, build the integer tables, measure real files, report.

Until main has layout-v2 the training itself is _devloop.fit (same Objective protocol as the
future aeopt.train.fit). Data: any image dataset spec (Fashion-MNIST, digits, idx/npy/npz, a
same-size image folder), or, with `--patch P`, an `images:DIR` folder of any sizes: random PxP
crops for training, PxP centre crops for validation, whole images for the test figures. If DIR has
`train/` and `test/` subfolders (and optionally `val/`) they are the splits; otherwise its files
are split by the seed like every other dataset (10% validation, 15% test).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import AeoptError
from ..runs import save_config, save_tensors, write_json
from . import _devloop
from ..models.codec import SMALL_IMAGE
from .patches import PatchSource, image_files, read_image

VAL_IMAGES = 64  # validation crops per epoch in --patch mode: enough to pick the best epoch
# Small images train on one thread unless --threads says otherwise: their ops are too small to
# split, and two OpenMP threads on a busy 2-core machine measured 70x slower per step (spin-waits).


def _split_files(spec: str, seed: int) -> tuple[list[Path], list[Path], list[Path]]:
    kind, _, folder = spec.partition(":")
    if kind != "images" or not folder:
        raise AeoptError(f"--patch takes crops from an image folder: pass --data images:DIR (got {spec!r})")
    root = Path(folder).expanduser()
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_files = image_files(root / "train")
        test_files = image_files(root / "test")
        val_files = image_files(root / "val") if (root / "val").is_dir() else train_files[-max(1, len(train_files) // 10):]
        return train_files, val_files, test_files
    files = image_files(root)
    if len(files) < 3:
        raise AeoptError(f"{folder} has {len(files)} images; --patch needs at least 3 (train, val, test)")
    order = np.random.default_rng(seed).permutation(len(files))
    n_val, n_test = max(1, len(files) // 10), max(1, round(len(files) * 0.15))
    return ([files[i] for i in order[n_val + n_test:]], [files[i] for i in order[:n_val]],
            [files[i] for i in order[n_val:n_val + n_test]])


def _patch_splits(spec: str, patch: int, seed: int):
    train_files, val_files, test_files = _split_files(spec, seed)
    first = read_image(train_files[0])
    mode = "L" if first.shape[0] == 1 else "RGB"
    train = PatchSource([read_image(f, mode) for f in train_files], patch, seed=seed)
    val_images = [PatchSource._at_least(read_image(f, mode), patch) for f in val_files[:VAL_IMAGES]]
    val = torch.stack([torch.from_numpy(_centre(im, patch).copy()) for im in val_images]).float() / 255
    test = [read_image(f, mode) for f in test_files]
    return train, val, test


def load_test_images(config, channels: int, data: str | None = None, data_dir: str | None = None) -> list[np.ndarray]:
    """The test split of a codec run's data (or of other data) as uint8 images."""
    from ..data import load_data

    spec = data or config.data
    if config.patch is not None and data is None:
        mode = "L" if channels == 1 else "RGB"
        return [read_image(f, mode) for f in _split_files(spec, config.seed)[2]]
    dataset = load_data(spec, data_dir=data_dir or config.data_dir, seed=config.seed)
    if not dataset.is_image:
        raise AeoptError(f"the codec compresses images; {spec} is a table")
    return _uint8(dataset.x_test)


def evaluate_codec(run_dir, *, data: str | None = None, data_dir: str | None = None) -> dict:
    """`aeopt evaluate` on a codec run: the test figures measured on real encoded files."""
    from .api import load_codec
    from .evaluate import measure
    from ..runs import read_config

    config, _ = read_config(run_dir)
    run = load_codec(run_dir)
    return {"test": measure(run, load_test_images(config, run.channels, data, data_dir)), "data": data or config.data,
            "model_id": run.tables.short_id}


def _centre(image: np.ndarray, patch: int) -> np.ndarray:
    top, left = (image.shape[1] - patch) // 2, (image.shape[2] - patch) // 2
    return image[:, top:top + patch, left:left + patch]


def _uint8(x: torch.Tensor) -> list[np.ndarray]:
    return list(torch.round(x * 255).to(torch.uint8).numpy())


def train_codec(config, *, dataset=None, overwrite: bool = False, progress: bool = True,
                log: Callable[[str], None] = print, max_seconds: float | None = None, resume=None):
    """Train a codec run (config.model == "codec"); returns aeopt.train.TrainResult."""
    from ..data import load_data
    from ..models.codec import CodecObjective
    from ..runs import build_model
    from ..train import TrainResult, prepare_run_dir, write_history

    if resume is not None:
        raise AeoptError("codec runs cannot be resumed yet; train again with more --epochs")
    if config.lr == "auto":
        raise AeoptError("--lr auto is not available for the codec; pass a number (e.g. 1e-3)")
    torch.manual_seed(config.seed)
    if config.patch is not None:
        train, val, test = _patch_splits(config.data, config.patch, config.seed)
        sample_shape = list(train.sample_shape)
        n_train, n_val = len(train), len(val)
    else:
        dataset = dataset or load_data(config.data, data_dir=config.data_dir, seed=config.seed, limit=config.limit)
        if not dataset.is_image:
            raise AeoptError(f"the codec compresses images; {config.data} is a table")
        train, val, test = dataset.x_train, dataset.x_val, _uint8(dataset.x_test)
        sample_shape, n_train, n_val = list(dataset.sample_shape), len(train), len(val)
    info = {"sample_shape": sample_shape, "is_image": True, "output": "sigmoid", "scaler": None,
            "n_train": n_train, "n_val": n_val, "n_test": len(test)}
    model = build_model(config, info)  # bad knobs fail here, before a directory exists
    run_dir = prepare_run_dir(config.out, config, overwrite=overwrite)
    config.out = str(run_dir)
    save_config(run_dir, config, info)
    threads = config.threads or (1 if min(sample_shape[1:]) < SMALL_IMAGE else None)
    if threads:
        torch.set_num_threads(threads)
    objective = CodecObjective(model.lmbda, model.distortion)
    result = _devloop.fit(model, objective, train, val, epochs=config.epochs, batch_size=config.batch_size,
                          lr=float(config.lr), seed=config.seed, max_seconds=max_seconds, log=log,
                          progress=progress)
    save_tensors(run_dir / "model.safetensors", model.state_dict())
    write_history(run_dir / "history.csv", result.history)
    return finish_codec_run(run_dir, model, test, result, log=log)


def finish_codec_run(run_dir: Path, model, test: list[np.ndarray], result, *, log=print):
    """Tables, figures measured on real files, metrics.json and the report."""
    from ..train import TrainResult
    from .api import load_codec
    from .evaluate import measure
    from .report import write_codec_report
    from .tables import build_tables, save_tables

    started = time.perf_counter()
    save_tables(run_dir, build_tables(model))
    run = load_codec(run_dir)
    test_figures = measure(run, test)
    metrics = {"test": test_figures, "params": sum(p.numel() for p in model.parameters()),
               "train_seconds": result.train_seconds, "epochs": result.epochs, "best_epoch": result.best_epoch,
               "best_val_loss": result.best_val, "entropy": model.entropy, "lmbda": model.lmbda,
               "distortion": model.distortion, "model_id": run.tables.short_id,
               "threads": torch.get_num_threads()}
    write_json(run_dir / "metrics.json", metrics)
    write_codec_report(run_dir, run, test, metrics)
    log(f"tables, test files and report in {time.perf_counter() - started:.1f} s")
    return TrainResult(run_dir, model, metrics, result.history)
