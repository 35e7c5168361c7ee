"""The codec's speed paths compute what the plain ones do: sub-pixel synthesis, channels-last
inference, the radix-sorted table groups, a narrow hyperprior (--hyper-width)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import aeopt
from aeopt.codec import compress, decompress, load_codec
from aeopt.codec.api import latent_shapes
from aeopt.codec.coder import _groups
from aeopt.errors import AeoptError
from aeopt.models.codec import codec
from aeopt.models.codec.transforms import NARROW_OUT_CHANNELS, UpConv, sub_pixel_weight


@pytest.mark.parametrize("cin,cout,h,w", [(16, 32, 7, 7), (32, 1, 14, 14), (5, 3, 4, 9), (2, 2, 1, 1)])
def test_upconv_outside_training_equals_the_transposed_conv(cin, cout, h, w):
    torch.manual_seed(cin + h)
    layer = UpConv(cin, cout)
    plain = nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)
    plain.load_state_dict(layer.state_dict())  # same parameters, same names: checkpoints unchanged
    x = torch.randn(3, cin, h, w)
    with torch.no_grad():
        fast = layer.eval()(x)
        reference = plain(x)
    assert fast.shape == reference.shape == (3, cout, 2 * h, 2 * w)
    assert torch.allclose(fast, reference, atol=1e-5)
    with torch.no_grad():
        trained = layer.train()(x)
    if cout > NARROW_OUT_CHANNELS:
        assert torch.equal(trained, plain(x))  # training keeps the transposed conv for a wide layer
    else:  # a narrow last layer trains in its sub-pixel form on a CPU (gradients: the test below)
        assert torch.allclose(trained, plain(x), atol=1e-5)


def test_narrow_up_conv_trains_as_its_sub_pixel_form_with_the_same_gradients():
    torch.manual_seed(0)
    layer = UpConv(8, 3)
    x = torch.randn(2, 8, 6, 5, requires_grad=True)
    y = layer(x)  # training mode, CPU, fp32: the sub-pixel path
    y.square().sum().backward()
    reference_x, reference_w = x.detach().clone().requires_grad_(), layer.weight.detach().clone().requires_grad_()
    expected = F.conv_transpose2d(reference_x, reference_w, layer.bias.detach(), stride=2, padding=2, output_padding=1)
    expected.square().sum().backward()
    assert y.shape == (2, 3, 12, 10)
    assert torch.allclose(y, expected, atol=1e-5)
    assert torch.allclose(layer.weight.grad, reference_w.grad, rtol=1e-4, atol=1e-4)
    assert torch.allclose(x.grad, reference_x.grad, rtol=1e-4, atol=1e-4)


def test_sub_pixel_weight_places_each_tap_in_its_phase():
    weight = torch.zeros(1, 1, 5, 5)
    weight[0, 0, 3, 0] = 1.0  # tap (3, 0): output row phase 1 (input offset 0), column phase 0 (offset +1)
    w = sub_pixel_weight(weight)
    assert w.shape == (4, 1, 3, 3)
    nonzero = torch.nonzero(w)
    assert nonzero.tolist() == [[2 * 1 + 0, 0, 1, 2]]


def test_groups_sorts_any_integer_rows_the_same_way():
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 64, size=(3, 4, 5, 6))
    wide, narrow = _groups(rows), _groups(rows.astype(np.int16))
    assert [r for r, _ in wide] == [r for r, _ in narrow] == sorted(set(rows.ravel().tolist()))
    for (_, a), (_, b) in zip(wide, narrow):
        assert np.array_equal(a, b) and np.all(np.diff(a) > 0)  # C order within a row
    flat = rows.ravel()
    assert all(np.all(flat[members] == row) for row, members in wide)


def test_hyper_width_sets_the_channels_of_z_and_is_checked():
    model = codec((1, 28, 28), 16, "sigmoid", entropy="hyperprior", lmbda=0.01, width=32, hyper_width=8)
    assert model.hyper_width == 8 and model.z_density.channels == 8
    assert model.hyper_decoder[0].in_channels == 8 and model.hyper_decoder[-1].out_channels == 16
    assert codec((1, 28, 28), 16, "sigmoid", entropy="hyperprior", lmbda=0.01, width=32).hyper_width == 32
    with pytest.raises(AeoptError, match="--hyper-width"):
        codec((1, 28, 28), 16, "sigmoid", entropy="hyperprior", lmbda=0.01, width=32, hyper_width=0)


def test_a_narrow_hyperprior_run_round_trips_and_decodes_c_ordered_arrays(tmp_path):
    aeopt.train(data="digits", model="codec", entropy="hyperprior", lmbda=0.05, latent_dim=8, width=16,
                hyper_width=4, epochs=2, batch_size=16, lr=1e-2, threads=1, out=str(tmp_path / "run"),
                progress=False, log=lambda message: None)
    run = load_codec(tmp_path / "run")
    assert latent_shapes(run, 8, 8)[1] == (4, 1, 1)
    images = (load_data_digits()[:20] * 255).round().byte().numpy()
    decoded = decompress(run, compress(run, images))
    x = torch.from_numpy(images).float() / 255
    expected = torch.round(run.model.reconstruct_quantized(x) * 255).to(torch.uint8).numpy()
    assert np.array_equal(decoded, expected)
    assert decoded.flags["C_CONTIGUOUS"]


def load_data_digits():
    return aeopt.load_data("digits", seed=0).x_test
