"""Deployment: a run loaded in any runtime and applied to files, ONNX export, int8 quantization,
latency/throughput benchmarks, prior sampling."""
from .bench import bench
from .export import export_onnx, export_run
from .inference import evaluate, load, reconstruct_file

__all__ = ["bench", "evaluate", "export_onnx", "export_run", "load", "reconstruct_file"]
