"""`aeopt bench`: batch-1 latency, batch-256 throughput and peak memory of a run's deployable forms.

Forms: eager fp32 (the model as trained, the baseline), eager bf16 autocast (channels-last for
convs), torch.compile (fp32), ONNX Runtime fp32 and ONNX Runtime int8 (the run's own int8 graph,
or a static int8 quantization made on the fly). All but the baseline run with BatchNorm folded
into the layer before it (aeopt.shrink.fuse). All forms are timed back to back in one process
with the same thread count, so their ratios hold on a busy machine.
"""
from __future__ import annotations

import copy
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..data import load_data
from ..errors import AeoptError
from ..runs import write_json
from ..train.precision import use_channels_last
from .export import check_parity, export_onnx, onnx_session
from .fuse import fold_batchnorm
from .inference import load
from .quantize import quantize_onnx

FORMS = ("eager_fp32", "eager_bf16", "compiled", "onnx_fp32", "onnx_int8")
Forward = Callable[[torch.Tensor], torch.Tensor]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak resident memory above the starting point while the block runs (sampled every ms; Linux)."""

    def __enter__(self) -> "PeakMemory":
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def megabytes(self) -> float:
        return (self.peak - self.start) / 1e6


def time_call(forward: Forward, x: torch.Tensor, *, min_seconds: float = 1.0, min_calls: int = 5) -> float:
    """Median seconds per call after warm-up calls, over at least `min_calls` and `min_seconds`."""
    for _ in range(3):
        forward(x)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        forward(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_forward(model: torch.nn.Module, *, bf16: bool = False) -> Forward:
    """Eager inference; in bf16, conv models run channels-last like the trainer (faster there:
    benchmarks/results/design_notes.md), and the timed call includes converting the input."""

    model.eval()
    nhwc = bf16 and use_channels_last(torch.device("cpu"), model, "bf16")
    if nhwc:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(x.contiguous(memory_format=torch.channels_last) if nhwc else x)["x_hat"]

    return forward


def onnx_forward(path: Path, threads: int) -> Forward:

    session = onnx_session(path, threads=threads)
    name = session.get_inputs()[0].name

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

    return forward


def build_forms(run_dir: Path, folder: Path, *, threads: int, forms: tuple[str, ...] = FORMS,
                calibration: torch.Tensor | None = None) -> dict[str, Forward]:
    """name -> forward(x) -> x_hat for each requested form of the run (ONNX files go to `folder`)."""

    run = load(run_dir, runtime="torch")
    model = run.model.eval()
    folded = fold_batchnorm(model)
    built: dict[str, Forward] = {}
    if "eager_fp32" in forms:
        built["eager_fp32"] = torch_forward(model)
    if "eager_bf16" in forms:
        built["eager_bf16"] = torch_forward(folded, bf16=True)
    if "compiled" in forms:
        built["compiled"] = torch_forward(torch.compile(folded, dynamic=False))
    onnx_fp32 = folder / "full.onnx"
    if "onnx_fp32" in forms or ("onnx_int8" in forms and not run.artifact.get("onnx")):
        export_onnx(model, onnx_fp32)
        check_parity(model, onnx_fp32)
    if "onnx_fp32" in forms:
        built["onnx_fp32"] = onnx_forward(onnx_fp32, threads)
    if "onnx_int8" in forms:
        recorded = run.artifact.get("onnx")
        if recorded:
            int8 = Path(run_dir) / recorded["full"]
        else:
            if calibration is None:
                raise AeoptError("timing int8 needs calibration data; pass some training samples")
            int8 = quantize_onnx(onnx_fp32, folder / "full.int8.onnx", calibration=calibration.numpy())
        built["onnx_int8"] = onnx_forward(int8, threads)
    return built


def bench_forward(forward: Forward, sample_shape: tuple[int, ...], *, big_batch: int = 256,
                  min_seconds: float = 1.0) -> dict[str, float]:
    """Latency at batch 1, throughput and peak extra memory at `big_batch`."""
    generator = torch.Generator().manual_seed(0)
    one = torch.rand(1, *sample_shape, generator=generator)
    many = torch.rand(big_batch, *sample_shape, generator=generator)
    latency = time_call(forward, one, min_seconds=min_seconds)
    with PeakMemory() as memory:
        seconds = time_call(forward, many, min_seconds=min_seconds)
    return {"batch1_latency_ms": latency * 1e3, f"batch{big_batch}_samples_per_s": big_batch / seconds,
            "peak_memory_mb": memory.megabytes}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__}


def bench(run_dir: str | Path, *, threads: int = 2, forms: tuple[str, ...] = FORMS, big_batch: int = 256,
          min_seconds: float = 1.0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time every form of a run and write `bench.json` into the run directory; returns its content."""

    unknown = sorted(set(forms) - set(FORMS))
    if unknown:
        raise AeoptError(f"unknown form {', '.join(unknown)}; known: {', '.join(FORMS)}")
    run_dir = Path(run_dir)
    run = load(run_dir, runtime="torch")
    calibration = None
    if "onnx_int8" in forms and not run.artifact.get("onnx"):
        cfg = run.config
        calibration = load_data(cfg.data, data_dir=cfg.data_dir, seed=cfg.seed, limit=cfg.limit).x_train[:512]
    torch.set_num_threads(threads)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="aeopt-bench-") as tmp:
        built = build_forms(run_dir, Path(tmp), threads=threads, forms=forms, calibration=calibration)
        for name, forward in built.items():
            results[name] = bench_forward(forward, tuple(run.data_info["sample_shape"]), big_batch=big_batch,
                                          min_seconds=min_seconds)
            row = results[name]
            log(f"{name:11} batch-1 {row['batch1_latency_ms']:8.3f} ms   batch-{big_batch} "
                f"{row[f'batch{big_batch}_samples_per_s']:10.0f} samples/s   peak +{row['peak_memory_mb']:.1f} MB")
    base = results.get("eager_fp32")
    if base:
        key = f"batch{big_batch}_samples_per_s"
        for row in results.values():
            row["throughput_vs_eager_fp32"] = row[key] / base[key]
    report = {"threads": threads, "machine": machine(), "forms": results}
    write_json(run_dir / "bench.json", report)
    return report
