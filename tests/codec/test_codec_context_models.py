"""The hyperpriors with means (--entropy meanscale) and channel contexts (--entropy channelwise):
their tables, their integer means and contexts, their files."""
import copy

import numpy as np
import pytest
import torch

from aeopt.codec import compress, decompress, load_codec
from aeopt.codec.api import encode_latents
from aeopt.codec.intnet import A_BITS
from aeopt.codec.tables import MEAN_PHASES, TABLES_FILE, load_tables
from aeopt.data import load_data
from aeopt.errors import AeoptError
from aeopt.models.codec.entropy import GaussianConditional, scale_table
from aeopt.runs import load_tensors, save_tensors


def _digits(n):
    return (load_data("digits", seed=0).x_test[:n] * 255).round().byte().numpy()


def test_shifted_tables_are_gaussians_centred_at_each_phase():
    scales = scale_table()[[0, 20, 40]]
    low, pmf = GaussianConditional.shifted_pmf_table(scales, 4)
    assert pmf.shape[0] == 12
    symbols = low[:, None].double() + torch.arange(pmf.shape[1], dtype=torch.float64)[None, :]
    mean = (pmf * symbols).sum(1)
    phases = (torch.arange(4, dtype=torch.float64) + 0.5) / 4
    np.testing.assert_allclose(pmf.sum(1).numpy(), 1.0, atol=1e-8)  # all but the 1e-9 tails
    # for scales well above the unit box the discretized mean is the Gaussian's mean: the phase
    np.testing.assert_allclose(mean[4:].numpy(), phases.repeat(2).numpy(), atol=1e-6)
    assert (pmf[:4].argmax(1) + low[:4]).tolist() == [0, 0, 1, 1]  # the narrowest: the nearest integer


def test_integer_means_match_the_float_h_s(codec_runs):
    """The integer h_s's offset + phase is the float mean quantized to 1/MEAN_PHASES (up to the fixed
    point's rounding, which moves a mean across a phase boundary rarely and by one phase)."""
    run = load_codec(codec_runs["meanscale"])
    x = torch.from_numpy(_digits(100)).float() / 255
    y, z = encode_latents(run, x)
    rows, offsets = run.tables.hyper.indices(z, y.shape[-2:])
    assert offsets is not None and offsets.shape == y.shape
    with torch.no_grad():
        params = copy.deepcopy(run.model).double().hyper_params(torch.from_numpy(z).double(), torch.from_numpy(y).double()).numpy()
    mean = params[:, y.shape[1]:]
    integer_mean = offsets + (rows.astype(np.int64) % MEAN_PHASES + 0.5) / MEAN_PHASES
    error = np.abs(integer_mean - mean)
    assert error.max() <= 1 / MEAN_PHASES + 2 ** -A_BITS * 8
    assert np.mean(error <= 0.5 / MEAN_PHASES + 1e-3) > 0.99
    assert np.abs(mean).max() > 0.5  # the h_s predicts means worth having on this run


def test_the_coded_symbols_are_y_minus_the_mean_offsets(codec_runs):
    """Coding y - floor(mean) under the shifted tables: the file matches the model's own estimate of
    its bits (within the range coder's few bytes) and decodes to exactly the encoder's integers."""
    run = load_codec(codec_runs["meanscale"])
    images = _digits(120)
    data = compress(run, images)
    x = torch.from_numpy(images).float() / 255
    with torch.no_grad():
        y = torch.round(run.model.analyse(x))
        z = torch.round(run.model.hyper_analyse(run.model.analyse(x)))
        likelihoods = run.model.likelihoods(y, z, run.model.hyper_params(z, y))
    estimate_bytes = sum(-torch.log2(p).sum().item() for p in likelihoods.values()) / 8
    stream_bytes = len(data) - 40  # header, sizes and checksum: well under 40 bytes
    assert abs(stream_bytes - estimate_bytes) < 0.06 * estimate_bytes + 16
    expected = torch.round(run.model.reconstruct_quantized(x) * 255).to(torch.uint8).numpy()
    assert np.array_equal(decompress(run, data), expected)


def test_means_and_contexts_each_buy_bytes_on_the_same_recipe(codec_runs):
    """Same data, seed, size and schedule (conftest): the means buy bytes at about the same PSNR,
    the channel contexts more (one many-image file, where the per-file header does not hide it)."""
    import json

    test = {e: json.loads((codec_runs[e] / "metrics.json").read_text())["test"]
            for e in ("hyperprior", "meanscale", "channelwise")}
    sizes = [test[e]["batch_file"]["bytes_per_image"] for e in ("hyperprior", "meanscale", "channelwise")]
    assert sizes[0] > sizes[1] > sizes[2]
    assert min(t["psnr"] for t in test.values()) > test["hyperprior"]["psnr"] - 0.5


