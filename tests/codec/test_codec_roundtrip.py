"""What a codec run guarantees: bit-exact decoding, thread-independence, honest figures, the CLI."""
import copy
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aeopt
from aeopt.cli import main
from aeopt.codec import compress, decompress, decompress_images, load_codec
from aeopt.codec.api import _decode_chunk, encode_latents
from aeopt.codec.coder import start_decoder
from aeopt.data import load_data

ROOT = Path(__file__).resolve().parents[2]


def _images(n, h=8, w=8, seed=0):
    return (np.random.default_rng(seed).random((n, 1, h, w)) * 255).astype(np.uint8)


def _digits_test():
    return list((load_data("digits", seed=0).x_test * 255).round().byte().numpy())


@pytest.mark.parametrize("entropy", ["factorized", "hyperprior", "meanscale", "channelwise"])
def test_round_trip_is_bit_exact_against_the_models_quantized_reconstruction(codec_runs, entropy):
    run = load_codec(codec_runs[entropy])
    torch.set_num_threads(1)
    for images in (np.stack(_digits_test()[:40]), _images(3, 13, 21, seed=1)):
        data = compress(run, images)
        decoded = decompress(run, data)
        x = torch.from_numpy(images).float() / 255
        expected = torch.round(run.model.reconstruct_quantized(x) * 255).to(torch.uint8).numpy()
        assert decoded.dtype == np.uint8 and decoded.shape == images.shape
        assert np.array_equal(decoded, expected)
    single = compress(run, images[0])
    assert np.array_equal(decompress(run, single)[0], decoded[0])


_ENCODE_2_THREADS = """
import sys, numpy as np, torch
torch.set_num_threads(2)
from aeopt.codec import compress, load_codec, decompress
from aeopt.codec.api import encode_latents
run = load_codec(sys.argv[1])
images = np.load(sys.argv[2])
open(sys.argv[3], "wb").write(compress(run, images, precision=sys.argv[6]))
y, z = encode_latents(run, torch.from_numpy(images).float() / 255, sys.argv[6])
np.save(sys.argv[4], y)
np.save(sys.argv[5], decompress(run, open(sys.argv[3], "rb").read()))
"""


@pytest.mark.parametrize("precision, entropy", [("fp32", "hyperprior"), ("bf16", "hyperprior"), ("fp32", "channelwise")])
def test_encoded_with_2_threads_decodes_identically_with_1_thread(codec_runs, tmp_path, precision, entropy):
    """The CompressAI failure: encoder and decoder disagree on a CDF and decode garbage. Here the
    table choice is integer arithmetic, so the latents come back exactly; the pixels too. Encoding
    in bf16 picks other integers (checked), which still decode exactly with 1 thread in fp32. The
    channel-wise model's context nets are integer too: their rows agree however y was computed."""
    run_dir = codec_runs[entropy]
    images = np.concatenate([np.stack(_digits_test()[:64]), _images(8, seed=3)])
    np.save(tmp_path / "x.npy", images)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", _ENCODE_2_THREADS, str(run_dir), str(tmp_path / "x.npy"),
                    str(tmp_path / "x.aec"), str(tmp_path / "y.npy"), str(tmp_path / "d2.npy"), precision],
                   check=True, env=env, timeout=120)
    torch.set_num_threads(1)
    run = load_codec(run_dir)
    data = (tmp_path / "x.aec").read_bytes()
    sizes, slices = run.unpack(data, "x.aec")
    assert len(slices) == 1
    y = _decode_chunk(run, [start_decoder(slices[0][2])], sizes[0], len(sizes))
    assert np.array_equal(y, np.load(tmp_path / "y.npy"))
    assert np.array_equal(decompress(run, data), np.load(tmp_path / "d2.npy"))
    if precision == "bf16":
        fp32_y, _ = encode_latents(run, torch.from_numpy(images).float() / 255)
        assert not np.array_equal(fp32_y, y)


def test_integer_hyper_decoder_matches_float_within_table_rounding(codec_runs):
    run = load_codec(codec_runs["hyperprior"])
    images = torch.from_numpy(np.stack(_digits_test()[:100])).float() / 255
    y, z = encode_latents(run, images)
    rows, offsets = run.tables.hyper.indices(z, y.shape[-2:])
    assert offsets is None  # the scale-only model: no means
    reference = copy.deepcopy(run.model).double()
    with torch.no_grad():
        r = reference.hyper_params(torch.from_numpy(z).double(), torch.from_numpy(y).double()).numpy()
    float_rows = np.searchsorted(run.tables.hyper.thresholds / 2 ** 12, r, side="left")
    assert np.mean(rows == float_rows) > 0.99
    assert np.abs(rows - float_rows).max() <= 1


