"""Run directories: atomic writes, safetensors + YAML/JSON, and loading without unpickling.

A run directory holds `config.yaml`, `model.safetensors` (best weights), `checkpoint.safetensors`
(everything needed to resume; `checkpoint.json` shows its counters for people), `history.csv`, `metrics.json` and the report.
`config.yaml` is flat: every setting by its flag name, plus `data_info` (what the data looked like)
and, for shrunk runs, `artifact` (what was done to the trained model: pruned channel counts, ONNX
files). Loading here is the torch runtime; aeopt.deploy.load adds ONNX Runtime.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .errors import AeoptError
from .models import create_model
from .models.channels import keep_channels_
from .settings import TRACKING, Settings


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target.

    A crash leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run is shared like any file open() makes
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it back at once
    os.umask(mask)
    return mask


@contextmanager
def staged_dir(out: str | Path) -> Iterator[Path]:
    """Build a directory in the hidden sibling `.NAME.partial`, then rename it over `out`.

    A kill at any moment leaves the old `out` or the new one, never half of one: an old `out` is
    renamed aside first and removed only after the new one is in place. A stage left by a killed
    command is removed by the next one (so two commands must not build the same `out` at once).
    The caller decides beforehand whether `out` may be replaced.
    """
    out = Path(out)
    stage, old = out.parent / f".{out.name}.partial", out.parent / f".{out.name}.old"
    for leftover in (stage, old):
        shutil.rmtree(leftover, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
        if out.exists():
            os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | Path, values: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(values), indent=2) + "\n")


def json_safe(value: Any) -> Any:
    """JSON has no inf/nan: write them as null so every JSON reader can load the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


SPARSE_KEY = "aeopt_sparse"   # metadata: {name: shape} of the tensors stored as values + bit mask
MASK_SUFFIX = ".__mask__"
SPARSE_GAIN = 0.9             # store sparse only when that takes at most 90% of the dense bytes


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save as safetensors; a tensor that is mostly zeros (an unstructured-pruned weight) is stored as its
    nonzero values plus a bit mask, so pruning shrinks the file (50% zeros: 53% of the bytes in fp32).
    `load_tensors` restores the dense tensors; the shapes are in the metadata under `aeopt_sparse`."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    packed, shapes = {}, {}
    for name, tensor in tensors.items():
        mask = tensor != 0
        nonzero = int(mask.sum())
        sparse_bytes = nonzero * tensor.element_size() + (tensor.numel() + 7) // 8
        if tensor.is_floating_point() and tensor.numel() >= 64 and sparse_bytes <= SPARSE_GAIN * tensor.nbytes:
            packed[name] = tensor[mask]
            packed[name + MASK_SUFFIX] = torch.from_numpy(np.packbits(mask.flatten().numpy()))
            shapes[name] = list(tensor.shape)
        else:
            packed[name] = tensor
    if shapes:
        metadata = {**(metadata or {}), SPARSE_KEY: json.dumps(shapes)}
    atomic_write_bytes(path, save(packed, metadata=metadata))


