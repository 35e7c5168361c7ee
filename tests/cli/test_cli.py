import json

import numpy as np
import pytest
import yaml
from PIL import Image

from aeopt.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One small run trained through the CLI from a YAML config, with a flag overriding the file."""
    tmp = tmp_path_factory.mktemp("cli")
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({"latent-dim": 6, "epochs": 50, "batch_size": 64, "width": 8,
                                      "precision": "fp32"}))
    out = tmp / "run"
    assert main(["train", "--config", str(config), "--epochs", "3", "--quiet", "--out", str(out)]) == 0
    return out


def test_config_file_and_flag_override(run_dir):
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["latent_dim"] == 6 and saved["width"] == 8  # from the file
    assert saved["epochs"] == 3  # the flag wins over the file's 50
    assert len((run_dir / "history.csv").read_text().strip().splitlines()) == 1 + 3


def test_evaluate_prints_json_matching_the_run(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["mse"] == pytest.approx(saved["test"]["mse"], rel=1e-6)
    assert metrics["pca"]["components"] == 6


def test_evaluate_table_output(run_dir, capsys):
    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "autoencoder" in out and "PCA-6" in out and "class 9" in out


def test_reconstruct_png_and_npy(run_dir, tmp_path, capsys):
    image = tmp_path / "digit.png"
    Image.fromarray((np.eye(8) * 255).astype(np.uint8)).save(image)
    assert main(["reconstruct", str(run_dir), str(image), str(tmp_path / "out.png")]) == 0
    assert Image.open(tmp_path / "out.png").size == (8, 8)
    batch = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "batch.npy", batch)
    assert main(["reconstruct", str(run_dir), str(tmp_path / "batch.npy"), str(tmp_path / "out.npy")]) == 0
    x_hat = np.load(tmp_path / "out.npy", allow_pickle=False)
    assert x_hat.shape == (5, 1, 8, 8) and 0 <= x_hat.min() and x_hat.max() <= 1
    np.save(tmp_path / "wrong.npy", np.zeros((2, 1, 9, 9), np.float32))
    assert main(["reconstruct", str(run_dir), str(tmp_path / "wrong.npy"), str(tmp_path / "o.npy")]) == 2
    assert "model expects (1, 8, 8)" in capsys.readouterr().err
    assert not (tmp_path / "o.npy").exists()


def test_resume_cli_extends_training(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = json.loads((copy / "metrics.json").read_text())
    assert main(["train", "--resume", str(copy), "--epochs", "4", "--quiet"]) == 0
    after = json.loads((copy / "metrics.json").read_text())
    assert after["epochs"] == 4 and before["epochs"] == 3
    assert before["steps"] % 3 == 0 and after["steps"] == before["steps"] // 3 * 4  # counting on, not anew
    assert main(["train", "--resume", str(copy), "--lr", "0.1", "--quiet"]) == 2
    assert "only --epochs, --threads, --max-minutes may change" in capsys.readouterr().err


def test_table_data_trains_with_mse_and_saves_the_scaler(tmp_path, capsys):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(300, 6)) * [1, 10, 100, 1, 1, 1] + [0, 5, 50, 0, 0, 0]
    np.savetxt(tmp_path / "t.csv", table, delimiter=",", header="a,b,c,d,e,f", comments="")
    out = tmp_path / "run"
    assert main(["train", "--data", f"csv:{tmp_path / 't.csv'}", "--model", "mlp", "--latent-dim", "3",
                 "--epochs", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "loss auto -> data are not in [0, 1]" in printed
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data_info"]["scaler"]["mean"][2] == pytest.approx(table[:, 2].mean(), abs=15)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["loss"] == "mse" and metrics["test"]["ssim"] is None


def test_models_lists_names_and_knobs(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "seed" in out and "shape bugs fixed" in out and "kernel_size" in out


def test_evaluate_other_table_data_uses_the_runs_scaler(tmp_path, capsys):
    rng = np.random.default_rng(1)
    table = rng.normal(size=(200, 4)) * [1, 10, 100, 1] + [0, 5, 50, 0]
    np.save(tmp_path / "a.npy", table)
    np.save(tmp_path / "b.npy", table * 3 + 7)  # same columns, very different statistics
    out = tmp_path / "run"
    assert main(["train", "--data", f"npy:{tmp_path / 'a.npy'}", "--model", "mlp", "--latent-dim", "2",
                 "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", f"npy:{tmp_path / 'b.npy'}", "--json"]) == 0
    shifted = json.loads(capsys.readouterr().out)
    own = json.loads((out / "metrics.json").read_text())
    # In the run's scale the shifted data are far from anything seen in training: much larger error.
    assert shifted["test"]["mse"] > 5 * own["test"]["mse"]
