"""ONNX export with a dynamic batch dimension, a parity check, and an ONNX Runtime model.

`export_onnx` writes the full model (x -> x_hat, z), the encoder (x -> z) or the decoder
(z -> x_hat); `x_hat` is always in data space (the sigmoid is part of the graph). `OnnxAutoencoder`
runs such files through ONNX Runtime behind the `Autoencoder` interface (encode / decode / forward
dict / latent_dim), so evaluation, reconstruction and the benchmarks treat it like any model.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import AeoptError
from ..runs import LoadedRun, load_torch, read_metrics
from .fuse import fold_batchnorm

PARTS = ("full", "encoder", "decoder")
PARITY_TOLERANCE = 1e-4   # fp32 graphs: ONNX Runtime and torch differ by rounding only
OPSET = 17


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise AeoptError("this needs onnxruntime; install it with `pip install aeopt[onnx]`") from None
    return onnxruntime


class _Part(nn.Module):
    """The piece of an autoencoder that one ONNX file holds, with fixed input/output names."""

    def __init__(self, model: nn.Module, part: str):
        super().__init__()
        self.model, self.part = model, part

    def forward(self, inputs: torch.Tensor):
        if self.part == "encoder":
            return self.model.encode(inputs)
        if self.part == "decoder":
            return self.model.decode(inputs)
        out = self.model(inputs)
        return out["x_hat"], out["z"]


def io_names(part: str) -> tuple[list[str], list[str]]:
    """ONNX input and output names of each part."""
    return {"full": (["x"], ["x_hat", "z"]), "encoder": (["x"], ["z"]), "decoder": (["z"], ["x_hat"])}[part]


def example_input(model: nn.Module, part: str, batch: int = 2) -> torch.Tensor:
    shape = (model.latent_dim,) if part == "decoder" else tuple(model.input_shape)
    return torch.rand(batch, *shape)


def export_onnx(model: nn.Module, path: str | Path, *, part: str = "full") -> Path:
    """Write `part` of a torch autoencoder to an ONNX file whose batch dimension is dynamic.

    Uses the TorchScript-based exporter (`dynamo=False`): it handles the models' fixed padding and
    cropping directly and takes a second, where the dynamo exporter takes many. BatchNorms are
    folded into the layer before them first (see aeopt.shrink.fuse): ONNX Runtime does not fuse
    ConvTranspose + BatchNorm itself.
    """

    if part not in PARTS:
        raise AeoptError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    path = Path(path)
    if not path.parent.is_dir():
        raise AeoptError(f"cannot write {path}: folder {path.parent} does not exist")
    inputs, outputs = io_names(part)
    wrapped = _Part(fold_batchnorm(model.float().cpu()), part)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns that PadTo/CropTo's "pad or not" becomes a constant: it is one, since only the
            # batch dimension is dynamic and the image size is fixed by the model; nothing for the user to do.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            # "legacy TorchScript-based exporter": chosen on purpose (see above); the user can do nothing about it.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(wrapped, (example_input(model, part),), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=inputs, output_names=outputs,
                              dynamic_axes={name: {0: "batch"} for name in inputs + outputs})
        tmp.replace(path)   # atomic: the file is complete or absent
    finally:
        tmp.unlink(missing_ok=True)
    return path


def onnx_session(path: str | Path, *, threads: int | None = None):
    """An ONNX Runtime CPU session with all graph optimizations (fusions) on."""
    ort = require_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise AeoptError(f"no such ONNX file: {path}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for corrupt files
        raise AeoptError(f"{path} is not a loadable ONNX model ({str(err).splitlines()[0]})") from None


def check_parity(model: nn.Module, path: str | Path, *, part: str = "full", batch: int = 5,
                 tolerance: float = PARITY_TOLERANCE) -> float:
    """Max |torch - ONNX Runtime| of the first output on a random batch; raises above `tolerance`.

    The batch size differs from the export's example batch, so this also proves the dynamic batch.
    """
    x = example_input(model, part, batch)
    with torch.no_grad():
        expected = _Part(model.float().cpu().eval(), part)(x)
    expected = expected[0] if isinstance(expected, tuple) else expected
    session = onnx_session(path)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    diff = float(np.abs(got - expected.numpy()).max())
    if not diff <= tolerance:
        raise AeoptError(f"ONNX parity check failed: max abs diff {diff:.3g} > tolerance {tolerance:g} "
                         f"between torch and {path}; do not ship this file")
    return diff


class OnnxAutoencoder(nn.Module):
    """An autoencoder whose encoder, decoder and full pass run in ONNX Runtime.

    Args:
        files: part name -> ONNX file ("full" is required; "encoder"/"decoder" enable encode/decode).
        input_shape, latent_dim, output: as the torch model's.
        threads: ONNX Runtime intra-op threads (None = its default).
    """

    def __init__(self, files: dict[str, Path], input_shape: tuple[int, ...], latent_dim: int, output: str,
                 threads: int | None = None):
        super().__init__()
        self.files = {part: Path(p) for part, p in files.items()}
        self.input_shape, self.latent_dim, self.output = tuple(input_shape), latent_dim, output
        self.sessions = {part: onnx_session(p, threads=threads) for part, p in self.files.items()}
        self._tmp: Any = None  # keeps a temporary export folder alive as long as the model

    def _run(self, part: str, inputs: torch.Tensor) -> list[np.ndarray]:
        if part not in self.sessions:
            raise AeoptError(f"this ONNX model has no {part} graph; export it with --part {part}")
        session = self.sessions[part]
        array = inputs.detach().float().cpu().contiguous().numpy()
        return session.run(None, {session.get_inputs()[0].name: array})

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._run("encoder", x)[0])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._run("decoder", z)[0])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"x_hat", "z"}; no "logits": ONNX graphs end in data space."""
        x_hat, z = self._run("full", x)
        return {"x_hat": torch.from_numpy(x_hat), "z": torch.from_numpy(z)}

    def extra_metrics(self, x: torch.Tensor) -> dict:
        """Variant figures need the torch model's internals; an ONNX graph reports none."""
        return {}

    def num_params(self) -> int:
        import onnx

        graph = onnx.load(str(self.files["full"])).graph
        return int(sum(np.prod(init.dims) for init in graph.initializer if len(init.dims) > 1 or init.dims))


