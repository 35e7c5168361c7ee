"""Run directories: atomic writes, safetensors + YAML/JSON, and loading without unpickling.

A run directory holds `config.yaml`, `model.safetensors` (best weights), `checkpoint.safetensors`
+ `checkpoint.json` (everything needed to resume), `history.csv`, `metrics.json` and the report.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .config import TrainConfig
from .errors import AeoptError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target.

    A crash leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | Path, values: Any) -> None:
    atomic_write_text(path, json.dumps(_json_safe(values), indent=2) + "\n")


def _json_safe(value: Any) -> Any:
    """JSON has no inf/nan: write them as null so every JSON reader can load the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise AeoptError(f"no such file: {path}; is this a complete aeopt run directory?")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise AeoptError(f"{path} is not a readable safetensors file ({err}); retrain or restore it") from None


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (optimizer state dicts, say) into tensors and a JSON skeleton.

    Tensors are replaced by {"__tensor__": key}; everything else must be JSON-able. This is how
    checkpoints avoid pickle: safetensors for the tensors, JSON for the rest.
    """
    if isinstance(state, torch.Tensor):
        return {prefix: state}, {"__tensor__": prefix}
    if isinstance(state, dict):
        tensors, skeleton = {}, {}
        for key, value in state.items():
            sub_tensors, skeleton[str(key)] = flatten_state(value, f"{prefix}.{key}" if prefix else str(key))
            tensors.update(sub_tensors)
        # JSON turns int keys into strings; remember which were ints so they come back as ints.
        if any(isinstance(k, int) for k in state):
            skeleton["__int_keys__"] = True
        return tensors, skeleton
    if isinstance(state, (list, tuple)):
        tensors, skeleton = {}, []
        for i, value in enumerate(state):
            sub_tensors, sub = flatten_state(value, f"{prefix}.{i}")
            tensors.update(sub_tensors)
            skeleton.append(sub)
        return tensors, skeleton
    return {}, state


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        int_keys = skeleton.get("__int_keys__", False)
        return {(int(k) if int_keys else k): unflatten_state(v, tensors)
                for k, v in skeleton.items() if k != "__int_keys__"}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save_config(run_dir: Path, config: TrainConfig, data_info: dict[str, Any]) -> None:
    """config.yaml: the training settings plus what the data looked like (shape, scaler)."""
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump({**config.to_dict(), "data_info": data_info},
                                                              sort_keys=False))


def read_config(run_dir: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AeoptError(f"no such run directory: {run_dir}")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise AeoptError(f"{run_dir} has no config.yaml: not an aeopt run directory")
    try:
        values = yaml.safe_load(path.read_text())
        data_info = values.pop("data_info")
        return TrainConfig.from_dict(values, source=str(path)), data_info
    except (yaml.YAMLError, AttributeError, KeyError, TypeError) as err:
        raise AeoptError(f"{path} is damaged ({err}); retrain the run") from None


@dataclass
class LoadedRun:
    """A trained run, rebuilt from its directory."""

    path: Path
    model: torch.nn.Module
    config: TrainConfig
    data_info: dict[str, Any]
    metrics: dict[str, Any] | None


def build_model(config: TrainConfig, data_info: dict[str, Any]) -> torch.nn.Module:
    from .models import create_model

    model = create_model(config.model, tuple(data_info["sample_shape"]), config.latent_dim,
                         output=data_info["output"], **config.model_knobs())
    if config.extra.get("channels"):  # structurally pruned (aeopt shrink --structured): narrower layers
        from .models.channels import keep_channels_

        keep_channels_(model, config.extra["channels"])
    return model


def load(run_dir: str | Path, *, weights: str = "model.safetensors", runtime: str = "auto") -> LoadedRun:
    """Rebuild a run's model from `config.yaml` and its weights from safetensors (no pickle).

    Args:
        run_dir: the run directory.
        weights: the safetensors file to load (torch runtime).
        runtime: "torch", "onnx" (ONNX Runtime; a float run is exported on the fly), or "auto": the
            run's recorded format (`extra["format"]`, "onnx" for int8 runs written by `aeopt shrink`).
    """
    run_dir = Path(run_dir)
    config, data_info = read_config(run_dir)
    if runtime not in ("auto", "torch", "onnx"):
        raise AeoptError(f"unknown runtime {runtime!r}; use auto, torch or onnx")
    if runtime == "onnx" or (runtime == "auto" and config.extra.get("format") == "onnx"):
        from .shrink.export import load_onnx_run

        return load_onnx_run(run_dir, config, data_info)
    model = build_model(config, data_info)
    state = load_tensors(run_dir / weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise AeoptError(f"{run_dir / weights} does not fit the model in config.yaml "
                         f"({str(err).splitlines()[0]}); the run directory is inconsistent") from None
    model.eval()
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    return LoadedRun(run_dir, model, config, data_info, metrics)