def test_the_hyper_encoder_sees_y_before_rounding_as_in_training(codec_runs):
    """z = round(h_a(y)), not round(h_a(round(y))): training's h_a sees the unrounded y, and scales
    predicted from a rounded one cost Fashion-MNIST files 17% more at the lowest rate (codec.md).
    The digits codec's h_a has collapsed (its z costs 3 bytes in all), so random h_a weights make the
    two rules differ here."""
    run = load_codec(codec_runs["hyperprior"])
    run.model = copy.deepcopy(run.model)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in run.model.hyper_encoder.parameters():
            parameter.normal_(0, 1)
    x = torch.from_numpy(np.stack(_digits_test()[:50])).float() / 255
    y, z = encode_latents(run, x)
    with torch.no_grad():
        y_float = run.model.analyse(x)
        from_float = torch.round(run.model.hyper_analyse(y_float)).long().numpy()
        from_rounded = torch.round(run.model.hyper_analyse(torch.round(y_float))).long().numpy()
    assert (from_float != from_rounded).mean() > 0.05  # the two rules differ on these weights
    np.testing.assert_array_equal(z, from_float)
    np.testing.assert_array_equal(y, torch.round(y_float).long().numpy())


def _integer_reference_rows(net, z, y_hw):
    """The integer h_s written the plain way: int64 products summed by Python-order einsum, true
    arithmetic shifts, channels first; the library's float64 channels-last version must equal it.
    (rows, offsets): the mean-scale h_s's means by integer shifts and masks."""
    from aeopt.codec.intnet import A_BITS, ACT_LIMIT_LOG2, W_BITS
    a = np.clip(z.astype(np.int64), -2 ** ACT_LIMIT_LOG2, 2 ** ACT_LIMIT_LOG2) << A_BITS
    for layer in net.layers:
        n, c, h, w = a.shape
        padded = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = np.zeros((n, len(layer.weight), h, w), dtype=np.int64)
        for dy in range(3):
            for dx in range(3):
                out += np.einsum("nchw,oc->nohw", padded[:, :, dy:dy + h, dx:dx + w], layer.weight[:, :, dy, dx])
        a = (out + layer.bias[None, :, None, None] + (1 << (W_BITS - 1))) >> W_BITS
        if layer.shuffle:
            a = torch.nn.functional.pixel_shuffle(torch.from_numpy(a), 2).numpy()
        if layer.relu:
            a = np.maximum(a, 0)
        limit = 2 ** (ACT_LIMIT_LOG2 + A_BITS)
        a = np.clip(a, -limit, limit)
    a = a[..., :y_hw[0], :y_hw[1]]
    if not net.phases:
        return np.searchsorted(net.thresholds, a, side="left"), None
    m = a.shape[1] // 2
    mean = a[:, m:]
    phase = (mean & ((1 << A_BITS) - 1)) * net.phases >> A_BITS  # the fraction's top bits
    return np.searchsorted(net.thresholds, a[:, :m], side="left") * net.phases + phase, mean >> A_BITS


@pytest.mark.parametrize("entropy", ["hyperprior", "meanscale"])
@pytest.mark.parametrize("z_hw, y_hw", [((2, 2), (7, 7)), ((3, 2), (9, 8)), ((1, 1), (1, 1))])
def test_integer_hyper_decoder_equals_plain_int64_arithmetic(codec_runs, z_hw, y_hw, entropy):
    net = load_codec(codec_runs[entropy]).tables.hyper
    channels = net.layers[0].weight.shape[1]
    latent = net.layers[-1].weight.shape[0] // (2 if entropy == "meanscale" else 1)
    rng = np.random.default_rng(sum(z_hw + y_hw))
    for spread in (2, 40, 6000):  # 6000 reaches the activation clip
        z = np.round(rng.standard_normal((3, channels, *z_hw)) * spread).astype(np.int64)
        rows, offsets = net.indices(z, y_hw)
        assert rows.shape == (3, latent, *y_hw)
        expected_rows, expected_offsets = _integer_reference_rows(net, z, y_hw)
        assert np.array_equal(rows, expected_rows)
        assert (offsets is None) == (expected_offsets is None)
        if offsets is not None:
            assert np.array_equal(offsets, expected_offsets) and offsets.dtype == np.int64


