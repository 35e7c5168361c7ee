"""`aeopt detect fit` / `aeopt detect score`: run directories, metrics, CSV, and bad input -> exit 2."""
import csv
import json

import numpy as np
import pytest

from aeopt.cli import main
from aeopt.detect.run import load_detector


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("detect") / "zeros"
    assert main(["detect", "fit", "--data", "digits", "--normal-class", "0", "--contamination", "0.05",
                 "--out", str(out), "--quiet"]) == 0
    return out


def test_fit_writes_a_run_with_metrics_and_report(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    d = metrics["detect"]
    assert set(d) == {"auroc", "average_precision", "threshold", "f1"}
    assert d["auroc"] > 0.9 and d["average_precision"] > 0.9 and 0 < d["f1"] <= 1
    parts = metrics["detect_parts"]  # each part alone on the same test set, with its weight
    assert set(parts) == {"recon", "latent", "features", "gradients"}
    assert sum(p["weight"] for p in parts.values()) == 10 and all(0.5 < p["auroc"] <= 1 for p in parts.values())
    assert "AUROC alone" in (run_dir / "report.md").read_text()
    for name in ("report.md", "scores.png", "curves.png", "extremes.png", "model.safetensors", "detector.json",
                 "detector.safetensors", "config.yaml"):
        assert (run_dir / name).is_file(), name
    assert not any(p.name.startswith(".") for p in run_dir.parent.iterdir())  # no temporary folder left


def test_score_writes_index_score_is_anomaly(run_dir, tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["detect", "score", str(run_dir), "--data", "digits", "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["index", "score", "is_anomaly"] and len(rows) == 1797
    detector, _ = load_detector(run_dir)
    threshold = json.loads((run_dir / "metrics.json").read_text())["detect"]["threshold"]
    assert detector.threshold_ == pytest.approx(threshold)
    assert "features" in detector.scorer_.scales and len(detector.scorer_.feature_reference) > 100  # saved, loaded
    assert "gradients" in detector.scorer_.scales and len(detector.scorer_.gradient_reference) > 100
    for row in rows[:200]:
        assert int(row["is_anomaly"]) == int(float(row["score"]) > threshold)
    assert [int(r["index"]) for r in rows[:3]] == [0, 1, 2]


def test_score_on_data_of_another_shape_exits_2(run_dir, tmp_path, capsys):
    table = tmp_path / "table.npy"
    np.save(table, np.random.default_rng(0).normal(size=(10, 5)))
    images = tmp_path / "big.npy"
    np.save(images, np.random.default_rng(0).uniform(size=(4, 1, 28, 28)).astype(np.float32))
    for spec in (f"npy:{table}", f"npy:{images}"):
        out = tmp_path / "never.csv"
        assert main(["detect", "score", str(run_dir), "--data", spec, "--out", str(out)]) == 2
        assert "shape" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("value", ["0", "0.7", "lots"])
def test_bad_contamination_exits_2_and_writes_nothing(tmp_path, capsys, value):
    out = tmp_path / "run"
    assert main(["detect", "fit", "--data", "digits", "--contamination", value, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "contamination" in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_existing_run_needs_overwrite(run_dir, capsys):
    assert main(["detect", "fit", "--data", "digits", "--out", str(run_dir)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_labels_without_anomalies_warn_and_keep_the_threshold(tmp_path, capsys):
    """A CSV whose label column marks no anomaly: --threshold f1 warns and keeps the contamination threshold;
    the labels never reach training."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 4))
    path = tmp_path / "table.csv"
    lines = ["a,b,c,d,label"] + [",".join(f"{v:.5f}" for v in row) + ",0" for row in x]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert main(["detect", "fit", "--data", f"csv:{path}", "--threshold", "f1", "--contamination", "0.1",
                 "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    assert "no anomaly" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert "detect" not in metrics and metrics["threshold_method"].startswith("contamination 0.1")
    detector, _ = load_detector(out)
    assert detector.threshold_ > detector.decision_scores_.min()
    assert 0.05 <= detector.labels_.mean() <= 0.15


def test_no_gradients_and_no_features_leave_their_parts_out(tmp_path):
    out = tmp_path / "plain"
    assert main(["detect", "fit", "--data", "digits", "--normal-class", "0", "--epochs", "1", "--no-gradients",
                 "--no-features", "--out", str(out), "--quiet"]) == 0
    detector, _ = load_detector(out)
    assert set(detector.scorer_.scales) == {"recon", "latent"} and detector.gradients is False
    assert json.loads((out / "detector.json").read_text())["scorer"]["gradients"] is False
