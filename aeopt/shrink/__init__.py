"""Shrink and ship: pruning, int8 quantization, distillation, ONNX export and latency benchmarks."""
from .bench import bench
from .export import export_onnx, export_run
from .pipeline import shrink

__all__ = ["bench", "export_onnx", "export_run", "shrink"]