def test_metrics_bpp_is_eight_times_file_bytes_over_pixels(codec_runs):
    run_dir = codec_runs["factorized"]
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert {"bpp", "psnr", "ms_ssim", "bytes_per_image"} <= set(metrics)
    run = load_codec(run_dir)
    test = _digits_test()
    sizes = [len(compress(run, im)) for im in test]
    assert metrics["bytes"] == sum(sizes)
    assert metrics["bpp"] == 8 * sum(sizes) / (len(test) * 64)
    assert metrics["bytes_per_image"] == sum(sizes) / len(test)
    decoded = np.stack([decompress(run, compress(run, im))[0] for im in test]).astype(np.float64)
    mse = np.mean((decoded - np.stack(test)) ** 2)
    assert metrics["psnr"] == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-9)
    assert aeopt.evaluate(str(run_dir))["test"]["bpp"] == metrics["bpp"]
    run_metrics = json.loads((run_dir / "metrics.json").read_text())  # 5 epochs of the same batches each
    assert run_metrics["steps"] == json.loads((run_dir / "checkpoint.json").read_text())["step"]
    assert run_metrics["steps"] > 0 and run_metrics["steps"] % 5 == 0


def test_codec_trained_on_digits_beats_png_at_the_psnr_it_reaches(codec_runs):
    test = _digits_test()
    png = 0
    for im in test:
        buf = io.BytesIO()
        Image.fromarray(im[0]).save(buf, "PNG", optimize=True)
        png += len(buf.getvalue())
    for entropy, run_dir in codec_runs.items():
        metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
        assert metrics["psnr"] > 20, entropy  # a real reconstruction, not a flat grey
        assert metrics["bytes"] < png / 2, entropy
        assert (run_dir / "rd.png").is_file() and (run_dir / "strip.png").is_file()


