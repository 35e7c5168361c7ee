"""`aeopt train --model codec`: the one loop (aeopt.train.fit), then the integer tables, figures
measured on real files, metrics.json and the report.

Data: any image dataset spec (Fashion-MNIST, digits, idx/npy/npz, a same-size image folder), or,
with `--patch P`, an `images:DIR` folder of any sizes: random PxP crops for training (PatchSource),
PxP centre crops for validation, whole images for the test figures. If DIR has `train/` and `test/`
subfolders (and optionally `val/`) they are the splits; otherwise its files are split by the seed
like every other dataset (10% validation, 15% test). Registered with aeopt.train.api as the codec's
trainer, so `aeopt.train(model="codec", ...)` and `aeopt train --model codec` both come here.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..data import InMemorySource, load_data
from ..data.patches import PatchSource, centre_crop, edge_padded, image_files, read_image
from ..errors import AeoptError, Interrupted
from ..models.codec import SMALL_IMAGE
from ..models.codec.transforms import HYPER_STRIDE
from ..runs import build_model, read_config, save_config, warm_start, write_json
from ..settings import Settings
from ..train.api import TrainResult, resolve_settings
from ..train.callbacks import Callback
from ..train.loop import fit, resolve_device
from ..train.prepare import how_to_continue, open_run
from .coder import require_constriction

VAL_IMAGES = 64  # validation crops in --patch mode: enough to pick the best epoch
PATCHES_PER_IMAGE = 4  # crops per image per epoch in --patch mode: an epoch of a few hundred photos stays short
# Validation crops are at least this side (or the smallest validation image's): a model trained on
# small patches can do well on crops of their size and badly on whole photos (the mean-scale
# models' means, learned where every z touches a border: design_notes.md), so the best epoch is
# picked on crops where the inside of an image counts.
VAL_SIDE = 256
# Small images train on one thread unless --threads says otherwise: their ops are too small to split,
# and two OpenMP threads on a busy 2-core machine measured far slower per step (spin-waits).
SMALL_IMAGE_THREADS = 1


def split_files(spec: str, seed: int) -> tuple[list[Path], list[Path], list[Path]]:
    kind, _, folder = spec.partition(":")
    if kind != "images" or not folder:
        raise AeoptError(f"--patch takes crops from an image folder: pass --data images:DIR (got {spec!r})")
    root = Path(folder).expanduser()
    if (root / "train").is_dir() and (root / "test").is_dir():
        train = image_files(root / "train")
        val = image_files(root / "val") if (root / "val").is_dir() else train[-max(1, len(train) // 10):]
        return train, val, image_files(root / "test")
    files = image_files(root)
    if len(files) < 3:
        raise AeoptError(f"{folder} has {len(files)} images; --patch needs at least 3 (train, val, test)")
    order = np.random.default_rng(seed).permutation(len(files))
    n_val, n_test = max(1, len(files) // 10), max(1, round(len(files) * 0.15))
    return ([files[i] for i in order[n_val + n_test:]], [files[i] for i in order[:n_val]],
            [files[i] for i in order[n_val:n_val + n_test]])


def _uint8(x: torch.Tensor) -> list[np.ndarray]:
    return list(torch.round(x * 255).to(torch.uint8).numpy())


def validation_crops(images: list[np.ndarray], patch: int) -> torch.Tensor:
    """Centre crops in [0, 1] for --patch mode's validation: VAL_SIDE pixels (or the smallest image's
    side if less), never below the patch."""
    side = max(patch, min(VAL_SIDE, *(min(im.shape[1:]) for im in images)))
    crops = [centre_crop(edge_padded(im, side), side) for im in images]
    return torch.from_numpy(np.ascontiguousarray(np.stack(crops))).float() / 255


def codec_data(settings: Settings, device, dataset=None):
    """(train source, val source, test images as uint8, data_info) for a codec run."""
    d = settings.dataset
    if d.patch is not None:
        train_files, val_files, test_files = split_files(d.data, d.seed)
        mode = "L" if read_image(train_files[0]).shape[0] == 1 else "RGB"
        train = PatchSource([read_image(f, mode) for f in train_files], d.patch, seed=d.seed,
                            per_image=PATCHES_PER_IMAGE, device=device)
        val_x = validation_crops([read_image(f, mode) for f in val_files[:VAL_IMAGES]], d.patch)
        test = [read_image(f, mode) for f in test_files]
        shape, n_train = list(train.sample_shape), len(train_files)
    else:
        dataset = dataset or load_data(d.data, data_dir=d.data_dir, seed=d.seed, limit=d.limit)
        if not dataset.is_image:
            raise AeoptError(f"the codec compresses images; {d.data} is a table")
        train = InMemorySource(dataset.x_train, seed=d.seed, device=device)
        val_x, test = dataset.x_val, _uint8(dataset.x_test)
        shape, n_train = list(dataset.sample_shape), len(dataset.x_train)
    info = {"sample_shape": shape, "is_image": True, "output": "sigmoid", "scaler": None,
            "n_train": n_train, "n_val": len(val_x), "n_test": len(test)}
    return train, InMemorySource(val_x, seed=d.seed, device=device), test, info


def train_codec(config: Settings | None = None, *, dataset=None, resume=None, overwrite: bool = False,
                progress: bool = True, log: Callable[[str], None] = print, device: str | None = None,
                callbacks: Iterable[Callback] = (), **settings) -> TrainResult:
    """Train a codec run and write its directory (aeopt.train's arguments).

    With a budget (`max_minutes`) the run's epochs (and the learning-rate schedule's length) shrink to
    what the budget holds at the measured speed (train.callbacks.DeadlinePlan), so the schedule ends
    its decay; `epochs` is the most it may have (a huge count with a budget leaves the warm-up too long).
    `resume=RUN` continues RUN from its last checkpoint (crops and batch order replay by epoch, so
    it ends where an uninterrupted run ends), then builds the tables and figures as a new run does.
    """
    require_constriction()  # a run is finished by coding its test images: fail before training, not after
    if device is not None:
        settings["device"] = device
    config = resolve_settings(config, resume, settings)
    if config.optimization.lr == "auto":
        raise AeoptError("--lr auto is not available for the codec; pass a number (e.g. 1e-3)")
    torch_device = resolve_device(config.runtime.device)
    train, val, test, info = codec_data(config, torch_device, dataset)
    if config.runtime.threads is None and min(info["sample_shape"][1:]) < SMALL_IMAGE:
        config = config.replace(threads=SMALL_IMAGE_THREADS)
    torch.manual_seed(config.dataset.seed)
    model = build_model(config, info)  # bad knobs fail here, before a directory exists
    _warn_small_patches(config, model, log)
    if config.optimization.init is not None and resume is None:  # so do weights that do not fit them
        warm_start(model, config.optimization.init, model_name="codec")
    run_dir, tracking = open_run(config, resume=resume, overwrite=overwrite, log=log)
    config = config.replace(out=str(run_dir))
    save_config(run_dir, config, info)
    callbacks = [*callbacks, *tracking.trackers]
    with tracking:
        try:
            result = fit(model, model.objective(config), train, val, config, run_dir=run_dir, device=torch_device,
                         callbacks=callbacks, log=log, progress=progress, resume=resume is not None)
        except KeyboardInterrupt:
            raise Interrupted(how_to_continue(run_dir)) from None
        finished = finish_codec_run(run_dir, result.model.cpu(), test, result, log=log)
        tracking.finish(run_dir, finished.metrics)  # the test figures from real files, and the run's artifacts
    return finished


def _warn_small_patches(config: Settings, model, log) -> None:
    """The mean-scale models need patches where z (stride x HYPER_STRIDE) is at least 4x4: on 128 crops
    (z 2x2, every value at a border) h_s learns means that are wrong inside a whole photo; on BSDS500
    a 3-minute run's files came out 1.8x the bytes of the same run on 256 crops (design_notes.md)."""
    need = 4 * model.stride * HYPER_STRIDE
    if config.dataset.patch is not None and model.has_means and config.dataset.patch < need:
        log(f"warning: --patch {config.dataset.patch} is small for --entropy {model.entropy}: its means learned "
            f"on crops that small fit whole images badly; use --patch {need} or more (the same pixels per step: "
            f"a quarter of the --batch-size at twice the side)")


