"""--hyper-input signed: h_a sees y itself, not |y| (the mean-scale models, as Minnen et al. 2018), so
h_s can predict the means' signs. It must reach the model through the settings, survive a reload
(a run trained with it decodes bit-exactly) and leave runs trained before it (no key in their
config: abs) as they were; test_codec_mean_grid.py checks it is refused where there are no means."""
import numpy as np
import torch
import yaml

from aeopt.cli import main
from aeopt.codec import api, compress, decompress, load_codec
from aeopt.data import load_data
from aeopt.models.codec import codec


def test_signed_h_a_sees_the_sign_and_abs_does_not():
    torch.manual_seed(0)
    y = torch.randn(2, 8, 4, 4)
    for hyper_input, same in (("abs", True), ("signed", False)):
        model = codec((1, 16, 16), 8, "sigmoid", entropy="meanscale", lmbda=0.05, width=8, latent_grid="mean",
                      hyper_input=hyper_input).eval()
        with torch.no_grad():
            assert torch.equal(model.hyper_analyse(y), model.hyper_analyse(-y)) is same


def test_a_signed_run_reloads_as_signed_and_its_files_decode_bit_exactly(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "codec", "--entropy", "channelwise", "--latent-grid", "mean",
                 "--hyper-input", "signed", "--lmbda", "0.05", "--latent-dim", "8", "--width", "8", "--epochs", "2",
                 "--limit", "256", "--threads", "1", "--out", str(out), "--quiet"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["hyper_input"] == "signed"
    run = load_codec(out)
    assert run.model.hyper_input == "signed"
    images = (load_data("digits", seed=0).x_test[:40] * 255).round().byte().numpy()
    y, z = api.encode_latents(run, torch.from_numpy(images).float() / 255)
    y_hat, _ = run.coder.quantize(y, z)
    assert np.array_equal(decompress(run, compress(run, images)), api._synthesise(run, y_hat, images.shape[-2:]))
    # a run's config without the key (trained before the choice existed) loads as abs
    config = yaml.safe_load((out / "config.yaml").read_text())
    del config["hyper_input"]
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    assert load_codec(out).model.hyper_input == "abs"
