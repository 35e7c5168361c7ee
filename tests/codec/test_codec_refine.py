"""Encode-time refinement (aeopt/codec/refine.py): better latents, the same decoder, exact decoding."""
import numpy as np
import pytest
import torch

from aeopt.cli import main
from aeopt.codec import compress, decompress, load_codec
from aeopt.codec.api import _synthesise, latents
from aeopt.codec.evaluate import quality
from aeopt.codec.refine import per_image_loss, quantized, temperature
from aeopt.data import load_data

STEPS = 40


def _digits_test(n=60):
    return (load_data("digits", seed=0).x_test[:n] * 255).round().byte().numpy()


def _real_loss(run, images, data):
    """R + lambda * D on the real file: 8 * bytes / pixels, 255^2 * MSE of what decodes."""
    decoded = decompress(run, data)
    mse = quality(list(images), list(decoded))["mse"]
    return 8 * len(data) / (images.shape[0] * images.shape[-2] * images.shape[-1]) + run.model.lmbda * 255 ** 2 * mse


@pytest.mark.parametrize("entropy", ["factorized", "hyperprior"])
def test_refined_files_decode_exactly_and_cost_less_than_plain_rounding(codec_runs, entropy):
    run = load_codec(codec_runs[entropy])
    torch.set_num_threads(1)
    images = _digits_test()
    plain, refined = compress(run, images), compress(run, images, refine=STEPS)
    assert refined != plain
    assert compress(run, images, refine=STEPS) == refined  # seeded: the same image gives the same file
    assert compress(run, images, refine=0) == plain
    sizes, parts = latents(run, images, refine=STEPS)
    expected = np.concatenate([_synthesise(run, part.y, part.size) for part in parts])
    np.testing.assert_array_equal(decompress(run, refined), expected)  # decodes to g_s of the refined integers
    assert _real_loss(run, images, refined) < 0.97 * _real_loss(run, images, plain)


def test_no_image_ends_worse_than_plain_rounding_by_the_models_estimate(codec_runs):
    run = load_codec(codec_runs["hyperprior"])
    torch.set_num_threads(1)
    images = _digits_test(40)
    x = torch.from_numpy(images).float() / 255
    (_, [plain]), (_, [refined]) = latents(run, images), latents(run, images, refine=STEPS)
    with torch.no_grad():
        loss = {name: per_image_loss(run.model, x, *quantized(run.model, torch.from_numpy(p.y).float(),
                                                              torch.from_numpy(p.z).float(), torch.round))
                for name, p in (("plain", plain), ("refined", refined))}
    assert (loss["refined"] <= loss["plain"] + 1e-6).all()
    assert (loss["refined"] < loss["plain"] - 1e-6).float().mean() > 0.5  # most images found better integers


def test_images_too_large_to_refine_are_refused_before_any_work(codec_runs, monkeypatch):
    import aeopt.codec.refine as refine_module
    from aeopt.errors import AeoptError

    monkeypatch.setattr(refine_module, "MAX_PIXELS", 100)
    run = load_codec(codec_runs["hyperprior"])
    with pytest.raises(AeoptError, match="11x10 image is over"):
        compress(run, np.zeros((1, 11, 10), np.uint8), refine=5)
    assert len(compress(run, np.zeros((1, 10, 10), np.uint8), refine=5)) > 0


def test_temperature_holds_then_falls_to_its_floor():
    assert temperature(0, 100) == temperature(30, 100) == 0.5
    assert 0.02 < temperature(60, 100) < 0.5 and abs(temperature(99, 100) - 0.02) < 0.002


def test_cli_refine_round_trips_and_impossible_steps_exit_2(codec_runs, tmp_path, capsys):
    run_dir = codec_runs["hyperprior"]
    np.save(tmp_path / "x.npy", _digits_test(8))
    assert main(["compress", str(run_dir), str(tmp_path / "x.npy"), "--out", str(tmp_path / "a"),
                 "--refine", "10", "--quiet"]) == 0
    assert "compressed 8 image(s)" in capsys.readouterr().out
    run = load_codec(run_dir)
    data = (tmp_path / "a" / "x.aec").read_bytes()
    assert data == compress(run, _digits_test(8), refine=10)
    assert main(["decompress", str(tmp_path / "a" / "x.aec"), "--out", str(tmp_path / "png"), "--quiet"]) == 0
    for bad in ("-1", "20000"):
        assert main(["compress", str(run_dir), str(tmp_path / "x.npy"), "--out", str(tmp_path / "b"),
                     "--refine", bad]) == 2
        err = capsys.readouterr().err
        assert "refine steps must be a whole number in 0..10000" in err and err.count("\n") == 1
        assert not (tmp_path / "b").exists()