def export_all(model: nn.Module, folder: Path, prefix: str = "") -> dict[str, Path]:
    """Export all three parts into `folder`, each checked for parity; returns part -> file."""
    files = {}
    for part in PARTS:
        files[part] = export_onnx(model, folder / f"{prefix}{part}.onnx", part=part)
        check_parity(model, files[part], part=part)
    return files


def load_onnx_run(run_dir: Path, config: Any, data_info: dict[str, Any], artifact: dict[str, Any]) -> LoadedRun:
    """A run with an ONNX Runtime model: the run's own ONNX files (`artifact["onnx"]`, an int8 run), or
    its float model exported to a temporary folder and parity-checked."""
    recorded = artifact.get("onnx")
    if recorded:
        files = {part: run_dir / name for part, name in recorded.items()}
        model = OnnxAutoencoder(files, tuple(data_info["sample_shape"]), config.latent_dim, data_info["output"])
    else:
        torch_model = load_torch(run_dir).model
        tmp = tempfile.TemporaryDirectory(prefix="aeopt-onnx-")
        files = export_all(torch_model, Path(tmp.name))
        model = OnnxAutoencoder(files, torch_model.input_shape, torch_model.latent_dim, torch_model.output)
        model._tmp = tmp
    return LoadedRun(run_dir, model, config, data_info, read_metrics(run_dir), artifact)


def export_run(run_dir: str | Path, onnx_file: str | Path, *, part: str = "full") -> float:
    """`aeopt export`: write one part of a run's (float) model to ONNX; returns the parity max abs diff."""
    run = load_torch(run_dir)
    export_onnx(run.model, onnx_file, part=part)
    return check_parity(run.model, onnx_file, part=part)