def _unpack_sparse(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> dict[str, torch.Tensor]:
    try:
        shapes = json.loads(metadata[SPARSE_KEY])
        for name, shape in shapes.items():
            values, bits = tensors[name], tensors.pop(name + MASK_SUFFIX)
            numel = math.prod(shape)
            mask = torch.from_numpy(np.unpackbits(bits.numpy(), count=numel).astype(bool))
            if int(mask.sum()) != values.numel():
                raise ValueError(f"{name}: {values.numel()} values for {int(mask.sum())} mask bits")
            dense = torch.zeros(numel, dtype=values.dtype)
            dense[mask] = values
            tensors[name] = dense.reshape(shape)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise AeoptError(f"{path} has damaged sparse tensors ({err}); retrain or restore it") from None
    return tensors


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    return load_tensors_and_metadata(path)[0]


def load_tensors_and_metadata(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise AeoptError(f"no such file: {path}; is this a complete aeopt run directory?")
    try:
        with safe_open(str(path), framework="pt") as file:
            tensors, metadata = {name: file.get_tensor(name) for name in file.keys()}, dict(file.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise AeoptError(f"{path} is not a readable safetensors file ({err}); retrain or restore it") from None
    if SPARSE_KEY in metadata:
        tensors = _unpack_sparse(tensors, metadata, path)
    return tensors, metadata


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


def save_config(run_dir: Path, config: Settings, data_info: dict[str, Any],
                artifact: dict[str, Any] | None = None) -> None:
    """config.yaml: the settings (flat), what the data looked like (shape, scaler) and the artifact record.
    Never where the run is watched from (TRACKING): a resume logs only where its own flags say, and a
    run derived from this one (a distilled student) never logs as it did."""
    values = {**config.replace(**dict.fromkeys(TRACKING)).to_flat(), "data_info": data_info}
    if artifact:
        values["artifact"] = artifact
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(values, sort_keys=False))


def read_config(run_dir: str | Path) -> tuple[Settings, dict[str, Any]]:
    """(settings, data_info) of a run directory."""
    return read_run_record(run_dir)[:2]


def read_run_record(run_dir: str | Path) -> tuple[Settings, dict[str, Any], dict[str, Any]]:
    """(settings, data_info, artifact) of a run directory, with one-line errors for damaged files."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AeoptError(f"no such run directory: {run_dir}")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise AeoptError(f"{run_dir} has no config.yaml: not an aeopt run directory")
    try:
        values = yaml.safe_load(path.read_text())
        data_info = values.pop("data_info")
        artifact = values.pop("artifact", None) or values.pop("extra", None) or {}  # `extra`: runs before 0.2
        values.pop("extra", None)
        return Settings.from_flat(values, source=str(path)), data_info, artifact
    except (yaml.YAMLError, AttributeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise AeoptError(f"{path} is damaged ({err}); retrain the run") from None


@dataclass
class LoadedRun:
    """A trained run, rebuilt from its directory."""

    path: Path
    model: torch.nn.Module
    config: Settings
    data_info: dict[str, Any]
    metrics: dict[str, Any] | None
    artifact: dict[str, Any] = field(default_factory=dict)


def build_model(config: Settings, data_info: dict[str, Any], artifact: dict[str, Any] | None = None) -> torch.nn.Module:
    model = create_model(config.architecture.model, tuple(data_info["sample_shape"]), config.architecture.latent_dim,
                         output=data_info["output"], **config.model_knobs())
    if artifact and artifact.get("channels"):  # structurally pruned (aeopt shrink --structured): narrower layers
        keep_channels_(model, artifact["channels"])
    return model


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AeoptError(f"{path} is damaged ({err}); re-run `aeopt evaluate` or retrain") from None


def load_torch(run_dir: str | Path, *, weights: str = "model.safetensors") -> LoadedRun:
    """Rebuild a run's model from `config.yaml` and its weights from safetensors (no pickle)."""
    run_dir = Path(run_dir)
    config, data_info, artifact = read_run_record(run_dir)
    model = build_model(config, data_info, artifact)
    state = load_tensors(run_dir / weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise AeoptError(f"{run_dir / weights} does not fit the model in config.yaml "
                         f"({str(err).splitlines()[0]}); the run directory is inconsistent") from None
    model.eval()
    return LoadedRun(run_dir, model, config, data_info, read_metrics(run_dir), artifact)


def warm_start(model: torch.nn.Module, init: str | Path, *, model_name: str) -> None:
    """Load run `init`'s best weights into `model` (the `--init RUN` setting), or say in one line why
    they do not fit: another model, other sizes (named: the first tensor that differs), a damaged file.
    Modules marked `fresh_identity` (they start as the identity) may be missing there: they stay fresh,
    so a model grown by such units starts as exactly the model it was grown from."""
    if not Path(init).is_dir():
        raise AeoptError(f"--init {init}: no such run directory; pass a trained run's folder (its --out)")
    try:
        config, _, artifact = read_run_record(init)
    except AeoptError as err:
        raise AeoptError(f"--init {init}: {err}") from None
    if config.architecture.model != model_name:
        raise AeoptError(f"--init {init} is a {config.architecture.model!r} run; a --model {model_name} run can "
                         f"only start from a {model_name!r} run")
    state = load_tensors(Path(init) / "model.safetensors")
    own = model.state_dict()
    # a module that starts as the identity (codec residual units) may be new: it keeps its fresh weights
    fresh = {f"{prefix}.{name}" for prefix, module in model.named_modules() if getattr(module, "fresh_identity", False)
             for name in module.state_dict()}
    for name, tensor in own.items():
        theirs = state.get(name)
        if theirs is None and name in fresh:
            state[name] = tensor
            continue
        if theirs is None or theirs.shape != tensor.shape:
            there = "missing" if theirs is None else f"{tuple(theirs.shape)}"
            pruned = " (it was pruned by aeopt shrink --structured)" if artifact.get("channels") else ""
            raise AeoptError(f"--init {init}: its weights do not fit this model{pruned}: {name} is {there} there, "
                             f"{tuple(tensor.shape)} here; use the model settings in {Path(init) / 'config.yaml'}")
    extra = sorted(set(state) - set(own))
    if extra:
        raise AeoptError(f"--init {init}: its weights do not fit this model ({extra[0]} is not in it); use the "
                         f"model settings in {Path(init) / 'config.yaml'}")
    model.load_state_dict(state)
