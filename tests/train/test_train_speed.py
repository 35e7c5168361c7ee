"""The trainer's fast path, the learning-rate range test and the gradient health monitor."""
from __future__ import annotations

import importlib
import json
import math
import platform
import resource

import pytest
import torch

from aeopt.cli import main
from aeopt.settings import TrainConfig
from aeopt.data import load_data
from aeopt.errors import AeoptError
from aeopt.train.grad_monitor import GradMonitor
from aeopt.train.lr_find import lr_find
from aeopt.models import create_model
from aeopt.kernels.memory import keep_freed_memory
from aeopt.train.precision import CompiledForward, native_bf16, resolve_precision, use_channels_last
from aeopt.train.throughput import throughput
from aeopt.train import TrainingDiverged, train

# threads=1: the suite shares 2 cores with other jobs, where a second OpenMP thread only stalls (see speed.py)
SMALL = dict(data="digits", model="mlp", hidden="64", latent_dim=8, batch_size=64, patience=None, threads=1)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", seed=0)


def test_bf16_reaches_the_fp32_test_mse_within_5_percent(tmp_path, digits):
    mse = {}
    for precision in ("fp32", "bf16"):
        result = train(dataset=digits, **SMALL, epochs=8, precision=precision, out=str(tmp_path / precision),
                       progress=False, log=lambda m: None)
        assert result.metrics["precision"] == precision
        mse[precision] = result.metrics["test"]["mse"]
    assert abs(mse["bf16"] - mse["fp32"]) / mse["fp32"] < 0.05, mse
    assert mse["fp32"] < 0.06  # it learned: the mean image alone scores ~0.1


def test_metrics_report_throughput_against_the_measured_peak(tmp_path, digits):
    result = train(dataset=digits, **SMALL, epochs=1, out=str(tmp_path / "run"), progress=False, log=lambda m: None)
    metrics = json.loads((result.path / "metrics.json").read_text())
    for key in ("samples_per_second", "train_seconds", "params", "train_flops_per_sample", "test", "pca"):
        assert key in metrics
    assert metrics["peak_gflops"] > 0
    assert metrics["gflops_per_second"] == pytest.approx(
        metrics["samples_per_second"] * metrics["train_flops_per_sample"] / 1e9)
    assert metrics["fraction_of_peak"] == pytest.approx(metrics["gflops_per_second"] / metrics["peak_gflops"])
    header = (result.path / "history.csv").read_text().splitlines()[0].split(",")
    assert "grad_norm" in header and "grad/encoder.1" in header


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")
def test_a_training_steps_tensors_reuse_freed_memory_without_page_faults():
    assert keep_freed_memory()
    torch.set_num_threads(1)
    model = create_model("seed", (1, 28, 28), 8).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), foreach=True)
    x = torch.rand(64, 1, 28, 28).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x)["logits"].float(), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):  # the heap grows to fit the step
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    assert faults < 1500  # with glibc's defaults ~5,000-7,000 page faults per step (measured alone)


def test_throughput_arithmetic():
    speed = throughput(1000, 2.0, 4_000_000, peak=10.0)
    assert speed == {"samples_per_second": 500.0, "gflops_per_second": 2.0, "peak_gflops": 10.0,
                     "fraction_of_peak": 0.2}


def test_precision_choice():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu, 10**9) == "fp32"
    assert resolve_precision("auto", cpu, 1000) == "fp32"  # tiny models: casts cost more than they save
    assert resolve_precision("auto", cpu, 1000, conv=True) == "fp32"
    assert resolve_precision("auto", cpu, 5 * 10**6) == "fp32"     # an MLP of this size gains nothing
    with pytest.raises(AeoptError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu, 1000)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_takes_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    precision = importlib.import_module("aeopt.train.precision")  # aeopt.train is also the function
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    # a conv of this size gains from bf16 (channels-last) where the hardware computes it, loses where emulated
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, 5 * 10**6, conv=True) == ("bf16" if native else "fp32")
    # and fp32 convs run NHWC where bf16 is emulated (faster there), NCHW where it is native (faster there)
    conv, mlp = create_model("conv", (1, 28, 28), 8), create_model("mlp", (784,), 8)
    assert use_channels_last(cpu, conv, "fp32") is not native and use_channels_last(cpu, conv, "bf16")
    assert not use_channels_last(cpu, mlp, "fp32")


@pytest.mark.parametrize("onednn, avx512_bf16, amx, native", [
    (True, False, False, False),  # AVX-512 without BF16 (Skylake-SP .. Ice Lake): oneDNN emulates it
    (True, True, False, True), (True, False, True, True), (False, True, True, False)])
