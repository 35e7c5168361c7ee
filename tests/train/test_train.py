import json

import pytest
import torch

import aeopt
from aeopt import AeoptError, TrainConfig
from aeopt.runs import load_tensors
from aeopt.train import OnStepEnd, TrainingDiverged, train

FAST = dict(epochs=4, batch_size=64, precision="fp32")


def test_conv_beats_pca_at_latent_8(tmp_path, digits):
    result = train(TrainConfig(model="conv", latent_dim=8, epochs=12, out=str(tmp_path / "run")),
                   dataset=digits, progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["mse"] < metrics["pca"]["mse"], metrics
    assert metrics == json.loads(json.dumps(result.metrics))
    for key in ("params", "train_flops_per_sample", "train_seconds", "samples_per_second"):
        assert metrics[key] > 0
    assert metrics["pca"]["components"] == 8
    assert set(metrics["test"]["per_class"]) == {str(c) for c in range(10)}
    for name in ("config.yaml", "model.safetensors", "history.csv", "report.md", "loss.png", "reconstructions.png"):
        assert (tmp_path / "run" / name).is_file(), name


@pytest.mark.parametrize("config", [
    TrainConfig(model="mlp", hidden="32", dropout=0.1, latent_dim=4, **FAST),
    # The adversarial AE has a second optimizer (its discriminator's) that must resume exactly too.
    TrainConfig(model="aae", width=8, latent_dim=4, **FAST),
], ids=["mlp-dropout", "aae"])
def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, digits, config, interrupt_after_epoch_2):
    straight = train(config, out=str(tmp_path / "straight"), dataset=digits, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(config, out=str(tmp_path / "cut"), dataset=digits, progress=False, callbacks=interrupt_after_epoch_2)
    resumed = train(resume=tmp_path / "cut", dataset=digits, progress=False)
    a = load_tensors(tmp_path / "straight" / "checkpoint.safetensors")
    b = load_tensors(tmp_path / "cut" / "checkpoint.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.metrics["test"]["mse"] == straight.metrics["test"]["mse"]
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in straight.history]


def test_nan_loss_stops_with_epoch_and_hint_and_keeps_the_last_good_checkpoint(tmp_path, digits):
    def poison_in_epoch_2(loop, batch, parts):
        if loop.epoch == 1:
            with torch.no_grad():
                next(loop.model.parameters()).fill_(float("nan"))

    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, step \d+; lower --lr or add --clip-grad"):
        train(TrainConfig(latent_dim=4, out=str(out), **FAST), dataset=digits, progress=False,
              callbacks=[OnStepEnd(poison_in_epoch_2)])
    kept = load_tensors(out / "checkpoint.safetensors")
    assert all(torch.isfinite(t).all() for t in kept.values() if t.is_floating_point())
    assert json.loads((out / "checkpoint.json").read_text())["epoch"] == 1


def test_refuses_to_overwrite_a_run_without_overwrite(tmp_path, digits):
    config = TrainConfig(latent_dim=4, out=str(tmp_path / "run"), **{**FAST, "epochs": 1})
    train(config, dataset=digits, progress=False)
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(AeoptError, match="already exists; pass --overwrite"):
        train(config, dataset=digits, progress=False)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before
    train(config, dataset=digits, progress=False, overwrite=True, seed=1)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() != before


def test_load_rebuilds_the_same_model_without_pickle(tmp_path, digits):
    result = train(TrainConfig(latent_dim=4, out=str(tmp_path / "run"), **{**FAST, "epochs": 1}),
                   dataset=digits, progress=False)
    run = aeopt.load(tmp_path / "run")
    x = digits.x_test[:16]
    result.model.eval()
    assert torch.equal(run.model(x)["x_hat"], result.model(x)["x_hat"])
    assert run.metrics["test"]["mse"] == result.metrics["test"]["mse"]


def test_a_channels_last_run_hands_back_the_model_a_load_gives(tmp_path, digits):
    """NHWC is how some machines train fastest, not part of the model: the returned model computes what
    aeopt.load() rebuilds, to the bit (convs run other kernels per layout)."""
    result = train(TrainConfig(latent_dim=4, memory_format="channels_last", out=str(tmp_path / "run"),
                               **{**FAST, "epochs": 1}), dataset=digits, progress=False)
    assert result.metrics["memory_format"] == "channels_last"
    assert all(p.is_contiguous() for p in result.model.parameters())
    x = digits.x_test[:16]
    result.model.eval()
    assert torch.equal(aeopt.load(tmp_path / "run").model(x)["x_hat"], result.model(x)["x_hat"])


@pytest.mark.parametrize("optimizer, schedule", [("sgd", "onecycle"), ("rmsprop", "plateau"), ("adam", "constant")])
def test_every_optimizer_and_schedule_learns(tmp_path, digits, optimizer, schedule):
    lr = {"sgd": 0.05, "rmsprop": 1e-3, "adam": 3e-3}[optimizer]
    result = train(TrainConfig(latent_dim=8, optimizer=optimizer, schedule=schedule, lr=lr, nesterov=True,
                               clip_grad=1.0, out=str(tmp_path / "run"), **FAST), dataset=digits, progress=False)
    losses = [row["val_loss"] for row in result.history]
    assert losses[-1] < losses[0]
