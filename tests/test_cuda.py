"""The CUDA path: bf16 and fp16 autocast (fp16 with a grad scaler), NHWC convs, fused Adam, and a GPU run
that loads on a CPU. Skipped where no CUDA GPU is present (CI); run on a GPU machine with
`python -m pytest tests/test_cuda.py`."""
from __future__ import annotations

import pytest
import torch

from aeopt.runs import load
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
    from aeopt.train import Trainer

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
