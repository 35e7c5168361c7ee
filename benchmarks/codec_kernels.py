"""Where a Fashion-MNIST codec's time goes, and what the inference paths buy, on one core.

  flock /tmp/aeopt-bench.lock python benchmarks/codec_kernels.py    # benchmarks/results/codec_kernels.md

For the default model (width 48, latent 32) and the fast one (width 32, latent 16, hyperprior
width 16), randomly initialized (the cost does not depend on the weights), on batches of 256
28x28 images, torch and BLAS held to one thread: g_a and g_s in NCHW vs channels-last, g_s's
transposed convs as such vs their sub-pixel form (UpConv), h_a, the integer h_s, and the range
coding of real latents. Best of 7 repeats, ms per image.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_line  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from aeopt.codec.coder import Coder  # noqa: E402
from aeopt.codec.tables import build_tables  # noqa: E402
from aeopt.models.codec import codec  # noqa: E402
from aeopt.models.codec.transforms import UpConv  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 256
MODELS = {"default (w48, m32, h48)": (48, 32, 48), "fast (w32, m16, h16)": (32, 16, 16)}


def best_ms(fn, reps: int = 7) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return 1000 * best / BATCH


def transposed(layer: UpConv, x: torch.Tensor) -> torch.Tensor:
    return F.conv_transpose2d(x, layer.weight, layer.bias, stride=2, padding=2, output_padding=1)


def plain_synthesis(model, y: torch.Tensor) -> torch.Tensor:
    for layer in model.decoder:
        y = transposed(layer, y) if isinstance(layer, UpConv) else layer(y)
    return y


def measure(width: int, latent: int, hyper: int) -> dict:
    torch.manual_seed(0)
    model = codec((1, 28, 28), latent, "sigmoid", entropy="hyperprior", lmbda=0.005, width=width,
                  hyper_width=hyper).eval()
    x = torch.rand(BATCH, 1, 28, 28)
    out = {}
    with torch.no_grad():
        y = torch.round(model.analyse(x) * 3)  # random weights: spread y to a few integers like a trained model's
        out["g_a NCHW"] = best_ms(lambda: model.analyse(x))
        out["g_s NCHW, transposed convs"] = best_ms(lambda: plain_synthesis(model, y))
        out["g_s NCHW, sub-pixel"] = best_ms(lambda: model.decoder(y))
        model.to(memory_format=torch.channels_last)
        xc, yc = (t.contiguous(memory_format=torch.channels_last) for t in (x, y))
        out["g_a channels-last"] = best_ms(lambda: model.analyse(xc))
        out["g_s channels-last, transposed convs"] = best_ms(lambda: plain_synthesis(model, yc))
        out["g_s channels-last, sub-pixel (what aeopt runs)"] = best_ms(lambda: model.decoder(yc))
        z = torch.round(model.hyper_analyse(yc))
        out["h_a"] = best_ms(lambda: model.hyper_analyse(yc))
    tables = build_tables(model)
    coder = Coder(tables)
    z_int, y_int = z.long().numpy(), y.long().numpy()
    out["integer h_s (table rows)"] = best_ms(lambda: coder.rows(z_int, y_int.shape))
    rows = coder.rows(z_int, y_int.shape)
    out["range coding (encode)"] = best_ms(lambda: coder.encode(y_int, z_int, rows))
    return out


def main() -> None:
    torch.set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):
        results = {name: measure(*shape) for name, shape in MODELS.items()}
    steps = list(next(iter(results.values())))
    lines = ["# Codec kernels on one core (benchmarks/codec_kernels.py)", "",
             f"Machine: {machine_line()}. Batches of {BATCH} 28x28 grey images, torch and BLAS on one thread, "
             "best of 7, ms per image (randomly initialized models: the cost does not depend on the weights).", "",
             "| step | " + " | ".join(results) + " |", "| --- |" + " --- |" * len(results)]
    lines += [f"| {step} | " + " | ".join(f"{r[step]:.4f}" for r in results.values()) + " |" for step in steps]
    for name, r in results.items():
        lines += ["", f"{name}: channels-last g_a {r['g_a NCHW'] / r['g_a channels-last']:.2f}x; g_s channels-last + "
                  f"sub-pixel {r['g_s NCHW, transposed convs'] / r['g_s channels-last, sub-pixel (what aeopt runs)']:.2f}x "
                  f"over NCHW transposed (sub-pixel alone, channels-last: "
                  f"{r['g_s channels-last, transposed convs'] / r['g_s channels-last, sub-pixel (what aeopt runs)']:.2f}x)."]
    lines.append("")
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "codec_kernels.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