def test_tables_without_their_means_are_refused(codec_runs, tmp_path):
    """A mean-scale run whose tables lost the phases entry (or a scale-only run given them) is
    inconsistent: a clear error, not a garbled decode."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(codec_runs["meanscale"], run_dir)
    tensors = load_tensors(run_dir / TABLES_FILE)
    del tensors["hs.phases"]
    save_tensors(run_dir / TABLES_FILE, tensors)
    with pytest.raises(AeoptError, match="does not match"):
        load_tables(run_dir, load_codec(codec_runs["meanscale"]).model)


def test_the_decoder_recomputes_the_encoders_channel_rows_slice_by_slice(codec_runs):
    """The encoder computes every slice's rows from the whole y; the decoder only from the slices
    it has decoded so far. The two must agree exactly, and the contexts must matter."""
    from aeopt.codec import api

    run = load_codec(codec_runs["channelwise"])
    assert run.coder.slices == 4 and len(run.tables.contexts) == 3
    x = torch.from_numpy(_digits(60)).float() / 255
    y, z = encode_latents(run, x)
    rows = run.coder.rows(z, y.shape, y)
    data = compress(run, _digits(60))
    sizes, slices = run.unpack(data, "test")
    from aeopt.codec.coder import start_decoder

    decoded_y, decoded_z = run.coder.decode_latents([start_decoder(slices[0][2])], 60,
                                                    *api.latent_shapes(run, *sizes[0]))
    assert np.array_equal(decoded_y, y) and np.array_equal(decoded_z, z)
    without_context = run.tables.hyper.indices(z, y.shape[-2:])
    k = y.shape[1] // 4
    assert np.array_equal(rows.index[:, :k], without_context[0][:, :k])  # slice 0: the hyperprior alone
    assert (rows.index[:, k:] != without_context[0][:, k:]).mean() > 0.05  # later slices: corrected


def test_integer_channel_contexts_match_the_float_model(codec_runs):
    """The integer context nets give the float model's hyper_params up to fixed-point rounding:
    the same scale row almost everywhere, and means within a phase."""
    run = load_codec(codec_runs["channelwise"])
    x = torch.from_numpy(_digits(100)).float() / 255
    y, z = encode_latents(run, x)
    rows = run.coder.rows(z, y.shape, y)
    with torch.no_grad():
        params = copy.deepcopy(run.model).double().hyper_params(torch.from_numpy(z).double(),
                                                                torch.from_numpy(y).double()).numpy()
    m = y.shape[1]
    float_scale_rows = np.searchsorted(run.tables.hyper.thresholds / 2 ** A_BITS, params[:, :m], side="left")
    assert np.mean(rows.index // MEAN_PHASES == float_scale_rows) > 0.99
    integer_mean = rows.offset + (rows.index % MEAN_PHASES + 0.5) / MEAN_PHASES
    assert np.abs(integer_mean - params[:, m:]).max() <= 1 / MEAN_PHASES + 1e-2


def test_channelwise_needs_a_latent_divisible_into_its_slices():
    from aeopt.models import create_model

    with pytest.raises(AeoptError, match="multiple of 4"):
        create_model("codec", (1, 28, 28), 10, entropy="channelwise", lmbda=0.01, width=8)


def test_tables_missing_a_context_net_are_refused(codec_runs, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(codec_runs["channelwise"], run_dir)
    tensors = load_tensors(run_dir / TABLES_FILE)
    for key in [k for k in tensors if k.startswith("cc3.")]:
        del tensors[key]
    save_tensors(run_dir / TABLES_FILE, tensors)
    with pytest.raises(AeoptError, match="incomplete"):
        load_tables(run_dir, load_codec(codec_runs["channelwise"]).model)


@pytest.mark.parametrize("entropy", ["channelwise", "factorized"])
def test_straight_through_rate_trains_on_the_coded_rate(entropy):
    """rate_quantization="ste": in training the rate is the one of round(y) and round(z), the integers the
    coder codes, so the likelihoods equal eval mode's; with noise they do not."""
    from aeopt.models.codec import codec

    torch.manual_seed(0)
    model = codec((1, 8, 8), 8, "sigmoid", entropy=entropy, lmbda=0.05, width=8, rate_quantization="ste")
    x = torch.from_numpy(_digits(16)).float() / 255
    model.train()
    trained = model(x)["likelihoods"]
    model.eval()
    coded = model(x)["likelihoods"]
    for key in coded:
        torch.testing.assert_close(trained[key], coded[key])
    model.rate_quantization = "noise"
    model.train()
    noisy = model(x)["likelihoods"]
    assert not torch.allclose(noisy["y"], coded["y"])


def test_unknown_rate_quantization_is_refused():
    from aeopt.models.codec import codec

    with pytest.raises(AeoptError, match="unknown rate quantization 'soft'; known: noise, ste"):
        codec((1, 8, 8), 8, "sigmoid", entropy="hyperprior", lmbda=0.05, rate_quantization="soft")
