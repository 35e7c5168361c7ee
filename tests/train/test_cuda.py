"""The CUDA path: bf16 and fp16 autocast (fp16 with a grad scaler), NHWC convs, fused Adam, and a GPU run
that loads on a CPU. Skipped where no CUDA GPU is present (CI); run on a GPU machine with
`python -m pytest tests/train/test_cuda.py`."""
from __future__ import annotations

import pytest
import torch

from aeopt import load
from aeopt.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CONV = dict(data="digits", model="conv", latent_dim=8, batch_size=64, patience=None)


def quiet(message: str) -> None:
    pass


def test_bf16_and_fp16_reach_the_fp32_test_mse_within_5_percent(tmp_path, digits):
    mse = {}
    for precision in ("fp32", "bf16", "fp16"):
        result = train(dataset=digits, **CONV, epochs=10, precision=precision, device="cuda",
                       out=str(tmp_path / precision), progress=False, log=quiet)
        assert result.metrics["precision"] == precision
        assert result.metrics["memory_format"] == "channels_last"   # NHWC on GPUs, in every precision
        mse[precision] = result.metrics["test"]["mse"]
    assert mse["fp32"] < result.metrics["pca"]["mse"], mse           # it learned
    for precision in ("bf16", "fp16"):
        assert abs(mse[precision] - mse["fp32"]) / mse["fp32"] < 0.05, mse


def test_auto_precision_and_fused_adam_on_cuda(tmp_path, digits):
    from aeopt.train import Loop as Trainer

    seen = {}

    def inspect(trainer: Trainer) -> None:
        seen["fused"] = trainer.optimizer.defaults.get("fused")
        seen["scaler"] = trainer.scaler.is_enabled()
        seen["device"] = next(trainer.model.parameters()).device.type

    result = train(dataset=digits, **CONV, epochs=1, device="cuda", out=str(tmp_path / "auto"),
                   progress=False, log=quiet, setup=inspect)
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert result.metrics["precision"] == expected
    assert seen == {"fused": True, "scaler": expected == "fp16", "device": "cuda"}


def test_a_gpu_run_loads_on_a_cpu_and_reconstructs_the_same(tmp_path, digits):
    result = train(dataset=digits, **CONV, epochs=2, precision="fp32", device="cuda", out=str(tmp_path / "run"),
                   progress=False, log=quiet)
    x = digits.x_test[:128]
    # cuDNN may run fp32 convs in TF32 (10-bit mantissa) by default; compare like for like
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        on_gpu = result.model.eval()(x.cuda())["x_hat"].float().cpu()
        on_cpu = load(result.path, runtime="torch").model.eval()(x)["x_hat"]
    assert next(load(result.path, runtime="torch").model.parameters()).device.type == "cpu"
    assert torch.allclose(on_gpu, on_cpu, atol=1e-4), (on_gpu - on_cpu).abs().max()


def test_cuda_graph_step_trains_like_the_eager_step_and_resumes(tmp_path, digits, interrupt_after_epoch_2):
    runs = {}
    for graph in (True, False):
        runs[graph] = train(dataset=digits, **CONV, epochs=3, precision="fp32", cuda_graph=graph, device="cuda",
                            out=str(tmp_path / f"graph-{graph}"), progress=False, log=quiet)
        assert runs[graph].metrics["cuda_graph"] is graph
    mse = {graph: run.metrics["test"]["mse"] for graph, run in runs.items()}
    # the same kernels in the same order (cuDNN may pick others between runs): the same model, within noise
    assert abs(mse[True] - mse[False]) / mse[False] < 0.02, mse
    assert all(isinstance(row["lr"], float) for row in runs[True].history)
    assert runs[True].history[-1]["grad_norm"] > 0          # the monitor sampled the graph's gradients

    # a graph run cut after epoch 2 resumes from its checkpoint (learning rates saved as numbers; a new graph
    # is captured) and ends where the uninterrupted one did
    with pytest.raises(KeyboardInterrupt):
        train(dataset=digits, **CONV, epochs=3, precision="fp32", device="cuda", out=str(tmp_path / "cut"),
              progress=False, log=quiet, callbacks=interrupt_after_epoch_2)
    resumed = train(resume=str(tmp_path / "cut"), dataset=digits, device="cuda", progress=False, log=quiet)
    assert resumed.metrics["cuda_graph"] is True
    assert abs(resumed.metrics["test"]["mse"] - mse[True]) / mse[True] < 0.02, (resumed.metrics["test"], mse)


def test_cuda_graph_with_clipping_and_bf16_stays_finite(tmp_path, digits):
    result = train(dataset=digits, **CONV, epochs=2, precision="bf16", clip_grad=0.5, device="cuda",
                   out=str(tmp_path / "clip"), progress=False, log=quiet)
    assert result.metrics["cuda_graph"] is True
    assert result.metrics["test"]["mse"] < result.metrics["pca"]["mse"] * 2


@pytest.mark.parametrize("entropy", ["hyperprior", "channelwise"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_codec_trained_and_encoding_on_the_gpu_decodes_exactly_on_one_cpu_thread(tmp_path, monkeypatch, entropy,
                                                                                   precision):
    """The CompressAI failure, across devices: a codec trained on the GPU, its files encoded there
    (g_a and h_a on the GPU, in fp32 or bf16), decode on the CPU with 1 thread to exactly the
    integers the encoder chose, and to the pixels a CPU-side decode of those integers gives."""
    import numpy as np

    from aeopt.codec import compress, decompress, load_codec
    from aeopt.codec.api import _decode_chunk, _synthesise, encode_latents
    from aeopt.codec.coder import start_decoder
    from aeopt.data import load_data

    run_dir = tmp_path / entropy
    train(data="digits", model="codec", entropy=entropy, lmbda=0.05, latent_dim=8, width=16, epochs=3,
          batch_size=16, lr=1e-2, device="cuda", out=str(run_dir), progress=False, log=quiet)
    images = (load_data("digits", seed=0).x_test[:64] * 255).round().byte().numpy()
    gpu = load_codec(run_dir, device="cuda")
    assert next(gpu.encoder().parameters()).is_cuda and not next(gpu.model.parameters()).is_cuda
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # the file's integers and these: two calls
    data = compress(gpu, images, precision=precision)
    y_gpu, z_gpu = encode_latents(gpu, torch.from_numpy(images).float() / 255, precision)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cpu = load_codec(run_dir)
        sizes, slices = cpu.unpack(data, "the file")
        y = _decode_chunk(cpu, [start_decoder(slices[0][2])], sizes[0], len(sizes))
        y_expected, _ = cpu.coder.quantize(y_gpu, z_gpu)
        assert np.array_equal(y, y_expected)
        assert np.array_equal(decompress(cpu, data), _synthesise(cpu, y_expected, sizes[0]))
    finally:
        torch.set_num_threads(threads)