def test_native_bf16_is_the_hardware_not_onednns_emulation(monkeypatch, onednn, avx512_bf16, amx, native):
    from aeopt.train.precision import native_bf16

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert native_bf16() is native
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert native_bf16() is onednn  # a torch without the probes: oneDNN's word, as before


def test_memory_format_choice_and_a_channels_last_run(tmp_path, digits):
    from aeopt.models import create_model

    conv, mlp = create_model("conv", (1, 8, 8), 8), create_model("mlp", (64,), 8)
    cpu = torch.device("cpu")
    assert use_channels_last(cpu, conv, "bf16")
    assert use_channels_last(cpu, conv, "fp32") is not native_bf16()  # fp32 NHWC only where it measured faster
    assert not use_channels_last(cpu, mlp, "bf16")
    assert use_channels_last(cpu, conv, "fp32", "channels_last")
    assert not use_channels_last(cpu, conv, "bf16", "contiguous")
    mse = {}
    for layout in ("contiguous", "channels_last"):
        result = train(dataset=digits, data="digits", model="conv", latent_dim=8, batch_size=64, epochs=3,
                       patience=None, threads=1, memory_format=layout, out=str(tmp_path / layout), progress=False,
                       log=lambda m: None)
        assert result.metrics["memory_format"] == layout
        mse[layout] = result.metrics["test"]["mse"]
    assert mse["channels_last"] == pytest.approx(mse["contiguous"], rel=0.02), mse   # same maths, other kernels
    assert main(["train", "--data", "digits", "--memory-format", "nhwc", "--out", str(tmp_path / "bad")]) == 2


def test_compile_failure_falls_back_to_eager_with_a_message(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    messages = []
    model = torch.nn.Linear(3, 2)
    forward = CompiledForward(model, messages.append)
    x = torch.ones(1, 3)
    assert torch.equal(forward(x), model(x))
    assert len(messages) == 1 and "eager" in messages[0] and "no C compiler" in messages[0]


def test_lr_finder_picks_a_rate_inside_the_sweep_and_plots_it(tmp_path, digits):
    finding = lr_find(dataset=digits, **SMALL, out=str(tmp_path / "sweep"), min_lr=1e-5, max_lr=10.0, steps=40,
                      log=lambda m: None)
    assert 1e-5 <= finding.lr <= 10.0
    assert finding.lr == pytest.approx(min(max(finding.lr_at_minimum / 10, 1e-5), 10.0))
    assert finding.lr_at_minimum in finding.lrs
    assert finding.plot.is_file() and finding.plot.stat().st_size > 1000
    assert (tmp_path / "sweep" / "lr_find.csv").read_text().startswith("lr,smoothed_loss\n")


def test_lr_auto_trains_with_the_found_rate(tmp_path, digits):
    result = train(dataset=digits, **SMALL, epochs=1, lr="auto", out=str(tmp_path / "run"), progress=False,
                   log=lambda m: None)
    assert (result.path / "lr_find.png").is_file()
    saved = (result.path / "config.yaml").read_text()
    lr_line = next(line for line in saved.splitlines() if line.startswith("lr:"))
    assert 1e-6 <= float(lr_line.split(":")[1]) <= 1.0  # the number is saved, so --resume needs no sweep


def test_lr_flag_accepts_auto_and_numbers_and_rejects_words(tmp_path, capsys):
    assert TrainConfig(lr="1e-3").validate().lr == 1e-3  # YAML reads 1e-3 as text
    assert TrainConfig(lr="AUTO").validate().lr == "auto"
    assert main(["train", "--lr", "fast", "--out", str(tmp_path / "x")]) == 2
    assert "--lr must be a positive number" in capsys.readouterr().err


def test_exploding_gradients_warn_and_clipping_keeps_the_loss_finite(tmp_path, digits):
    huge = dict(SMALL, optimizer="sgd", lr=50.0, schedule="constant", epochs=2, progress=False)
    messages = []
    with pytest.raises(TrainingDiverged):
        train(dataset=digits, **huge, out=str(tmp_path / "wild"), log=messages.append)
    assert any(m.startswith("warning: exploding gradients") and "--clip-grad" in m for m in messages), messages
    clipped = train(dataset=digits, **huge, clip_grad=1.0, out=str(tmp_path / "clipped"), log=lambda m: None)
    assert all(math.isfinite(row["train_loss"]) for row in clipped.history)


def test_monitor_flags_vanishing_layers_once():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    model[1].weight.grad.fill_(0.01)
    messages = []
    monitor = GradMonitor(model, messages.append)
    monitor.sample()
    monitor.sample()
    assert len(messages) == 1 and "vanishing" in messages[0] and "0 (" in messages[0] and "1 (" not in messages[0]
    summary = monitor.epoch_summary()
    assert summary["grad/0"] == 0.0 and summary["grad/1"] == pytest.approx(0.01 * math.sqrt(8), rel=1e-5)


def test_monitor_does_not_call_a_zero_started_layer_exploding_but_still_reports_nan():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    torch.nn.init.zeros_(model[1].weight)  # a residual branch's last layer: starts as a no-op
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.1)
    messages = []
    monitor = GradMonitor(model, messages.append)
    model[1].weight.data.fill_(1e-6)  # one step later: tiny weights, a healthy gradient, ratio ~1e5
    monitor.sample()
    assert messages == []
    model[0].weight.data.fill_(1e-6)  # the same ratio on a layer that did not start at zero is flagged
    monitor.sample()
    assert len(messages) == 1 and "exploding" in messages[0] and "0 (" in messages[0] and "1 (" not in messages[0]
    monitor.warned.clear()
    messages.clear()
    model[1].weight.grad[0, 0] = float("nan")
    monitor.sample()
    assert len(messages) == 1 and "1 (gradient norm nan)" in messages[0]


