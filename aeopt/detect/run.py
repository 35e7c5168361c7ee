"""Detector run directories: `fit_run` trains and evaluates, `load_detector` and `score_file` reuse it.

A detector run holds what a training run holds for its model (`config.yaml`, `model.safetensors`,
so `aeopt.load` works on it), plus `detector.json` (threshold, score settings, scaler) and
`detector.safetensors` (the training codes for k-NN, the training scores), `metrics.json`
(`{"detect": {auroc, average_precision, threshold, f1}}` on the test set when it has labels),
`report.md` and its figures. It is written in a hidden folder beside the target and renamed into
place, so a failed fit leaves nothing behind.

Labels are used for evaluation only, never for training, with one exception the user asks for:
`threshold="f1"` picks the threshold with the best F1 on the labelled validation split.
"""
from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data import load_data, standardize
from ..data.datasets import in_memory
from ..data.samples import to_samples, unit_float
from ..errors import AeoptError, describe_failure
from ..runs import atomic_write_text, load_tensors, load_torch, save_config, save_tensors, staged_dir, write_json
from .detector import AutoencoderDetector
from .scores import Scorer, weighted_mean
from .thresholds import NoAnomalyInLabelsWarning, check_contamination

THRESHOLDS = ("contamination", "f1")
FITTED = ("threshold_", "threshold_method_", "score_type_", "sample_shape_", "n_features_in_")


def _split_labels(y: torch.Tensor | None, normal_class: int | None) -> np.ndarray | None:
    """Anomaly flags (1 = anomaly) of a split: another class than `normal_class`, or 0/1 labels as they are."""
    if y is None:
        return None
    y = y.numpy()
    if normal_class is not None:
        return (y != normal_class).astype(int)
    return y.astype(int) if set(np.unique(y).tolist()) <= {0, 1} else None


