import pytest
import torch

from aeopt import AeoptError, create_model, list_models
from aeopt.models import model_knobs


def test_registry_lists_the_built_in_models():
    assert {"mlp", "conv", "seed"} <= set(list_models())
    assert list_models("co*") == ["codec", "conv"]


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(AeoptError, match="unknown model 'convv'; known models: .*conv"):
        create_model("convv", (1, 8, 8), 4)


def test_unknown_knob_lists_the_models_settings():
    with pytest.raises(AeoptError, match="has no setting hidden; its settings: width"):
        create_model("conv", (1, 8, 8), 4, hidden="8")


def test_seed_model_builds_for_28x28x1_and_keeps_the_shape():
    model = create_model("seed", (1, 28, 28), 32)
    out = model(torch.rand(3, 1, 28, 28))
    assert out["x_hat"].shape == (3, 1, 28, 28)
    assert out["z"].shape == (3, 32)
    assert 0 <= float(out["x_hat"].min()) and float(out["x_hat"].max()) <= 1
    assert 0 <= float(out["z"].min()) and float(out["z"].max()) <= 1  # the article's sigmoid code
    # The article's layers: 1.52M trainable parameters, ~0.5 GFLOP per training sample.
    assert model.num_params() == 1_521_856
    assert 0.45e9 < model.train_flops_per_sample() < 0.55e9


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 17, 23), (1, 5, 9)])
@pytest.mark.parametrize("name", ["conv", "seed", "mlp"])
def test_every_image_model_returns_the_input_shape(name, shape):
    model = create_model(name, shape, 6)
    out = model(torch.rand(2, *shape))
    assert out["x_hat"].shape == (2, *shape)
    assert out["logits"].shape == (2, *shape)
    assert torch.allclose(model.decode(model.encode(torch.ones(2, *shape))).detach(),
                          model(torch.ones(2, *shape))["x_hat"].detach())


def test_conv_knobs_change_the_model():
    small = create_model("conv", (1, 28, 28), 8, width=8)
    big = create_model("conv", (1, 28, 28), 8, width=32)
    assert small.num_params() < big.num_params()
    up = create_model("conv", (1, 28, 28), 8, decoder="upsample", norm="group", activation="gelu", kernel_size=4)
    assert up(torch.rand(2, 1, 28, 28))["x_hat"].shape == (2, 1, 28, 28)
    assert set(model_knobs("conv")) == {"width", "depth", "blocks", "kernel_size", "norm", "activation", "decoder"}
    plain, refined = (create_model("conv", (1, 28, 28), 8, blocks=b) for b in (0, 1))
    assert plain.num_params() == create_model("conv", (1, 28, 28), 8).num_params()  # default: no blocks
    # One residual 3x3 conv + batch norm per stage: encoder stages of 32, 64 channels, decoder 32, 32.
    assert refined.num_params() - plain.num_params() == sum(c * c * 9 + 2 * c for c in (32, 64, 32, 32))
    assert refined(torch.rand(2, 1, 28, 28))["x_hat"].shape == (2, 1, 28, 28)
    with pytest.raises(AeoptError, match="blocks"):
        create_model("conv", (1, 28, 28), 8, blocks=-1)


def test_mlp_on_tables_has_linear_output():
    model = create_model("mlp", (10,), 3, output="linear", hidden="16,8", norm="layer", dropout=0.1)
    model.eval()
    out = model(torch.randn(4, 10))
    assert out["x_hat"].shape == (4, 10)
    assert torch.equal(out["x_hat"], out["logits"])  # standardized tables: no squashing into [0, 1]


@pytest.mark.parametrize("bad", [dict(latent_dim=0), dict(width=0), dict(norm="weird"), dict(activation="swishy")])
def test_bad_model_settings_raise(bad):
    kwargs = {"latent_dim": 4, **bad}
    with pytest.raises(AeoptError):
        create_model("conv", (1, 8, 8), **kwargs)


def test_conv_refuses_tables():
    with pytest.raises(AeoptError, match="use --model mlp"):
        create_model("conv", (10,), 4)
