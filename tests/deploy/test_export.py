"""ONNX export: parity with torch, dynamic batch, ONNX Runtime encode/decode."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import aeopt
from aeopt.cli import main
from aeopt.errors import AeoptError
from aeopt.models import create_model
from aeopt.deploy.export import check_parity, export_onnx


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    aeopt.train(data="digits", width=8, latent_dim=8, epochs=2, threads=1, out=str(out), progress=False,
                log=lambda m: None)
    return out


@pytest.mark.parametrize("part", ["full", "encoder", "decoder"])
def test_cli_export_parity_and_dynamic_batch(run_dir, tmp_path, capsys, part):
    path = tmp_path / f"{part}.onnx"
    assert main(["export", str(run_dir), "--onnx", str(path), "--part", part]) == 0
    diff = float(capsys.readouterr().out.split("max abs diff ")[1].split()[0])
    assert diff <= 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch_dim = session.get_inputs()[0].shape[0]
    assert isinstance(batch_dim, str)  # symbolic: any batch size
    model = aeopt.load(run_dir).model
    for batch in (1, 7, 33):
        x = torch.rand(batch, 8) if part == "decoder" else torch.rand(batch, 1, 8, 8)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = {"full": lambda: model(x)["x_hat"], "encoder": lambda: model.encode(x),
                    "decoder": lambda: model.decode(x)}[part]()
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


def test_seed_model_exports_within_tolerance(tmp_path):
    model = create_model("seed", (1, 28, 28), 16).eval()
    path = export_onnx(model, tmp_path / "seed.onnx")
    assert check_parity(model, path) <= 1e-4


def test_parity_failure_is_loud(tmp_path):
    model = create_model("conv", (1, 8, 8), 4, width=4).eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    with torch.no_grad():
        model.decoder[-2].bias.add_(0.5)  # the file no longer matches the model
    with pytest.raises(AeoptError, match="parity check failed"):
        check_parity(model, path)


def test_encode_decode_through_onnx_runtime(run_dir, tmp_path):
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    for runtime in ("torch", "onnx"):
        assert main(["encode", str(run_dir), str(tmp_path / "x.npy"), str(tmp_path / f"z_{runtime}.npy"),
                     "--runtime", runtime]) == 0
        assert main(["decode", str(run_dir), str(tmp_path / f"z_{runtime}.npy"), str(tmp_path / f"r_{runtime}.npy"),
                     "--runtime", runtime]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "z_onnx.npy"), np.load(tmp_path / "z_torch.npy"), atol=1e-4)
    np.testing.assert_allclose(np.load(tmp_path / "r_onnx.npy"), np.load(tmp_path / "r_torch.npy"), atol=1e-4)
    assert np.load(tmp_path / "r_onnx.npy").shape == x.shape


def test_bench_writes_json(run_dir):
    report = aeopt.bench(run_dir, forms=("eager_fp32", "onnx_fp32", "onnx_int8"), big_batch=16, min_seconds=0.05,
                         log=lambda m: None)
    assert (run_dir / "bench.json").is_file()
    for row in report["forms"].values():
        assert row["batch1_latency_ms"] > 0 and row["batch16_samples_per_s"] > 0


@pytest.mark.parametrize("name", ["conv", "seed"])
def test_fold_batchnorm_keeps_the_function_with_fewer_norms(name):
    from aeopt.deploy.fuse import fold_batchnorm

    torch.manual_seed(0)
    model = create_model(name, (1, 28, 28), 8)
    model.train()
    with torch.no_grad():   # non-trivial running statistics, so a wrong fold shows
        for _ in range(3):
            model(torch.rand(16, 1, 28, 28))
    model.eval()
    folded = fold_batchnorm(model)
    norms = lambda m: sum(isinstance(x, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for x in m.modules())
    # conv: norm right after each conv -> all folded; seed: activation before norm -> none folded
    assert norms(folded) == (0 if name == "conv" else norms(model)) and norms(model) > 0
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(folded(x)["x_hat"], model(x)["x_hat"], atol=1e-5, rtol=0)


def test_export_says_nothing_about_choices_made_on_purpose(run_dir, tmp_path):
    """Export used to print PyTorch's TracerWarning (PadTo's constant padding decision, with a source line) and
    the legacy-exporter DeprecationWarning: neither is anything the user can act on."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(aeopt.load(run_dir).model, tmp_path / "m.onnx")
    assert [str(w.message)[:80] for w in caught] == []
    assert (tmp_path / "m.onnx").stat().st_size > 0
