"""--blocks / --decoder-blocks: residual units in g_a / g_s. Each starts as the identity, so `--init`
from a run trained without them starts from exactly that run's codec (the keys of the layers it had
are unchanged); a run with them reloads with them and decodes bit-exactly; bad counts are refused."""
import numpy as np
import pytest
import torch
import yaml

from aeopt.cli import main
from aeopt.codec import api, compress, decompress, load_codec
from aeopt.data import load_data
from aeopt.errors import AeoptError
from aeopt.models.codec import codec
from aeopt.runs import warm_start

TRAIN = ["train", "--data", "digits", "--model", "codec", "--entropy", "channelwise", "--latent-grid", "mean",
         "--lmbda", "0.05", "--latent-dim", "8", "--width", "8", "--epochs", "1", "--limit", "256", "--threads", "1",
         "--quiet"]


def test_residual_units_keep_the_other_layers_names_and_add_compute_where_asked():
    plain = codec((1, 16, 16), 8, "sigmoid", entropy="channelwise", lmbda=0.05, width=8, latent_grid="mean")
    grown = codec((1, 16, 16), 8, "sigmoid", entropy="channelwise", lmbda=0.05, width=8, latent_grid="mean",
                  blocks=2, decoder_blocks=1)
    old, new = set(plain.state_dict()), set(grown.state_dict())
    assert old < new
    added = sorted({k.split(".body")[0] for k in new - old})
    assert added == ["decoder.1r0", "encoder.1r0", "encoder.1r1"]
    encoder_only = codec((1, 16, 16), 8, "sigmoid", entropy="channelwise", lmbda=0.05, width=8, latent_grid="mean",
                         blocks=1)
    assert not any(k.startswith("decoder.") and "r0" in k for k in encoder_only.state_dict())


def test_a_grown_model_warm_starts_as_the_run_it_grew_from_and_decodes_bit_exactly(tmp_path):
    base, grown = tmp_path / "base", tmp_path / "grown"
    assert main(TRAIN + ["--out", str(base)]) == 0
    base_run = load_codec(base)
    model = codec((1, 8, 8), 8, "sigmoid", entropy="channelwise", lmbda=0.05, width=8, latent_grid="mean",
                  blocks=1, decoder_blocks=2)
    warm_start(model, base, model_name="codec")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.eval()(x)["x_hat"], base_run.model.eval()(x)["x_hat"])

    assert main(TRAIN + ["--blocks", "1", "--decoder-blocks", "2", "--init", str(base), "--lr", "1e-3",
                         "--out", str(grown)]) == 0
    config = yaml.safe_load((grown / "config.yaml").read_text())
    assert (config["blocks"], config["decoder_blocks"]) == (1, 2)
    run = load_codec(grown)
    assert (run.model.blocks, run.model.decoder_blocks) == (1, 2)
    trained = run.model.decoder.get_submodule("1r1").body[-1].weight
    assert trained.abs().sum() > 0  # the units learned: they are no longer the identity
    images = (load_data("digits", seed=0).x_test[:30] * 255).round().byte().numpy()
    y, z = api.encode_latents(run, torch.from_numpy(images).float() / 255)
    y_hat, _ = run.coder.quantize(y, z)
    assert np.array_equal(decompress(run, compress(run, images)), api._synthesise(run, y_hat, images.shape[-2:]))
    # the other way round does not fit: a run with units cannot start a model without them
    with pytest.raises(AeoptError, match=r"decoder\.1r0\.body\.0\.bias is not in it"):
        warm_start(codec((1, 8, 8), 8, "sigmoid", entropy="channelwise", lmbda=0.05, width=8, latent_grid="mean"),
                   grown, model_name="codec")


@pytest.mark.parametrize("flag", ["--blocks", "--decoder-blocks"])
def test_a_negative_count_of_units_is_one_clear_line(flag, tmp_path, capsys):
    assert main(TRAIN + [flag, "-1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert flag in err and ">= 0" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