def test_tensor_learning_rates_for_cuda_graphs_are_filled_in_place_and_saved_as_numbers():
    from aeopt.train.optim import build_optimizer, plain_lr, set_lr

    optimizer = build_optimizer("adamw", torch.nn.Linear(3, 2), lr=1e-3)
    rates = [torch.tensor(1e-3) for _ in optimizer.param_groups]
    for group, rate in zip(optimizer.param_groups, rates):
        group["lr"] = rate
    set_lr(optimizer, 5e-4)
    assert all(group["lr"] is rate and float(rate) == pytest.approx(5e-4)   # same tensor: a graph reads it
               for group, rate in zip(optimizer.param_groups, rates))
    saved = plain_lr(optimizer.state_dict())
    assert all(type(group["lr"]) is float for group in saved["param_groups"])
    assert all(group["lr"] is rate for group, rate in zip(optimizer.param_groups, rates))  # optimizer untouched


def test_cuda_graph_only_where_the_step_allows_it(digits, tmp_path):
    from types import SimpleNamespace

    from aeopt.train.cuda_graph import graph_reason
    from aeopt.models import create_model

    model = create_model("conv", (1, 8, 8), 4)
    def objective_of(model, **settings):
        return model.objective(TrainConfig(**settings), in_unit_range=True, steps_per_epoch=10)

    plain = dict(device=torch.device("cuda"), precision="bf16", extra_steps={}, objective=objective_of(model),
                 model=model, config=TrainConfig(optimizer="adamw"))
    assert graph_reason(SimpleNamespace(**plain)) is None
    aae = create_model("aae", (1, 8, 8), 4)
    changes = {"device": torch.device("cpu"), "precision": "fp16", "config": TrainConfig(cuda_graph=False),
               "objective": objective_of(model, noise="gaussian:0.1"),
               "extra_steps": objective_of(aae).extra_steps(aae)}
    assert objective_of(create_model("vae", (1, 8, 8), 4)).graph_reason is not None  # logs its loss parts
    for key, value in changes.items():
        assert graph_reason(SimpleNamespace(**{**plain, key: value})) is not None, key
    assert graph_reason(SimpleNamespace(**{**plain, "config": TrainConfig(optimizer="sgd")})) is not None
    result = train(dataset=digits, model="mlp", hidden="16", latent_dim=4, epochs=1, out=str(tmp_path / "cpu"),
                   progress=False, log=lambda m: None, device="cpu")
    assert result.metrics["cuda_graph"] is False


def test_a_resumed_channels_last_run_keeps_its_optimizer_state_in_the_kernels_layout(tmp_path, digits):
    # Checkpoints store tensors contiguous; fused Adam (CUDA) refuses moments whose strides differ from
    # their channels_last kernels', so resuming must restore the layout.
    settings = dict(dataset=digits, model="conv", latent_dim=4, width=8, epochs=1, memory_format="channels_last",
                    progress=False, log=lambda m: None)
    train(**settings, out=str(tmp_path / "run"))
    checked = []

    def check(trainer) -> None:  # after the resume has loaded, before training (fit hands back NCHW after)
        optimizer = trainer.optimizer
        kernels = [p for p in optimizer.state if p.dim() == 4]
        assert any(p.stride() != p.contiguous().stride() for p in kernels)  # really channels_last
        for p in kernels:
            assert all(v.stride() == p.stride() for v in optimizer.state[p].values() if v.shape == p.shape)
        checked.append(len(kernels))

    train(resume=str(tmp_path / "run"), dataset=digits, epochs=2, progress=False, log=lambda m: None, setup=check)
    assert checked and checked[0] > 0
