"""The few-output-channel convolutions (models/narrow_conv.py) against torch's own layers."""
from __future__ import annotations

import pytest
import torch

from aeopt.models import create_model
from aeopt.kernels.narrow_conv import NarrowConv2d, NarrowConvTranspose2d, _ShiftedMatmulConv

LAYERS = [  # (stock, narrow, input shape): odd/even kernels, "same", explicit and zero padding, bias or not
    (torch.nn.ConvTranspose2d, NarrowConvTranspose2d, dict(in_channels=64, out_channels=1, kernel_size=5,
                                                           padding=2, bias=False), (6, 64, 12, 12)),
    (torch.nn.ConvTranspose2d, NarrowConvTranspose2d, dict(in_channels=16, out_channels=3, kernel_size=(3, 4),
                                                           padding=(1, 2)), (4, 16, 9, 11)),
    (torch.nn.Conv2d, NarrowConv2d, dict(in_channels=32, out_channels=1, kernel_size=3, padding="same"), (4, 32, 10, 10)),
    (torch.nn.Conv2d, NarrowConv2d, dict(in_channels=32, out_channels=3, kernel_size=4, padding="same"), (4, 32, 9, 11)),
    (torch.nn.Conv2d, NarrowConv2d, dict(in_channels=16, out_channels=2, kernel_size=(3, 5), padding=(0, 1)),
     (4, 16, 9, 11)),
]


def run_layer(layer, x, grad, bf16):
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = layer(x)
    y.float().backward(grad)
    return y.float(), x.grad, layer.weight.grad, None if layer.bias is None else layer.bias.grad


def relative(a, b):
    return float(((a.float() - b.float()).norm() / b.float().norm()).detach())


@pytest.mark.parametrize("stock_cls, narrow_cls, kwargs, shape", LAYERS)
def test_narrow_layers_match_torch_in_bf16_channels_last(stock_cls, narrow_cls, kwargs, shape, monkeypatch):
    torch.manual_seed(0)
    stock, narrow = stock_cls(**kwargs), narrow_cls(**kwargs)
    narrow.load_state_dict(stock.state_dict())  # same parameters, same state_dict keys
    calls, original_apply = [], _ShiftedMatmulConv.apply

    def counted_apply(*args):
        calls.append(args)
        return original_apply(*args)

    monkeypatch.setattr(_ShiftedMatmulConv, "apply", counted_apply)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(stock(x).shape)
    ours, theirs = run_layer(narrow, x, grad, bf16=True), run_layer(stock, x, grad, bf16=True)
    assert calls, "the bf16 channels_last input should take the matmul path"
    assert ours[0].shape == theirs[0].shape
    for mine, reference in zip(ours, theirs):
        if reference is not None:
            assert relative(mine, reference) < 1e-2  # bf16 rounding: both ~4e-3


@pytest.mark.parametrize("stock_cls, narrow_cls, kwargs, shape", LAYERS)
def test_fp32_and_nchw_inputs_use_torchs_kernel(stock_cls, narrow_cls, kwargs, shape):
    torch.manual_seed(0)
    stock, narrow = stock_cls(**kwargs), narrow_cls(**kwargs)
    narrow.load_state_dict(stock.state_dict())
    for x, bf16 in ((torch.randn(shape).contiguous(memory_format=torch.channels_last), False),
                    (torch.randn(shape), True)):
        grad = torch.randn(stock(x).shape)
        for mine, reference in zip(run_layer(narrow, x, grad, bf16), run_layer(stock, x, grad, bf16)):
            if reference is not None:
                assert torch.equal(mine, reference)  # the very same kernel
        stock.zero_grad()
        narrow.zero_grad()


def test_seed_and_conv_models_use_the_narrow_output_layer():
    for name in ("seed", "conv"):
        model = create_model(name, (1, 28, 28), 8)
        assert isinstance(list(model.decoder.children())[-2], (NarrowConv2d, NarrowConvTranspose2d))
