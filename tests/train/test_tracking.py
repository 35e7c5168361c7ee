"""--tensorboard and --mlflow: what was logged is read back through each tool's own reader and checked
against the run directory (history.csv, metrics.json, config.yaml)."""
import csv
import json
import math
import sys
import time
import warnings

import pytest

import aeopt
from aeopt import AeoptError
from aeopt.cli import main
from aeopt.runs import read_config
from aeopt.train import train
from aeopt.train.tracking import reconstruction_grid

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TINY = dict(data="digits", width=8, latent_dim=4, batch_size=128, threads=1, precision="fp32", progress=False)
STEPS_PER_EPOCH = 11  # digits: 1,347 training samples in batches of 128
THIRD_PARTY = ("tensorboard", "mlflow", "sqlalchemy", "alembic", "google", "protobuf")


def _history(run) -> list[dict[str, float]]:
    with open(run / "history.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _events(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def _scalars(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(s.step, s.value) for s in events.Scalars(tag)]


@pytest.fixture
def file_store(monkeypatch):
    """MLflow's opt-in for its folder store, unset at the start and restored afterwards (aeopt sets it)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")


def _only_run(client: MlflowClient, **filters):
    experiment = client.get_experiment_by_name("aeopt")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"], **filters)


def test_tensorboard_scalars_and_images_equal_the_run_files(tmp_path):
    run, board = tmp_path / "run", tmp_path / "tb"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(**TINY, epochs=2, schedule="constant", lr=2e-3, out=str(run), tensorboard=str(board),
                       log=lambda message: None)
    assert not [w for w in caught if any(name in w.filename for name in THIRD_PARTY)], [str(w.message) for w in caught]
    events = _events(board / "run")  # one sub-folder per run, named as its run directory
    history = _history(run)
    ends = [STEPS_PER_EPOCH * (i + 1) for i in range(len(history))]  # epoch scalars sit at the optimizer step
    for column in ("train_loss", "val_loss", "lr", "grad_norm"):
        logged = _scalars(events, f"epoch/{column}")
        assert [step for step, _ in logged] == ends
        assert [value for _, value in logged] == pytest.approx([row[column] for row in history], rel=1e-6)
    layers = [c for c in history[0] if c.startswith("grad/")]
    assert layers and all(_scalars(events, c)[-1][1] == pytest.approx(history[-1][c], rel=1e-6) for c in layers)
    assert _scalars(events, "step/lr") == [(20, pytest.approx(2e-3))]  # every 20 steps, the lr it stepped with
    assert 0 < _scalars(events, "step/loss")[0][1] < 1
    rates = [value for _, value in _scalars(events, "epoch/samples_per_second")]
    assert len(rates) == 2 and all(rate > 100 for rate in rates)
    assert _scalars(events, "test/mse") == [(22, pytest.approx(result.metrics["test"]["mse"], rel=1e-6))]
    images = events.Images("reconstructions")
    assert [image.step for image in images] == ends
    assert (images[-1].width, images[-1].height) == (8 * 8, 2 * 8)  # 8 digits of 8x8 over their reconstructions


def test_reconstruction_grid_puts_inputs_over_outputs_in_the_inputs_range():
    import torch

    x = torch.linspace(-2, 2, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    grid = reconstruction_grid(x, x + 10)
    assert grid.shape == (3, 8, 10)
    assert grid[:, :4, :5].min() == 0 and grid[:, :4, 5:].max() == 1  # inputs span [0, 1]
    assert (grid[:, 4:] == 1).all()  # outputs above the inputs' range show clipped, not rescaled
    assert reconstruction_grid(torch.rand(2, 2, 4, 4), torch.rand(2, 2, 4, 4)).shape == (1, 8, 8)


def test_mlflow_params_metrics_and_artifacts_equal_the_run_files(tmp_path, file_store):
    run, store = tmp_path / "run", tmp_path / "mlruns"
    messages = []
    result = train(**TINY, epochs=2, out=str(run), mlflow=str(store), log=messages.append)
    assert any("sqlite:///mlflow.db" in m for m in messages)  # said once, in aeopt's words
    client = MlflowClient(store.as_uri())
    (logged,) = _only_run(client)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "run"
    assert logged.data.tags["aeopt.run_dir"] == str(run.resolve())
    settings, _ = read_config(run)  # config.yaml's settings, and where this run was logged
    assert logged.data.params == {k: str(v) for k, v in settings.replace(mlflow=str(store)).to_flat().items()}
    history = _history(run)
    for column in ("train_loss", "val_loss", "grad_norm"):
        values = client.get_metric_history(logged.info.run_id, column)
        assert [(m.step, m.value) for m in values] == [(row["epoch"], pytest.approx(row[column])) for row in history]
    assert len(client.get_metric_history(logged.info.run_id, "epoch_samples_per_second")) == 2
    metrics = json.loads((run / "metrics.json").read_text())
    final = logged.data.metrics
    assert final["test_mse"] == pytest.approx(metrics["test"]["mse"]) == pytest.approx(result.metrics["test"]["mse"])
    assert final["test_psnr"] == pytest.approx(metrics["test"]["psnr"])
    assert final["pca_mse"] == pytest.approx(metrics["pca"]["mse"])
    assert final["samples_per_second"] == pytest.approx(metrics["samples_per_second"])
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert artifacts == {p.name for p in run.iterdir()} and "metrics.json" in artifacts


def test_a_resumed_run_continues_both_logs_without_doubling_back(tmp_path, monkeypatch, interrupt_after_epoch_2):
    monkeypatch.chdir(tmp_path)  # a SQL store keeps its artifacts in ./mlruns, as MLflow always does
    run, board, store = tmp_path / "run", tmp_path / "tb", f"sqlite:///{tmp_path / 'mlflow.db'}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(KeyboardInterrupt):
            train(**TINY, epochs=3, out=str(run), tensorboard=str(board), mlflow=store,
                  callbacks=interrupt_after_epoch_2, log=lambda message: None)
        # config.yaml does not name the trackers (derived runs must not log as this one): a resume names them
        saved, _ = read_config(run)
        assert (saved.tensorboard, saved.mlflow) == (None, None)
        train(resume=run, tensorboard=str(board), mlflow=store, progress=False, log=lambda message: None)
    assert not [w for w in caught if any(name in w.filename for name in THIRD_PARTY)], [str(w.message) for w in caught]
    history = _history(run)
    events = _events(board / "run")
    val = _scalars(events, "epoch/val_loss")
    assert val == [(STEPS_PER_EPOCH * row["epoch"], pytest.approx(row["val_loss"], rel=1e-6)) for row in history]
    steps = [step for step, _ in _scalars(events, "step/loss")]
    assert steps == [20], steps  # the killed run's step 20 (after the checkpoint) was dropped, the resume's kept
    client = MlflowClient(store)
    killed, resumed = _only_run(client)
    assert (killed.info.status, resumed.info.status) == ("KILLED", "FINISHED")
    assert resumed.data.tags["aeopt.resumed_at_epoch"] == "1"
    values = client.get_metric_history(resumed.info.run_id, "val_loss")
    assert sorted((m.step, m.value) for m in values) == [(row["epoch"], pytest.approx(row["val_loss"]))
                                                          for row in history]


@pytest.mark.parametrize("flag,module", [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_a_missing_extra_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, flag, module):
    monkeypatch.setitem(sys.modules, module, None)  # what `import` meets when the package is not installed
    code = main(["train", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "run"),
                 f"--{flag}", str(tmp_path / "log"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f'pip install "aeopt[{flag}]"' in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "log").exists()


@pytest.mark.parametrize("uri", ["nosuch://store", "http://127.0.0.1:9"])  # an unknown scheme; no server there
def test_an_unreachable_mlflow_store_is_one_line_soon_and_leaves_nothing(tmp_path, uri):
    started = time.perf_counter()
    with pytest.raises(AeoptError, match=f"--mlflow {uri}: .*give a reachable tracking URI") as error:
        train(**TINY, epochs=1, out=str(tmp_path / "run"), mlflow=uri, log=lambda message: None)
    assert time.perf_counter() - started < 60  # MLflow's own retries would take minutes
    assert len(str(error.value).splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_tracker_that_fails_mid_run_warns_once_and_the_run_completes(tmp_path, monkeypatch):
    from aeopt.train import tracking

    def broken(self, loop, row):
        raise OSError("disk full")

    monkeypatch.setattr(tracking.TensorBoardCallback, "epoch", broken)
    messages = []
    result = train(**TINY, epochs=2, out=str(tmp_path / "run"), tensorboard=str(tmp_path / "tb"),
                   log=messages.append)
    warned = [m for m in messages if "tensorboard logging stopped" in m]
    assert warned == ["warning: tensorboard logging stopped (OSError: disk full); training goes on and the run "
                      "directory stays complete"]
    assert result.metrics["epochs"] == 2 and math.isfinite(result.metrics["test"]["mse"])


def test_tracking_settings_may_change_on_resume_and_are_no_part_of_the_run(tmp_path):
    run = aeopt.train(**TINY, epochs=1, out=str(tmp_path / "run"), log=lambda message: None)
    resumed = train(resume=run.path, epochs=2, tensorboard=str(tmp_path / "tb"), progress=False,
                    log=lambda message: None)
    assert resumed.metrics["epochs"] == 2
    assert [s for s, _ in _scalars(_events(tmp_path / "tb" / "run"), "epoch/val_loss")] == [22]


def test_a_codec_run_logs_to_tensorboard_its_rate_and_distortion_and_its_measured_files(tmp_path):
    """The codec's own trainer opens the trackers too: per-epoch bpp/PSNR as in history.csv, and the
    test figures measured on real .aec files (metrics.json) at the end."""
    run, board = tmp_path / "codec", tmp_path / "tb"
    result = train(data="digits", model="codec", entropy="factorized", lmbda=0.05, latent_dim=8, width=8, epochs=2,
                   batch_size=32, lr=1e-2, threads=1, out=str(run), tensorboard=str(board), progress=False,
                   log=lambda message: None)
    events = _events(board / "codec")
    history = _history(run)
    for column in ("val_bpp", "val_psnr", "train_loss"):
        assert [v for _, v in _scalars(events, f"epoch/{column}")] == pytest.approx([r[column] for r in history],
                                                                                    rel=1e-6)
    assert _scalars(events, "test/bpp")[0][1] == pytest.approx(result.metrics["test"]["bpp"], rel=1e-6)
    assert len(events.Images("reconstructions")) == 2
    config, _ = read_config(run)
    assert config.runtime.tensorboard is None  # config.yaml holds the run, not where it was watched from
