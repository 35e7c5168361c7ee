"""The autoencoder variants, trained from the CLI on the built-in digits (small MLPs, few epochs)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from aeopt.cli import main
from aeopt.models.noise import Noise, parse_noise
from aeopt.deploy.sample import sample_run
from aeopt.models.objectives import jacobian_sq_norm

SMALL = ["--data", "digits", "--quiet", "--hidden", "64", "--latent-dim", "8", "--threads", "1"]


def train_cli(tmp_path, name: str, *flags: str, epochs: int = 3) -> dict:
    out = tmp_path / name
    assert main(["train", *SMALL, "--epochs", str(epochs), "--out", str(out), *flags]) == 0
    return json.loads((out / "metrics.json").read_text())


def assert_common(metrics: dict) -> None:
    assert math.isfinite(metrics["test"]["mse"])
    assert 0.0 <= metrics["probe"]["linear_acc"] <= 1.0 and 0.0 <= metrics["probe"]["knn_acc"] <= 1.0
    assert metrics["probe"]["linear_acc"] > 0.3  # 10 classes: well above chance even after 3 epochs
    assert 0.5 < metrics["pca_probe"]["linear_acc"] <= 1.0


def test_vae_trains_reports_elbo_and_samples(tmp_path):
    metrics = train_cli(tmp_path, "vae", "--model", "vae", "--backbone", "mlp", "--beta", "1.0", "--kl-warmup", "1")
    assert_common(metrics)
    test = metrics["test"]
    assert test["elbo"] < 0 and math.isclose(test["elbo"], -(test["recon_nll"] + test["kl"]), rel_tol=1e-6)
    assert test["kl"] > 0
    history = (tmp_path / "vae" / "history.csv").read_text().splitlines()
    assert "train_kl" in history[0] and "train_recon" in history[0]
    x = sample_run(tmp_path / "vae", 10)
    assert x.shape == (10, 1, 8, 8) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert float(x.std()) > 0  # not one constant image
    assert main(["sample", str(tmp_path / "vae"), "--n", "16", "--out", str(tmp_path / "grid.png")]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "grid.png").size == (4 * 9 - 1, 4 * 9 - 1)  # 4x4 grid of 8x8, 1-pixel gaps


def test_vq_vae_uses_many_codes(tmp_path):
    metrics = train_cli(tmp_path, "vq", "--model", "vq_vae", "--backbone", "mlp", "--codebook-size", "32",
                        "--code-dim", "2", "--batch-size", "32", epochs=4)  # the EMA codebook needs ~50 steps
    assert_common(metrics)
    assert metrics["codebook_used"] > 1 and 1.0 < metrics["codebook_perplexity"] <= 32
    assert metrics["code_bits"] == 4 * 5  # 8 / 2 codes of log2(32) bits


def test_aae_trains_its_discriminator(tmp_path):
    metrics = train_cli(tmp_path, "aae", "--model", "aae", "--backbone", "mlp")
    assert_common(metrics)
    header, *rows = (tmp_path / "aae" / "history.csv").read_text().splitlines()
    column = header.split(",").index("train_discriminator")
    assert all(0 < float(row.split(",")[column]) < 2 * math.log(2) * 1.5 for row in rows)
    assert sample_run(tmp_path / "aae", 4).shape == (4, 1, 8, 8)


def test_denoising_output_beats_noisy_input(tmp_path):
    metrics = train_cli(tmp_path, "dae", "--model", "mlp", "--noise", "gaussian:0.5", epochs=8)
    assert_common(metrics)
    d = metrics["denoise"]
    assert d["noise"] == "gaussian:0.5"
    assert d["psnr_out"] > d["psnr_noisy"] + 1.0


def test_sparse_kl_penalty_lowers_code_activation(tmp_path):
    weak = train_cli(tmp_path, "weak", "--model", "mlp", "--sparse-kl", "0.05:0.001")
    strong = train_cli(tmp_path, "strong", "--model", "mlp", "--sparse-kl", "0.05:1.0")
    assert strong["mean_code_activation"] < 0.7 * weak["mean_code_activation"]
    assert strong["near_zero_fraction"] > weak["near_zero_fraction"]


def test_contractive_run_and_jacobian_norm(tmp_path):
    metrics = train_cli(tmp_path, "cae", "--model", "mlp", "--contractive", "0.01", epochs=2)
    assert math.isfinite(metrics["test"]["mse"]) and metrics["loss"] == "bce+0.01*contractive"
    weight = torch.randn(5, 7)
    x = torch.randn(4, 7)
    exact = jacobian_sq_norm(lambda t: t @ weight.T, x, create_graph=False)
    assert math.isclose(float(exact), float(weight.square().sum()), rel_tol=1e-5)
    torch.manual_seed(0)
    estimate = jacobian_sq_norm(lambda t: t @ weight.T, x, projections=4000, create_graph=False)
    assert math.isclose(float(estimate), float(exact), rel_tol=0.1)


def test_noise_kinds():
    x = torch.full((1000,), 0.5)
    g = torch.Generator().manual_seed(0)
    masked = Noise("masking", 0.25)(x, g)
    assert abs(float((masked == 0).float().mean()) - 0.25) < 0.05
    salted = Noise("salt_pepper", 0.1)(x, g)
    assert abs(float((salted != 0.5).float().mean()) - 0.1) < 0.03 and set(salted.unique().tolist()) <= {0, 0.5, 1}
    assert float(Noise("gaussian", 3.0)(x, g).max()) <= 1.0  # clipped to the data's range
    assert parse_noise("masking:0.25") == Noise("masking", 0.25)


@pytest.mark.parametrize("flags", [["--noise", "blur:0.2"], ["--noise", "masking:1.5"], ["--sparse-kl", "0.05"],
                                   ["--sparse-kl", "2:0.1"], ["--kl-warmup", "3"], ["--model", "vq_vae",
                                   "--code-dim", "3"], ["--model", "conv", "--beta", "2"]])
def test_bad_variant_settings_exit_2(tmp_path, flags, capsys):
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(tmp_path / "bad"), *flags]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_sample_refuses_models_without_prior(tmp_path, capsys):
    train_cli(tmp_path, "plain", "--model", "mlp", epochs=1)
    assert main(["sample", str(tmp_path / "plain"), "--out", str(tmp_path / "s.png")]) == 2
    assert "no prior" in capsys.readouterr().err
