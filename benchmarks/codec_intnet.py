"""The integer h_s's 3x3 convolution (aeopt/codec/intnet.py): numpy's strided im2col and OpenBLAS
float64 GEMM (what aeopt ran up to the twenty-fifth session) against torch's unfold and float64 GEMM
(what it runs now), on the channel-wise context nets' shapes and in batch mode, beside WebP.

  flock /tmp/aeopt-bench.lock python benchmarks/codec_intnet.py   # -> results/codec_intnet.md

Kernels: batches of 250 7x7 latents (a Fashion-MNIST batch's shape), random integers at the
fixed-point scale, best of 7; both paths must give the same numbers, and the same file for 500
test images (asserted). Batch mode: the cached runs' one many-image file for 3,000 test images,
encode then decode, one thread, each path and WebP q10 (one file per image, one core) in 3
interleaved rounds, median kept.
"""
from __future__ import annotations

import statistics
import sys
import timeit
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.codec import CACHE, RESULTS  # noqa: E402
from benchmarks.codec_timing import _batch_timing, _peer_timing  # noqa: E402
from benchmarks.common import machine_line  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import aeopt  # noqa: E402
from aeopt.codec import compress, intnet, load_codec  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402

RUNS = ["fmcgrd-0.005", "fmcgw2-0.005"]  # fmcgrt's and fmcgt's middle tier (the timing lambda)
# (input channels, output channels) of the wide tier's nets: h_s's layers, the three context nets' layers
SHAPES = [(16, 64), (24, 16), (32, 16), (40, 16), (16, 16)]
IMAGES, ROUNDS = 3000, 3


def numpy_conv3x3(a: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """The earlier kernel, verbatim: numpy im2col (one strided copy per tap) and numpy's GEMM."""
    n, _, _, c = a.shape
    oh, ow = out_hw
    padded = np.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = np.empty((n, oh, ow, 9, c))
    for tap in range(9):
        dy, dx = divmod(tap, 3)
        cols[:, :, :, tap] = padded[:, dy:dy + oh, dx:dx + ow]
    return (cols.reshape(n * oh * ow, 9 * c) @ matrix).reshape(n, oh, ow, -1)


def best_ms(fn) -> float:
    """Best of 7 calls after a warm-up, ms per call."""
    fn()
    return 1000 * min(timeit.repeat(fn, number=1, repeat=7))


def kernel_rows() -> list[str]:
    rng = np.random.default_rng(0)
    rows = []
    for c, o in SHAPES:
        a = rng.integers(-2 ** 22, 2 ** 22, (250, 7, 7, c)).astype(np.float64)
        matrix = intnet.conv_matrix(rng.integers(-2 ** 14, 2 ** 14, (o, c, 3, 3)))
        assert np.array_equal(numpy_conv3x3(a, matrix, (7, 7)), intnet._conv3x3(a, matrix, (7, 7)))
        old, new = best_ms(lambda: numpy_conv3x3(a, matrix, (7, 7))), best_ms(lambda: intnet._conv3x3(a, matrix, (7, 7)))
        rows.append(f"| {c} -> {o} | {old:.2f} | {new:.2f} | {new / old:.2f}x |")
    return rows


@contextmanager
def kernel(fn):
    """IntNet.forward looks _conv3x3 up in its module at each call: run the block with `fn` there."""
    library = intnet._conv3x3
    intnet._conv3x3 = fn
    try:
        yield
    finally:
        intnet._conv3x3 = library


def batch_rows(test: list[np.ndarray]) -> list[str]:
    runs = {name: load_codec(CACHE / name) for name in RUNS if (CACHE / name).exists()}
    kernels = {"numpy": numpy_conv3x3, "torch": intnet._conv3x3}
    for run in runs.values():  # the same integers either way, so the same file, byte for byte
        with kernel(numpy_conv3x3):
            before = compress(run, test[:500])
        assert compress(run, test[:500]) == before
    each: dict[str, list[dict]] = {}
    for _ in range(ROUNDS):
        for name, run in runs.items():
            for label, fn in kernels.items():
                with kernel(fn):
                    each.setdefault(f"{name} | {label}", []).append(_batch_timing(run, test, 1))
        each.setdefault("WebP q10 | -", []).append(_peer_timing(test, "WebP", 10))
    rows = []
    for key, rounds in each.items():
        mid = sorted(rounds, key=lambda r: r["images_per_s"])[len(rounds) // 2]
        spread = ", ".join(f"{r['images_per_s']:.0f}" for r in rounds)
        rows.append(f"| {key} | {mid['encode_ms']:.3f} | {mid['decode_ms']:.3f} | {mid['images_per_s']:.0f} | {spread} |")
    webp = statistics.median(r["images_per_s"] for r in each["WebP q10 | -"])
    rows.append("")
    for name in runs:
        old = statistics.median(r["images_per_s"] for r in each[f"{name} | numpy"])
        new = statistics.median(r["images_per_s"] for r in each[f"{name} | torch"])
        rows.append(f"{name}: torch kernel {new / old:.2f}x the numpy kernel's throughput; "
                    f"{new / webp:.2f}x WebP q10's ({old / webp:.2f}x before).")
    return rows


def main() -> None:
    torch.set_num_threads(1)
    data = aeopt.load_data("fashion-mnist")
    test = list((data.x_test[:IMAGES] * 255).round().byte().numpy())
    with threadpool_limits(1, user_api="blas"):
        kernels = kernel_rows()
    batch = batch_rows(test)
    lines = ["# Integer h_s kernel: numpy vs torch (benchmarks/codec_intnet.py)", "",
             f"Machine: {machine_line()}", "",
             "One 3x3 convolution of 250 7x7 latents, float64 integers, one thread, best of 7, ms "
             "(both kernels give the same numbers, asserted):", "",
             "| channels | numpy im2col + GEMM | torch unfold + GEMM | ratio |", "| --- | --- | --- | --- |",
             *kernels, "",
             f"Batch mode, {IMAGES:,} Fashion-MNIST test images, one many-image file, encode then decode, one "
             f"thread; WebP q10 one file per image on one core; median of {ROUNDS} interleaved rounds (all "
             "rounds' images/s listed):", "",
             "| run | h_s kernel | encode ms/image | decode ms/image | images/s | rounds |",
             "| --- | --- | --- | --- | --- | --- |", *batch]
    atomic_write_text(RESULTS / "codec_intnet.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
