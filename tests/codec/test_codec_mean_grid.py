"""The mean grid (--latent-grid mean): y_hat = mu_q + round(y - mu_q), mu_q h_s's mean on a 1/8 grid.
Its files must decode to exactly the encoder's y_hat (computed from the integer h_s on both sides),
its tables are the scale-only ones, refine searches on it, and bad settings are refused in one line."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import aeopt
from aeopt.codec import compress, decompress, decompress_images, load_codec
from aeopt.codec import api
from aeopt.codec.coder import start_decoder
from aeopt.codec.tables import MEAN_PHASES, TABLES_FILE, load_tables
from aeopt.data import load_data
from aeopt.errors import AeoptError
from aeopt.models.codec import codec
from aeopt.models.codec.entropy import scale_table
from aeopt.runs import load_tensors, save_tensors


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory):
    """The conftest recipe (digits, 5 epochs) on the mean grid, for both models with means (~7 s each)."""
    root = tmp_path_factory.mktemp("grid")
    for entropy in ("meanscale", "channelwise"):
        aeopt.train(data="digits", model="codec", entropy=entropy, latent_grid="mean", lmbda=0.05, latent_dim=8,
                    width=16, epochs=5, batch_size=16, lr=1e-2, threads=1, out=str(root / entropy), progress=False,
                    log=lambda message: None)
    return {e: root / e for e in ("meanscale", "channelwise")}


def _digits(n):
    return (load_data("digits", seed=0).x_test[:n] * 255).round().byte().numpy()


@pytest.mark.parametrize("entropy", ["meanscale", "channelwise"])
def test_files_decode_to_the_encoders_latents_on_the_mean_grid(grid_runs, entropy):
    """The decoder recomputes every element's bin centre from what it has decoded (z, then the
    earlier slices) and must land on the encoder's y_hat exactly; y_hat - centre is an integer and
    the centres are the (j + 1/2) / 8 grid."""
    run = load_codec(grid_runs[entropy])
    images = _digits(60)
    y, z = api.encode_latents(run, torch.from_numpy(images).float() / 255)
    assert y.dtype == np.float64 and not np.array_equal(y, np.rint(y))  # unrounded: the coder rounds it
    y_hat, rows = run.coder.quantize(y, z)
    centres = rows.offset
    assert np.array_equal((centres * MEAN_PHASES - 0.5), np.rint(centres * MEAN_PHASES - 0.5))
    assert np.array_equal(y_hat - centres, np.rint(y_hat - centres))
    assert np.abs(y_hat - y).max() <= 0.5 + 1e-9
    assert np.unique(np.mod(centres, 1)).size > 1  # the means differ: the grid really moves
    data = compress(run, images)
    sizes, slices = run.unpack(data, "test")
    decoded_y, decoded_z = run.coder.decode_latents([start_decoder(slices[0][2])], 60,
                                                    *api.latent_shapes(run, *sizes[0]))
    assert np.array_equal(decoded_y, y_hat) and np.array_equal(decoded_z, z)
    expected = api._synthesise(run, y_hat, images.shape[-2:])
    assert np.array_equal(decompress(run, data), expected)


def test_the_float_model_predicts_the_mean_scale_decode(grid_runs):
    """reconstruct_quantized (the float h_s's centres) is what the file decodes to, pixel for pixel
    almost everywhere: fixed-point rounding moves a mean across a bin rarely."""
    run = load_codec(grid_runs["meanscale"])
    images = _digits(100)
    expected = torch.round(run.model.reconstruct_quantized(torch.from_numpy(images).float() / 255) * 255)
    assert np.mean(decompress(run, compress(run, images)) == expected.to(torch.uint8).numpy()) > 0.99


def test_two_workers_decode_what_one_does(grid_runs):
    run = load_codec(grid_runs["channelwise"])
    data = compress(run, _digits(80), workers=2)
    one, two = decompress_images(run, data, workers=1), decompress_images(run, data, workers=2)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


def test_mean_grid_tables_are_the_scale_only_rows(grid_runs):
    """The coded residual is centred on zero: one row per scale (64), not one per (scale, phase)."""
    run = load_codec(grid_runs["meanscale"])
    assert run.tables.hyper.grid and run.tables.hyper.phases == MEAN_PHASES
    assert len(run.tables.y.low) == len(scale_table())
    tensors = load_tensors(grid_runs["meanscale"] / TABLES_FILE)
    assert int(tensors["hs.grid"][0]) == 1


def test_tables_that_lost_the_grid_flag_are_refused(grid_runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(grid_runs["meanscale"], run_dir)
    tensors = load_tensors(run_dir / TABLES_FILE)
    del tensors["hs.grid"]
    save_tensors(run_dir / TABLES_FILE, tensors)
    with pytest.raises(AeoptError, match="does not match"):
        load_tables(run_dir, load_codec(grid_runs["meanscale"]).model)


@pytest.mark.parametrize("entropy", ["meanscale", "channelwise"])
def test_refined_files_on_the_mean_grid_decode_exactly_and_cost_less(grid_runs, entropy):
    """refine searches z and y's residual around the centres z gives: the file decodes to g_s of the
    coder's y_hat, and costs less in R + lambda * D than plain rounding (on the real file)."""
    from aeopt.codec.evaluate import quality

    run = load_codec(grid_runs[entropy])
    images = _digits(60)

    def real_loss(data):
        mse = quality(list(images), list(decompress(run, data)))["mse"]
        return 8 * len(data) / images[..., 0, :, :].size + run.model.lmbda * 255 ** 2 * mse

    plain, refined = compress(run, images), compress(run, images, refine=40)
    assert refined != plain and compress(run, images, refine=40) == refined
    _, parts = api.latents(run, images, refine=40)
    expected = np.concatenate([api._synthesise(run, part.y, part.size) for part in parts])
    assert np.array_equal(decompress(run, refined), expected)
    assert real_loss(refined) < 0.97 * real_loss(plain)


def test_training_quantizes_around_the_means():
    """In eval the model's own y_hat sits on the mean grid (what its loss and metrics see), and in
    training the straight-through round leaves g_a's gradient as round()'s identity."""
    torch.manual_seed(0)
    model = codec((1, 8, 8), 8, "sigmoid", entropy="meanscale", lmbda=0.05, width=8, latent_grid="mean").eval()
    x = torch.from_numpy(_digits(16)).float() / 255
    with torch.no_grad():
        y = model.analyse(x)
        y_hat, params = model.quantize_latents(y, torch.round(model.hyper_analyse(y)), "round")
    centres = params[:, 8:]
    assert torch.equal(centres * MEAN_PHASES - 0.5, torch.round(centres * MEAN_PHASES - 0.5))
    assert torch.equal(y_hat - centres, torch.round(y_hat - centres))
    assert not torch.equal(y_hat, torch.round(y))  # not the integer grid
    y = y.detach().requires_grad_()
    model.quantize_latents(y, torch.round(model.hyper_analyse(y.detach())), "ste")[0].sum().backward()
    assert torch.equal(y.grad, torch.ones_like(y))


@pytest.mark.parametrize("entropy", ["hyperprior", "factorized"])
@pytest.mark.parametrize("knob, flag", [({"latent_grid": "mean"}, "--latent-grid mean"),
                                        ({"hyper_input": "signed"}, "--hyper-input signed")])
def test_the_knobs_that_follow_the_means_need_means(entropy, knob, flag):
    """The mean grid and a signed h_a (test_codec_hyper_input.py) only mean something where h_s predicts means."""
    with pytest.raises(AeoptError, match=f"^{flag} .*: it needs --entropy meanscale or channelwise, not {entropy}$"):
        codec((1, 8, 8), 8, "sigmoid", entropy=entropy, lmbda=0.05, **knob)


@pytest.mark.parametrize("knob, message", [({"latent_grid": "half"}, "unknown latent grid 'half'; known: integer, mean"),
                                           ({"hyper_input": "square"},
                                            "unknown hyperprior input 'square'; known: abs, signed")])
def test_unknown_knob_values_are_refused(knob, message):
    with pytest.raises(AeoptError, match=message):
        codec((1, 8, 8), 8, "sigmoid", entropy="meanscale", lmbda=0.05, **knob)


def test_the_cli_takes_the_latent_grid(tmp_path):
    """--latent-grid reaches the model through the settings and is kept in the run's config."""
    import yaml

    from aeopt.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "codec", "--entropy", "meanscale", "--latent-grid", "mean",
                 "--lmbda", "0.05", "--latent-dim", "8", "--width", "8", "--epochs", "1", "--limit", "64",
                 "--threads", "1", "--out", str(out), "--quiet"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["latent_grid"] == "mean"
    assert load_codec(out).model.on_mean_grid


def test_tables_are_stored_as_ragged_rows_and_old_padded_files_still_load(grid_runs, tmp_path):
    """tables.safetensors holds each row's counts end to end in int32 (the padded int64 rectangle was
    87% zeros); loading rebuilds the same tables and fingerprint, and a file in the old padded form
    loads to the same fingerprint, so .aec files coded before still decode."""

    from aeopt.codec.tables import Table, build_tables

    run = load_codec(grid_runs["meanscale"])
    built = build_tables(run.model)
    stored = load_tensors(Path(grid_runs["meanscale"]) / TABLES_FILE)
    assert "y.counts" not in stored and stored["y.rows"].dtype == torch.int32
    assert len(stored["y.rows"]) == int((built.y.n + 1).sum()) < built.y.counts.size / 3
    assert run.tables.fingerprint == built.fingerprint
    np.testing.assert_array_equal(run.tables.y.counts, built.y.counts)

    old_dir = tmp_path / "old"
    shutil.copytree(grid_runs["meanscale"], old_dir)
    padded = {k: v for k, v in stored.items() if not k.startswith(("y.", "z."))}
    padded.update(built.y.tensors("y"))
    padded.update(built.z.tensors("z"))
    save_tensors(old_dir / TABLES_FILE, padded)
    assert load_tables(old_dir, run.model).fingerprint == built.fingerprint

    bad = dict(stored)
    bad["y.rows"] = stored["y.rows"][:-1]
    with pytest.raises(AeoptError, match="rows do not match its sizes"):
        Table.from_tensors(bad, "y")
    bad = dict(stored, **{"y.width": torch.tensor([10**12])})
    with pytest.raises(AeoptError, match="rows do not match its sizes"):
        Table.from_tensors(bad, "y")