def finish_codec_run(run_dir: Path, model, test: list[np.ndarray], result, *, log=print) -> TrainResult:
    """Tables, figures measured on real files, metrics.json and the report."""
    from .api import load_codec
    from .evaluate import measure
    from .report import write_codec_report
    from .tables import build_tables, save_tables

    started = time.perf_counter()
    save_tables(run_dir, build_tables(model))
    run = load_codec(run_dir)
    metrics = {"test": measure(run, test), "params": sum(p.numel() for p in model.parameters()),
               "train_seconds": result.train_seconds, "epochs": result.epochs, "steps": result.loop.step,
               "best_epoch": result.best_epoch, "best_val_loss": result.best_val, "entropy": model.entropy,
               "lmbda": model.lmbda,
               "distortion": model.distortion, "model_id": run.tables.short_id, "threads": torch.get_num_threads(),
               "precision": getattr(result, "precision", "fp32")}
    write_codec_report(run_dir, run, test, metrics)
    write_json(run_dir / "metrics.json", metrics)  # last: a run with metrics.json is finished
    log(f"tables, test files and report in {time.perf_counter() - started:.1f} s")
    return TrainResult(run_dir, model, metrics, result.history)


def load_test_images(config: Settings, channels: int, data: str | None = None,
                     data_dir: str | None = None) -> list[np.ndarray]:
    """The test split of a codec run's data (or of other data) as uint8 images."""
    d = config.dataset
    spec = data or d.data
    if d.patch is not None and data is None:
        mode = "L" if channels == 1 else "RGB"
        return [read_image(f, mode) for f in split_files(spec, d.seed)[2]]
    dataset = load_data(spec, data_dir=data_dir or d.data_dir, seed=d.seed)
    if not dataset.is_image:
        raise AeoptError(f"the codec compresses images; {spec} is a table")
    return _uint8(dataset.x_test)


def evaluate_codec(run_dir, *, data: str | None = None, data_dir: str | None = None) -> dict:
    """`aeopt evaluate` on a codec run: the test figures measured on real encoded files."""
    from .api import load_codec
    from .evaluate import measure

    config, _ = read_config(run_dir)
    run = load_codec(run_dir)
    return {"test": measure(run, load_test_images(config, run.channels, data, data_dir)), "data": data or config.data,
            "model_id": run.tables.short_id}
