"""Shrinking: channel surgery, pruning, int8, distillation and the `aeopt shrink` run directory."""
from __future__ import annotations

import json
import math

import pytest
import torch

import aeopt
from aeopt.cli import main
from aeopt.errors import AeoptError
from aeopt.models import create_model
from aeopt.models.channels import channel_counts, keep_channels_
from aeopt.shrink.distill import parse_model_spec
from aeopt.shrink.prune import magnitude_masks, apply_masks_, sparsity

# One thread: these models are tiny, and on a busy 2-core machine a second thread makes each step
# up to 100x slower (every op waits for the descheduled thread).
# NCHW pinned: the distillation gain asserted below was measured so (0.31 dB); where the layout follows
# the CPU (fp32 NHWC without hardware bf16) this tiny student's gain moved to 0.08 dB
SMALL = dict(data="digits", model="conv", width=8, latent_dim=8, batch_size=64, threads=1, seed=0,
             memory_format="contiguous")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "teacher"
    return aeopt.train(epochs=30, out=str(out), progress=False, log=lambda m: None, **SMALL)


@pytest.mark.parametrize("name,shape", [("conv", (1, 28, 28)), ("seed", (1, 28, 28)), ("mlp", (64,))])
def test_channel_surgery_keeps_function_of_kept_channels(name, shape):
    """Removing a channel whose weights are zero must not change the output at all."""
    torch.manual_seed(0)
    model = create_model(name, shape, 8).eval()
    counts = channel_counts(model)
    first = next(iter(counts))
    link_producer = dict(model.named_modules())[first]
    with torch.no_grad():  # silence the last unit of the first link so dropping it is exact
        if isinstance(link_producer, torch.nn.Linear):
            link_producer.weight[-1:].zero_()
            if link_producer.bias is not None:
                link_producer.bias[-1:].zero_()
    x = torch.rand(4, *shape)
    keep = {first: list(range(counts[first] - 1))} if isinstance(link_producer, torch.nn.Linear) else \
        {n: c // 2 for n, c in counts.items()}
    before = model(x)["x_hat"]
    params = model.num_params()
    keep_channels_(model, keep)
    after = model(x)
    assert after["x_hat"].shape == before.shape and after["z"].shape == (4, 8)
    assert model.num_params() < params
    if isinstance(link_producer, torch.nn.Linear) and name == "mlp":
        torch.testing.assert_close(after["x_hat"], before)


def test_magnitude_masks_reach_requested_sparsity():
    model = create_model("conv", (1, 8, 8), 8)
    apply_masks_(model, magnitude_masks(model, 0.7))
    assert sparsity(model) >= 0.7
    assert sparsity(model) < 0.72


def test_parse_model_spec():
    assert parse_model_spec("conv:width=8,depth=1") == ("conv", {"width": 8, "depth": 1})
    assert parse_model_spec("mlp:hidden=64,32,activation=gelu") == ("mlp", {"hidden": "64,32", "activation": "gelu"})
    with pytest.raises(AeoptError, match="unknown setting"):
        parse_model_spec("conv:colour=3")


def test_unstructured_prune_run(trained, tmp_path):
    out = tmp_path / "pruned"
    metrics = aeopt.shrink(trained.path, out, prune=0.6, rounds=2, finetune_epochs=2, log=lambda m: None)
    run = aeopt.load(out)
    assert sparsity(run.model) >= 0.6
    assert metrics["before"]["psnr"] == pytest.approx(trained.metrics["test"]["psnr"], abs=1e-4)
    assert metrics["size_bytes"] > 0 and [s["step"] for s in metrics["steps"]] == ["prune"]
    # fine-tuning recovers much of what pruning cost (measured: 17.26 dB -> 9.10 raw, 13.65 fine-tuned)
    raw = aeopt.shrink(trained.path, tmp_path / "raw", prune=0.6, rounds=2, finetune_epochs=0, log=lambda m: None)
    before, raw_psnr, tuned = metrics["before"]["psnr"], raw["test"]["psnr"], metrics["test"]["psnr"]
    assert raw_psnr < tuned < before
    assert tuned - raw_psnr > 0.4 * (before - raw_psnr)


def test_structured_prune_then_int8(trained, tmp_path):
    out = tmp_path / "small"
    metrics = aeopt.shrink(trained.path, out, prune=0.5, structured=True, quantize="int8", rounds=1,
                           finetune_epochs=2, log=lambda m: None)
    original = trained.model
    float_run = aeopt.load(out, runtime="torch")
    # every prunable layer lost half its channels; the interface (latent, output shape) is unchanged
    for name, units in channel_counts(float_run.model).items():
        assert units == round(channel_counts(original)[name] * 0.5)
    assert float_run.model.num_params() < 0.75 * original.num_params()
    assert float_run.model.encoder[1].weight.shape[0] == 4   # conv 8 -> 4 filters
    # the default load is the int8 ONNX model; evaluate works on it and int8 costs < 0.5 dB here
    run = aeopt.load(out)
    assert type(run.model).__name__ == "OnnxAutoencoder"
    steps = {s["step"]: s for s in metrics["steps"]}
    assert steps["quantize"]["after"]["psnr"] > steps["quantize"]["before"]["psnr"] - 0.5
    # size_bytes is the deployable int8 graph (on this 13 kB model, QDQ scales outweigh the int8 saving;
    # the Fashion-MNIST benchmark shows the saving at realistic sizes)
    assert metrics["size_bytes"] == (out / "full.int8.onnx").stat().st_size
    evaluated = aeopt.evaluate(out)
    assert evaluated["test"]["psnr"] == pytest.approx(metrics["test"]["psnr"], abs=1e-3)
    saved = json.loads((out / "metrics.json").read_text())
    assert "before" in saved and "size_bytes" in saved


def test_distilled_student_beats_student_alone(trained, tmp_path):
    """The pipeline trains the same student (epochs, seed, settings) with and without the teacher and
    reports both. Measured: 13.30 vs 12.99 dB (a 17.3 dB teacher trained 30 epochs; the gain vanishes
    with a weaker teacher, see distill.py)."""
    out = tmp_path / "student"
    metrics = aeopt.shrink(trained.path, out, distill_to="conv:width=4", distill_epochs=10, log=lambda m: None)
    step = metrics["steps"][0]
    distilled, alone = step["after"], step["student_alone"]
    assert step["step"] == "distill" and aeopt.load(out).config.width == 4
    assert distilled["params"] < trained.model.num_params() / 2
    assert alone["params"] == distilled["params"]   # the same architecture
    assert all(math.isfinite(alone[k]) for k in ("psnr", "mse", "ssim")) and 0 < alone["ssim"] < 1
    assert step["gain_db"] == pytest.approx(distilled["psnr"] - alone["psnr"], abs=1e-9)
    assert step["gain_db"] > 0.15
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["steps"][0]["student_alone"] == pytest.approx(alone)
    assert saved["shrink"]["student_alone"] is True and "before" in saved and "size_bytes" in saved
    report = (out / "report.md").read_text()
    for label, figures in (("teacher", step["before"]), ("distilled student", distilled),
                           ("same student trained alone", alone)):
        assert f"{label}" in report and f"{figures['psnr']:.2f}" in report
    assert f"{step['gain_db']:+.2f} dB" in report


def test_distill_without_student_alone(trained, tmp_path, capsys):
    """--no-student-alone skips the second training: no student_alone block, no gain."""
    out = tmp_path / "quick"
    assert main(["shrink", str(trained.path), "--distill-to", "conv:width=4", "--distill-epochs", "1",
                 "--no-student-alone", "--out", str(out)]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert [s["step"] for s in saved["steps"]] == ["distill"]
    assert "student_alone" not in saved["steps"][0] and "gain_db" not in saved["steps"][0]
    assert saved["shrink"]["student_alone"] is False
    assert "trained alone" not in (out / "report.md").read_text()
    assert "student alone" not in capsys.readouterr().out


def test_cli_errors(trained, tmp_path):
    assert main(["shrink", str(trained.path), "--out", str(tmp_path / "x")]) == 2       # nothing to do
    assert main(["shrink", str(trained.path), "--prune", "1.5", "--out", str(tmp_path / "x")]) == 2
    assert main(["shrink", str(tmp_path / "missing"), "--prune", "0.5", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("mode", ["static", "mixed", "dynamic"])
def test_quantize_modes_stay_close_to_float(mode, tmp_path):
    """Every mode writes a loadable int8 graph whose output stays near the float one."""
    import onnx

    from aeopt.deploy.export import export_onnx, onnx_session
    from aeopt.deploy.quantize import quantize_onnx

    torch.manual_seed(0)
    model = create_model("conv", (1, 8, 8), 8, width=8).eval()
    float_path = export_onnx(model, tmp_path / "f.onnx")
    x = torch.rand(64, 1, 8, 8)
    int8_path = quantize_onnx(float_path, tmp_path / "q.onnx", calibration=x.numpy(), mode=mode)
    ops = {node.op_type for node in onnx.load(str(int8_path)).graph.node}
    expected = {"static": "QuantizeLinear", "mixed": "DynamicQuantizeLinear", "dynamic": "DynamicQuantizeLinear"}
    assert expected[mode] in ops
    if mode == "mixed":
        assert "QuantizeLinear" in ops   # convolutions static, linear layers dynamic
    session = onnx_session(int8_path)
    got = session.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        want = model(x)["x_hat"].numpy()
    assert abs(got - want).max() < 0.05 and abs(got - want).max() > 0   # int8, so not bit-exact


def test_unstructured_pruning_pays_on_disk_on_the_digits_conv(tmp_path):
    """The issue's case: `aeopt shrink RUN --prune 0.5` used to keep 18,633 -> 18,633 params in a file of the
    same size and lose 0.67 dB; the zeros are now stored sparse, and the default fine-tuning (the run's
    epochs shared by the rounds) keeps the quality."""
    source = aeopt.train(data="digits", model="conv", epochs=20, threads=1, out=str(tmp_path / "conv"),
                         progress=False, log=lambda m: None)
    dense = (source.path / "model.safetensors").stat().st_size
    pruned = aeopt.shrink(source.path, tmp_path / "pruned", prune=0.5, log=lambda m: None)
    assert pruned["shrink"]["finetune_epochs"] == 7          # 20 epochs over 3 rounds
    assert (tmp_path / "pruned" / "model.safetensors").stat().st_size < 0.6 * dense
    loaded = aeopt.load(tmp_path / "pruned")                 # read back dense, zeros in place
    assert sparsity(loaded.model) >= 0.5
    assert aeopt.evaluate(tmp_path / "pruned")["test"]["psnr"] == pytest.approx(pruned["test"]["psnr"], abs=1e-6)
    both = aeopt.shrink(source.path, tmp_path / "both", prune=0.5, quantize="int8", log=lambda m: None)
    assert dense / both["size_bytes"] >= 2.0
    assert both["test"]["psnr"] >= source.metrics["test"]["psnr"] - 0.5


def test_sparse_tensors_round_trip_exactly_and_damage_is_one_error(tmp_path):
    from aeopt.runs import load_tensors, save_tensors

    weight = torch.randn(40, 30)
    weight[torch.rand_like(weight) < 0.7] = 0
    tensors = {"w": weight, "dense": torch.randn(40, 30), "few": torch.zeros(3)}
    save_tensors(tmp_path / "t.safetensors", tensors)
    back = load_tensors(tmp_path / "t.safetensors")
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    save_file(tensors, tmp_path / "dense.safetensors")
    saved = (tmp_path / "dense.safetensors").stat().st_size - (tmp_path / "t.safetensors").stat().st_size
    assert saved > 0.6 * weight.nbytes      # 70% zeros: the values and a bit mask take about a third
    raw = load_file(tmp_path / "t.safetensors")
    with safe_open(str(tmp_path / "t.safetensors"), "pt") as f:
        metadata = f.metadata()
    raw["w"] = raw["w"][:-1]     # one value short of its mask
    save_file(raw, tmp_path / "bad.safetensors", metadata=metadata)
    with pytest.raises(AeoptError, match="damaged sparse tensors"):
        load_tensors(tmp_path / "bad.safetensors")


def test_shrink_says_the_loss_choice_at_most_once_and_is_quiet_when_asked(trained, tmp_path, capsys):
    """'loss auto -> ...' used to repeat once per fine-tuning round, and `shrink` refused --quiet."""
    messages = []
    aeopt.shrink(trained.path, tmp_path / "a", prune=0.5, rounds=3, finetune_epochs=1, log=messages.append)
    assert sum("loss auto" in m for m in messages) <= 1
    assert sum(m.startswith("prune round") for m in messages) == 3
    assert main(["shrink", str(trained.path), "--prune", "0.5", "--prune-rounds", "2", "--finetune-epochs", "1",
                 "--out", str(tmp_path / "b"), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "prune round" not in printed.out and "loss auto" not in printed.out and printed.err == ""
    assert "run:" in printed.out


def test_a_students_settings_are_the_teachers_without_its_warm_start():
    """A teacher trained with --init RUN: its student (another architecture) must start from random
    weights, not try RUN's (which fit the teacher's init, not the student)."""
    from aeopt.settings import Settings
    from aeopt.shrink.distill import student_config

    teacher = Settings.from_flat(model="conv", width=16, latent_dim=8, lr=1e-3, init="runs/pretrained")
    student = student_config(teacher, "mlp:hidden=32")
    assert student.init is None and student.model == "mlp" and str(student.hidden) == "32" and student.width is None
    assert student.lr == 1e-3 and student.latent_dim == 8
