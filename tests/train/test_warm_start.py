"""`--init RUN`: a run that starts from another run's best weights (fine-tuning, a codec's next lambda)."""
from __future__ import annotations

import shutil

import pytest
import torch

import aeopt
from aeopt.cli import main
from aeopt.runs import load_tensors

MLP = dict(data="digits", model="mlp", hidden="32", latent_dim=4, precision="fp32", threads=1, batch_size=64)


def _quiet(**kw):
    return aeopt.train(**MLP, **kw, progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    return _quiet(epochs=2, out=str(tmp_path_factory.mktemp("warm") / "first")).path


def test_the_run_starts_from_the_init_runs_best_weights_and_records_it(first, tmp_path):
    seen = {}
    result = aeopt.train(**MLP, epochs=1, init=str(first), out=str(tmp_path / "next"), progress=False,
                         log=lambda m: None,
                         setup=lambda loop: seen.update({k: v.clone() for k, v in loop.model.state_dict().items()}))
    best = load_tensors(first / "model.safetensors")
    assert seen.keys() == best.keys() and all(torch.equal(seen[k], best[k]) for k in best)
    fresh = _quiet(epochs=1, out=str(tmp_path / "fresh"))
    # two epochs of head start show in the first epoch's validation loss
    assert result.history[0]["val_loss"] < fresh.history[0]["val_loss"]
    assert (tmp_path / "next" / "config.yaml").read_text().count(f"init: {first}") == 1


@pytest.mark.parametrize("flags, message", [
    (["--model", "mlp", "--hidden", "64", "--latent-dim", "4"], "encoder.1.weight is (32, 64) there, (64, 64) here"),
    (["--model", "conv"], "is a 'mlp' run; a --model conv run can only start from a 'conv' run"),
])
def test_weights_that_do_not_fit_are_one_line_exit_2_and_nothing_written(first, tmp_path, capsys, flags, message):
    assert main(["train", "--data", "digits", *flags, "--epochs", "1", "--quiet", "--init", str(first),
                 "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_init_that_is_not_a_run_or_is_the_output_is_refused_and_leaves_it_intact(first, tmp_path, capsys):
    assert main(["train", "--data", "digits", "--model", "mlp", "--init", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "d")]) == 2
    assert "--init" in capsys.readouterr().err and not (tmp_path / "d").exists()
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    before = (copy / "model.safetensors").read_bytes()
    assert main(["train", "--data", "digits", "--model", "mlp", "--hidden", "32", "--latent-dim", "4", "--epochs",
                 "1", "--quiet", "--init", str(copy), "--out", str(copy), "--overwrite"]) == 2
    assert "is also --out" in capsys.readouterr().err
    assert (copy / "model.safetensors").read_bytes() == before


def test_a_resumed_warm_started_run_needs_its_checkpoint_not_the_init_run(first, tmp_path):
    init = tmp_path / "init"
    shutil.copytree(first, init)
    one = _quiet(epochs=1, init=str(init), out=str(tmp_path / "b"))
    shutil.rmtree(init)
    more = aeopt.train(resume=tmp_path / "b", epochs=2, progress=False, log=lambda m: None)
    assert len(more.history) == 2 and more.history[0] == one.history[0]


def test_a_codec_warm_starts_from_a_codec_run(codec_runs, tmp_path):
    """The codec's own trainer takes --init too (a second lambda from the first's weights): with a
    learning rate too small to move them, the new run measures what its init run measured."""
    import json

    init = codec_runs["factorized"]
    before = json.loads((init / "metrics.json").read_text())["test"]
    result = aeopt.train(data="digits", model="codec", entropy="factorized", lmbda=0.05, latent_dim=8, width=16,
                         epochs=1, batch_size=16, lr=1e-12, threads=1, init=str(init), out=str(tmp_path / "codec"),
                         progress=False, log=lambda message: None)
    assert result.metrics["test"]["bpp"] == pytest.approx(before["bpp"], rel=0.01)
    assert result.metrics["test"]["psnr"] == pytest.approx(before["psnr"], abs=0.05)
