"""Post-training int8 quantization with ONNX Runtime's quantizer.

Why ONNX Runtime and not torch.ao.quantization: torch 2.13's eager-mode quantization API is
deprecated (moving to torchao), its quantized modules hold packed weights that only pickle can
save, and measured here its int8 convolutions were no faster than fp32 eager. ONNX Runtime's
quantized graph is a plain .onnx file (no pickle), runs in the same runtime as the fp32 export, and
its static QDQ convolutions use VNNI int8 kernels on this CPU. See benchmarks/results/shrink.md.

Modes:
  static  - convolutions AND linear layers quantized statically (QDQ, per-channel weights),
            activation ranges calibrated on training data. The default: fastest here.
  mixed   - convolutions static (calibrated), linear layers dynamic (activation range computed
            per batch at run time); as the issue proposes, but the run-time range costs time.
  dynamic - linear layers only, dynamic; convolutions stay fp32.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import AeoptError
from ..runs import atomic_write_bytes
from .export import require_onnxruntime

MODES = ("static", "mixed", "dynamic")
CONV_OPS = ["Conv", "ConvTranspose"]
LINEAR_OPS = ["MatMul", "Gemm"]


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over an in-memory array."""

    def __init__(self, input_name: str, data: np.ndarray, batch_size: int = 64):
        self.batches = iter([{input_name: np.ascontiguousarray(data[i:i + batch_size], dtype=np.float32)}
                             for i in range(0, len(data), batch_size)])

    def get_next(self):
        return next(self.batches, None)


def quantize_onnx(float_path: str | Path, out_path: str | Path, *, calibration: np.ndarray | None = None,
                  mode: str = "static") -> Path:
    """Write an int8 version of an fp32 ONNX file.

    Args:
        float_path: the fp32 ONNX file (from `export_onnx`).
        out_path: where the int8 file goes (written atomically).
        calibration: a few hundred typical inputs of the graph (needed by "static" and "mixed").
        mode: static | mixed | dynamic (see the module docstring).
    """
    require_onnxruntime()
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in MODES:
        raise AeoptError(f"unknown quantization mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode != "dynamic" and (calibration is None or len(calibration) == 0):
        raise AeoptError("static int8 quantization needs calibration inputs; pass some training samples")
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="aeopt-quant-") as tmp:
        prepared, staged = Path(tmp) / "prepared.onnx", Path(tmp) / "staged.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        current = prepared
        if mode in ("static", "mixed"):
            import onnx

            input_name = onnx.load(str(prepared)).graph.input[0].name
            ops = CONV_OPS + (LINEAR_OPS if mode == "static" else [])
            quantize_static(str(prepared), str(staged), _Calibration(input_name, calibration),
                            quant_format=QuantFormat.QDQ, per_channel=True, op_types_to_quantize=ops,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
            current = staged
        if mode in ("mixed", "dynamic"):
            final = Path(tmp) / "dynamic.onnx"
            quantize_dynamic(str(current), str(final), op_types_to_quantize=LINEAR_OPS,
                             weight_type=QuantType.QInt8, per_channel=False)
            current = final

        atomic_write_bytes(out_path, current.read_bytes())
    return out_path
