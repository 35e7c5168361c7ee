"""GDN / IGDN in blocks of pixels (kernels/blocked_gdn.py) against the plain formula, and when it applies."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import aeopt.kernels.blocked_gdn as blocked
from aeopt.kernels.blocked_gdn import blocked_gdn, use_blocked_gdn
from aeopt.models.codec.gdn import GDN


def plain_gdn(x, gamma, beta, inverse):
    c = x.shape[1]
    norm = torch.sqrt(F.conv2d(x.square(), gamma.view(c, c, 1, 1), beta))
    return x * norm if inverse else x / norm


def inputs(dtype, seed=0, shape=(2, 5, 7, 9)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype).contiguous(memory_format=torch.channels_last)
    gamma = torch.rand(shape[1], shape[1], generator=g, dtype=dtype) * 0.3
    beta = torch.rand(shape[1], generator=g, dtype=dtype) + 0.5
    return x.requires_grad_(), gamma.requires_grad_(), beta.requires_grad_()


@pytest.mark.parametrize("inverse", [False, True])
def test_gradients_match_finite_differences_across_block_edges(monkeypatch, inverse):
    monkeypatch.setattr(blocked, "BLOCK_BYTES", 16 * 5 * 8)  # 16 fp64 pixels of 5 channels a block
    monkeypatch.setattr(blocked, "MIN_BLOCK_ROWS", 1)  # 126 pixels: eight blocks, the last one short
    assert torch.autograd.gradcheck(lambda *t: blocked_gdn(*t, inverse), inputs(torch.float64))


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_forward_and_gradients_equal_the_plain_formula(monkeypatch, inverse, layout):
    monkeypatch.setattr(blocked, "BLOCK_BYTES", 100 * 8 * 4)  # 100 pixels a block
    x, gamma, beta = inputs(torch.float32, seed=1, shape=(3, 8, 11, 13))
    x = x.detach().contiguous(memory_format=layout).requires_grad_()
    grad = torch.randn(3, 8, 11, 13, generator=torch.Generator().manual_seed(2))
    results = []
    for fn in (blocked_gdn, plain_gdn):
        for t in (x, gamma, beta):
            t.grad = None
        y = fn(x, gamma, beta, inverse)
        y.backward(grad)
        results.append([y.detach().clone()] + [t.grad.clone() for t in (x, gamma, beta)])
    for ours, theirs in zip(*results):
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5), (ours - theirs).abs().max()


def test_applies_only_to_cpu_training_in_full_precision():
    x = torch.randn(1, 4, 3, 3, requires_grad=True)
    w = torch.ones(4, requires_grad=True)
    assert use_blocked_gdn(x, w)
    assert use_blocked_gdn(x.detach(), w)  # a parameter needs its gradient
    assert not use_blocked_gdn(x.detach(), w.detach())  # nothing to differentiate: plain formula
    with torch.no_grad():
        assert not use_blocked_gdn(x, w)  # inference keeps the plain formula: decoded pixels do not move
    assert not use_blocked_gdn(x.bfloat16(), w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not use_blocked_gdn(x, w)


@pytest.mark.parametrize("inverse", [False, True])
def test_the_layer_trains_the_same_on_either_path(monkeypatch, inverse):
    """The GDN module: one SGD step through the blocked path lands where the plain path does."""
    x = torch.randn(2, 6, 10, 10, generator=torch.Generator().manual_seed(3))
    layers = []
    for use in (True, False):
        monkeypatch.setattr("aeopt.models.codec.gdn.use_blocked_gdn", lambda *a, use=use: use)
        torch.manual_seed(0)
        layer = GDN(6, inverse=inverse)
        with torch.no_grad():
            layer.gamma_sqrt.add_(0.05)  # off the identity, so every channel mixes
        layer(x).square().sum().backward()
        with torch.no_grad():
            for p in layer.parameters():
                p -= 1e-3 * p.grad
        layers.append(layer)
    for a, b in zip(layers[0].parameters(), layers[1].parameters()):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.equal(layers[0].gamma_sqrt, torch.eye(6) * 0.1 ** 0.5 + 0.05)  # the step moved it


def test_compiling_or_tracing_takes_the_plain_formula(monkeypatch):
    """Dynamo must not trace the Python block loop (`aeopt train --compile` on a codec), nor may an
    export or a trace record it."""
    x, w = torch.randn(1, 4, 3, 3, requires_grad=True), torch.ones(4, requires_grad=True)
    assert use_blocked_gdn(x, w)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not use_blocked_gdn(x, w)
    monkeypatch.undo()
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    assert not use_blocked_gdn(x, w)


def test_a_compiled_layer_trains_as_the_eager_one():
    """torch.compile of a GDN layer with gradients: the same output and gradients as eager (blocked) GDN."""
    torch._dynamo.reset()
    x = torch.randn(2, 6, 12, 12, generator=torch.Generator().manual_seed(4))
    grads = []
    for compiled in (False, True):
        torch.manual_seed(0)
        layer = GDN(6)
        with torch.no_grad():
            layer.gamma_sqrt.add_(0.05)
        run = torch.compile(layer, backend="aot_eager") if compiled else layer
        y = run(x.contiguous(memory_format=torch.channels_last))
        y.square().sum().backward()
        grads.append([y.detach()] + [p.grad for p in layer.parameters()])
    for eager, comp in zip(*grads):
        assert torch.allclose(eager, comp, rtol=1e-5, atol=1e-6)


def test_an_empty_batch_gives_an_empty_result_and_zero_gradients():
    x, gamma, beta = inputs(torch.float32, shape=(0, 4, 3, 3))
    y = blocked_gdn(x, gamma, beta, False)
    y.sum().backward()
    assert y.shape == (0, 4, 3, 3)
    assert torch.equal(gamma.grad, torch.zeros(4, 4)) and torch.equal(beta.grad, torch.zeros(4))