def fit_run(data: str, out: str | Path, *, normal_class: int | None = None, contamination: float | str = 0.1,
            score: str = "auto", threshold: str = "contamination", overwrite: bool = False,
            data_dir: str | None = None, limit: int | None = None, seed: int = 0,
            log: Callable[[str], None] = print, **detector_params) -> dict[str, Any]:
    """Fit a detector on `data`'s training split and write the run directory `out`.

    With `normal_class` the training (and early-stopping) data keep only that class and the test
    set keeps every class, anomalies being the others (the one-class protocol). Without it every
    training sample trains (unsupervised); 0/1 labels, if the data have them, mark anomalies for
    evaluation.

    Returns:
        The run's metrics.
    """
    contamination = check_contamination(contamination)
    if threshold not in THRESHOLDS:
        raise AeoptError(f"unknown threshold {threshold!r}; known: {', '.join(THRESHOLDS)}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise AeoptError(f"{out} already exists; pass --overwrite to replace it or --out to choose another")
    if out.exists() and not (out / "detector.json").is_file():
        raise AeoptError(f"{out} exists and is not an aeopt detector run; refusing to delete it")
    ds = load_data(data, data_dir=data_dir, seed=seed, limit=limit, mmap=False)
    x_train, x_val = in_memory(ds.x_train), ds.x_val
    if normal_class is not None:
        if ds.y_train is None:
            raise AeoptError(f"--normal-class needs labelled data, but {data} has no labels")
        known = sorted(set(ds.y_train.tolist()))
        if normal_class not in known:
            raise AeoptError(f"class {normal_class} is not in {data}'s training labels; known: "
                             f"{', '.join(map(str, known))}")
        x_train = x_train[ds.y_train == normal_class]
    detector = AutoencoderDetector(contamination=contamination, score_type=score, seed=seed, **detector_params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NoAnomalyInLabelsWarning)
        detector.fit(x_train)
        y_val = _split_labels(ds.y_val, normal_class)
        if threshold == "f1":
            if y_val is None:
                raise AeoptError("--threshold f1 needs labels (0/1, or --normal-class) on the validation split")
            detector.fit_threshold(x_val, y_val)
    for w in caught:
        if issubclass(w.category, NoAnomalyInLabelsWarning):
            log(f"warning: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if threshold == "f1":
        log(f"threshold {detector.threshold_:.6g} ({detector.threshold_method_})")
    metrics: dict[str, Any] = {"n_train": len(x_train), "score": detector.score_type_,
                               "threshold_method": detector.threshold_method_}
    y_test = _split_labels(ds.y_test, normal_class)
    parts = detector.score_parts(ds.x_test)  # one pass: the score and, with labels, each part's AUROC
    test_scores = weighted_mean(parts)
    if y_test is not None and 0 < y_test.sum() < len(y_test):
        metrics["detect"] = evaluate_scores(test_scores, y_test, detector.threshold_)
        metrics["detect_parts"] = part_aurocs(parts, y_test)
    else:
        log("note: the test split has no anomaly labels (0/1, or --normal-class): no AUROC / F1")
    metrics["test_flagged"] = float((test_scores > detector.threshold_).mean())
    _write_run(out, detector, ds, data, normal_class, metrics, test_scores, y_test)
    return metrics


def part_aurocs(parts: dict[str, tuple[float, np.ndarray]], y: np.ndarray) -> dict[str, dict[str, float]]:
    """{part: {"weight", "auroc"}} from score_parts: how well each part ranks the labelled samples alone."""
    from sklearn.metrics import roc_auc_score

    return {name: {"weight": float(weight), "auroc": float(roc_auc_score(y, values))}
            for name, (weight, values) in parts.items()}


def evaluate_scores(scores: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    return {"auroc": float(roc_auc_score(y, scores)), "average_precision": float(average_precision_score(y, scores)),
            "threshold": float(threshold), "f1": float(f1_score(y, scores > threshold))}


def _write_run(out: Path, detector: AutoencoderDetector, ds, data: str, normal_class, metrics, test_scores,
               y_test) -> None:
    """Everything into a hidden sibling folder, then renamed over `out`."""
    from .report import write_report

    with staged_dir(out) as tmp:
        info = {"sample_shape": list(detector.sample_shape_), "is_image": ds.is_image,
                "output": "sigmoid" if ds.in_unit_range else "linear", "scaler": ds.scaler,
                "n_train": metrics["n_train"]}
        save_config(tmp, detector.config_, info)
        save_tensors(tmp / "model.safetensors", detector.model_.state_dict())
        save_detector_state(tmp, detector, data=data, normal_class=normal_class)
        write_json(tmp / "metrics.json", metrics)
        write_report(tmp, detector, ds, metrics, test_scores, y_test)


def save_detector_state(run_dir: Path, detector: AutoencoderDetector, **extra) -> None:
    tensors = {f"scorer.{k}": v for k, v in detector.scorer_.tensors().items()}
    tensors["decision_scores"] = torch.from_numpy(np.asarray(detector.decision_scores_, dtype=np.float64))
    if hasattr(detector, "mean_"):
        tensors["mean"] = torch.from_numpy(detector.mean_)
        tensors["scale"] = torch.from_numpy(detector.scale_)
    save_tensors(run_dir / "detector.safetensors", tensors)
    fitted = {k: getattr(detector, k) for k in FITTED}
    fitted["sample_shape_"] = list(fitted["sample_shape_"])
    write_json(run_dir / "detector.json", {"params": detector.get_params(), "fitted": fitted,
                                           "scorer": detector.scorer_.meta(), **extra})


def load_detector(run_dir: str | Path) -> tuple[AutoencoderDetector, dict[str, Any]]:
    """The fitted detector of a run directory (no pickle: safetensors + JSON) and the run's data_info."""
    run_dir = Path(run_dir)
    path = run_dir / "detector.json"
    if not path.is_file():
        raise AeoptError(f"{run_dir} is not an aeopt detector run (no detector.json); make one with aeopt detect fit")
    try:
        meta = json.loads(path.read_text())
        detector = AutoencoderDetector(**meta["params"])
        run = load_torch(run_dir)
        tensors = load_tensors(run_dir / "detector.safetensors")
        detector.model_, detector.config_ = run.model, run.config
        detector.scorer_ = Scorer.restore(meta["scorer"], {k[7:]: v for k, v in tensors.items()
                                                           if k.startswith("scorer.")})
        for key, value in meta["fitted"].items():
            setattr(detector, key, tuple(value) if key == "sample_shape_" else value)
        detector.decision_scores_ = tensors["decision_scores"].numpy()
        detector.labels_ = (detector.decision_scores_ > detector.threshold_).astype(int)
        if "mean" in tensors:
            detector.mean_, detector.scale_ = tensors["mean"].numpy(), tensors["scale"].numpy()
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, AeoptError):
            raise
        raise AeoptError(f"{run_dir} is damaged ({describe_failure(err)}); fit the detector again") from None
    return detector, run.data_info


def read_all(spec: str, data_dir: str | None = None) -> np.ndarray:
    """Every sample of a data spec in file order (no split), images in [0, 1], tables unscaled."""
    from ..data import readers, tables

    kind, _, arg = spec.partition(":")
    if spec == "digits":
        x = readers.load_digits()[0]
    elif spec == "fashion-mnist":
        x = readers.load_fashion(data_dir, 0)[0]
    elif kind == "idx" and arg:
        x = readers.read_idx(arg.partition(",")[0], "images", spec)
    elif kind == "npy" and arg:
        x = readers.load_npy(arg, spec)
    elif kind == "npz" and arg:
        x = readers.load_npz(arg, spec)[0]
    elif kind == "images" and arg:
        x = readers.load_image_dir(arg, spec, None)[0]
    elif kind == "csv" and arg:
        x = tables.load_csv(arg, spec)[0]
    else:
        load_data(spec)  # raises the one-line "unknown data source" error that lists the known ones
        raise AeoptError(f"unknown data source {spec!r}")
    x = to_samples(x, spec)
    return unit_float(x) if x.ndim == 4 else x


def score_file(run_dir: str | Path, data: str, out: str | Path, *, data_dir: str | None = None,
               overwrite: bool = False) -> dict[str, Any]:
    """Score every sample of `data` with a run's detector; write `index,score,is_anomaly` to `out`."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise AeoptError(f"{out} already exists; pass --overwrite to replace it")
    detector, info = load_detector(run_dir)
    x = read_all(data, data_dir)
    if x.ndim == 2 and info.get("scaler"):
        x = standardize(x, info["scaler"])
    if tuple(x.shape[1:]) != tuple(detector.sample_shape_):
        raise AeoptError(f"{data} holds samples of shape {tuple(x.shape[1:])}, but the detector in {run_dir} "
                         f"was fitted on {tuple(detector.sample_shape_)}: score data of the training data's shape")
    scores = detector.decision_function(x)
    flags = (scores > detector.threshold_).astype(int)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "score", "is_anomaly"])
    writer.writerows((i, f"{s:.8g}", f) for i, (s, f) in enumerate(zip(scores.tolist(), flags.tolist())))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, buffer.getvalue())
    return {"n": len(scores), "flagged": int(flags.sum()), "threshold": detector.threshold_}