def test_cli_compress_decompress_round_trip(codec_runs, tmp_path, capsys):
    run_dir = codec_runs["hyperprior"]
    images = _images(2, 11, 9, seed=5)
    np.save(tmp_path / "batch.npy", images)
    Image.fromarray(images[0, 0]).save(tmp_path / "one.png")
    assert main(["compress", str(run_dir), str(tmp_path / "one.png"), str(tmp_path / "batch.npy"),
                 "--out", str(tmp_path / "aec"), "--quiet"]) == 0
    line = capsys.readouterr().out
    assert "compressed 3 image(s) into 2 file(s)" in line and "bpp" in line and "PSNR" in line
    assert main(["decompress", str(tmp_path / "aec" / "one.aec"), str(tmp_path / "aec" / "batch.aec"),
                 "--out", str(tmp_path / "png"), "--quiet"]) == 0  # run found in aeopt-run.json
    names = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert names == ["batch_00000.png", "batch_00001.png", "one.png"]
    run = load_codec(run_dir)
    expected = decompress_images(run, (tmp_path / "aec" / "batch.aec").read_bytes())
    assert np.array_equal(np.asarray(Image.open(tmp_path / "png" / "batch_00001.png")), expected[1][0])
    assert main(["compress", str(run_dir), str(tmp_path / "one.png"), "--out", str(tmp_path / "aec")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["compress", str(run_dir), "--data", "digits", "--split", "test", "--out",
                 str(tmp_path / "digits.aec"), "--quiet"]) == 0
    assert len(decompress(run, (tmp_path / "digits.aec").read_bytes())) == len(_digits_test())


def test_encoding_on_a_gpu_this_machine_lacks_is_one_line_and_writes_nothing(codec_runs, tmp_path, capsys,
                                                                             monkeypatch):
    """--device cuda without a visible GPU: exit 2, what to do instead, no file; an unknown device from
    Python is refused by name (the GPU path itself: tests/train/test_cuda.py)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run_dir = codec_runs["hyperprior"]
    np.save(tmp_path / "batch.npy", _images(2, 11, 9, seed=5))
    assert main(["compress", str(run_dir), str(tmp_path / "batch.npy"), "--device", "cuda",
                 "--out", str(tmp_path / "aec")]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is visible here" in err and "--device cpu" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "aec").exists()
    with pytest.raises(aeopt.AeoptError, match="unknown encoding device 'tpu'"):
        load_codec(run_dir, device="tpu")
    on_cpu = load_codec(run_dir, device="cpu")
    assert on_cpu.encoder() is on_cpu.model


def _hostile(good: bytes, other: bytes) -> dict:
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 4
    future = bytearray(good)
    future[2] = (5 << 4) | (future[2] & 15)
    return {"truncated": (good[:len(good) - 3], "checksum"), "bit-flipped": (bytes(flipped), "checksum"),
            "wrong-magic": (b"\x89PNG" + good[4:], "wrong magic"),
            "zero-length": (b"", "empty"),
            "huge-size": (good[:5] + b"\xff\xff\x03\xff\xff\x03" + good[5:], "damaged or from another model"),
            "future-version": (bytes(future), "format version 5; this aeopt reads versions up to 4"),
            "other-model": (other, "another model")}


def test_cli_hostile_files_exit_2_with_one_line_and_write_nothing(codec_runs, tmp_path, capsys):
    run_f, run_h = codec_runs["factorized"], codec_runs["hyperprior"]
    good = compress(load_codec(run_h), _images(1, 7, 7)[0])
    other = compress(load_codec(run_f), _images(1, 7, 7)[0])
    for name, (data, message) in _hostile(good, other).items():
        path = tmp_path / f"{name}.aec"
        path.write_bytes(data)
        out = tmp_path / f"out-{name}"
        assert main(["decompress", str(path), "--run", str(run_h), "--out", str(out)]) == 2, name
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert not out.exists(), name
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert main(["compress", str(run_h), str(tmp_path / "bad.png"), "--out", str(tmp_path / "c")]) == 2
    assert "cannot read image" in capsys.readouterr().err and not (tmp_path / "c").exists()
    np.save(tmp_path / "rgb.npy", np.zeros((3, 8, 8), np.uint8))
    assert main(["compress", str(run_h), str(tmp_path / "rgb.npy"), "--out", str(tmp_path / "c")]) == 2
    assert "codes grey images" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_cli_trains_a_codec_on_patches_of_images_of_any_sizes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 2)):
        (tmp_path / "photos" / split).mkdir(parents=True)
        for i in range(count):
            h, w = rng.integers(20, 48, size=2)
            Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(tmp_path / "photos" / split / f"{i}.png")
    assert main(["train", "--model", "codec", "--entropy", "hyperprior", "--lmbda", "0.01", "--data",
                 f"images:{tmp_path / 'photos'}", "--patch", "16", "--latent-dim", "4", "--width", "8", "--depth", "2",
                 "--epochs", "1", "--batch-size", "4", "--threads", "1", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert "bytes/image (whole .aec files)" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert metrics["images"] == 2 and metrics["bpp"] > 0
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    assert f"{metrics['bpp']:.4f} bpp" in capsys.readouterr().out


def test_patch_mode_validates_on_larger_crops_and_warns_the_mean_models_off_small_patches(tmp_path):
    from aeopt.codec.train import codec_data, train_codec
    from aeopt.settings import Settings

    rng = np.random.default_rng(0)
    for split, sizes in (("train", [(70, 90)] * 4), ("val", [(300, 400), (280, 500)]), ("test", [(40, 60)])):
        (tmp_path / "photos" / split).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(tmp_path / "photos" / split / f"{i}.png")
    spec = f"images:{tmp_path / 'photos'}"
    config = Settings.from_flat(data=spec, model="codec", patch=32, out=str(tmp_path / "x")).validate()
    _, val, _, _ = codec_data(config, "cpu")
    assert tuple(val.x.shape) == (2, 3, 256, 256)  # VAL_SIDE, not the 32-pixel patch: a photo's inside counts
    lines = []
    flags = dict(model="codec", data=spec, patch=32, latent_dim=4, width=8, depth=2, hyper_width=4, lmbda=0.01,
                 epochs=1, batch_size=4, threads=1, progress=False, log=lines.append)
    train_codec(entropy="meanscale", out=str(tmp_path / "ms"), **flags)
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "--patch 32 is small for --entropy meanscale" in warnings[0]
    assert "use --patch 64 or more" in warnings[0]  # 4 x stride 4 x hyper stride 4: z at least 4x4
    lines.clear()
    train_codec(entropy="hyperprior", out=str(tmp_path / "hp"), **flags)  # the scale-only model: no warning
    assert not [line for line in lines if line.startswith("warning:")]


def test_bf16_encoding_from_the_cli_round_trips_and_an_unknown_precision_is_refused(codec_runs, tmp_path):
    run_dir = codec_runs["factorized"]
    np.save(tmp_path / "batch.npy", np.stack(_digits_test()[:20]))
    assert main(["compress", str(run_dir), str(tmp_path / "batch.npy"), "--precision", "bf16", "--quiet",
                 "--out", str(tmp_path / "aec")]) == 0
    run = load_codec(run_dir)
    decoded = decompress(run, (tmp_path / "aec" / "batch.aec").read_bytes())
    y, _ = encode_latents(run, torch.from_numpy(np.load(tmp_path / "batch.npy")).float() / 255, "bf16")
    x_hat = run.model.synthesise(torch.from_numpy(y).float(), (8, 8))
    expected = torch.round(x_hat * 255).to(torch.uint8).numpy()
    assert np.array_equal(decoded, expected)
    with pytest.raises(aeopt.AeoptError, match="unknown encoding precision 'fp16'; known: fp32, bf16"):
        compress(run, np.stack(_digits_test()[:2]), precision="fp16")
