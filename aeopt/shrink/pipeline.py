"""`aeopt shrink`: distill -> prune -> quantize a trained run into a new run directory.

Each step is measured (test PSNR, params, size on disk) and reported before/after. The new run
directory is built in a hidden folder beside NEW and renamed into place at the end, so a failure
never leaves half a run. It holds:
  config.yaml        the float model's settings; `artifact` records pruned channel counts and, for int8,
                     `format: onnx` plus the ONNX files, so `aeopt.load` / `aeopt evaluate` pick them up
  model.safetensors  the float weights (after distillation and pruning)
  full/encoder/decoder.int8.onnx   the int8 graphs (with --quantize int8)
  metrics.json       evaluation + size_bytes + `before` (the original's figures) + `steps`; the distill
                     step also holds `student_alone` (the same student trained without the teacher)
                     and `gain_db` (distilled minus alone)
  report.md          the steps' figures as a table (aeopt.shrink.report)
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from ..deploy.export import export_all
from ..deploy.inference import load
from ..deploy.quantize import quantize_onnx
from ..errors import AeoptError
from ..data.datasets import in_memory
from ..evaluate import evaluate_model
from ..runs import atomic_write_text, save_config, save_tensors, staged_dir, write_json
from ..train.prepare import load_run_data
from .distill import distill, train_student
from .prune import check_fraction, layer_shapes, prune as prune_model, sparsity
from .report import shrink_report

CALIBRATION_SAMPLES = 512  # enough to pin each activation's min/max; more only slows quantization


def size_bytes(run_dir: Path, artifact: dict) -> int:
    """Bytes of the deployable model file: the int8 full graph, or the float safetensors."""
    onnx = artifact.get("onnx")
    return (run_dir / (onnx["full"] if onnx else "model.safetensors")).stat().st_size


def _quality(model: torch.nn.Module, dataset) -> dict[str, Any]:
    test = evaluate_model(model, dataset, pca=False)["test"]
    tensors = list(model.parameters())  # an int8 ONNX model has none here: its zeros are not counted
    nonzero = sum(int((p != 0).sum()) for p in tensors) if tensors else model.num_params()
    return {"psnr": test["psnr"], "mse": test["mse"], "ssim": test["ssim"], "params": model.num_params(),
            "nonzero_params": nonzero}


def _count(figures: dict[str, Any]) -> str:
    """"26,833 params", or with pruned zeros "26,833 params (13,490 nonzero)": the zeros still count as params."""
    nonzero = figures.get("nonzero_params", figures["params"])
    return f"{figures['params']:,} params" + (f" ({nonzero:,} nonzero)" if nonzero < 0.99 * figures["params"] else "")


def _figures(model: torch.nn.Module, dataset, run_dir: Path, artifact: dict) -> dict[str, Any]:
    return {**_quality(model, dataset), "size_bytes": size_bytes(run_dir, artifact)}


def _write_float(stage: Path, model: torch.nn.Module, config, data_info: dict, artifact: dict) -> None:
    save_config(stage, config, data_info, artifact)
    save_tensors(stage / "model.safetensors", model.state_dict())


def quantize_run(stage: Path, model: torch.nn.Module, config, data_info: dict, artifact: dict,
                 calibration: torch.Tensor, mode: str = "static") -> dict:
    """Export the float model's three graphs, quantize each to int8 and record them in the artifact."""
    float_dir = stage / ".float-onnx"
    float_dir.mkdir()
    files = export_all(model, float_dir)
    with torch.no_grad():
        codes = model.eval()(calibration)["z"]
    inputs = {"full": calibration, "encoder": calibration, "decoder": codes}
    names = {}
    for part, path in files.items():
        names[part] = f"{part}.int8.onnx"
        quantize_onnx(path, stage / names[part], calibration=inputs[part].numpy(), mode=mode)
    shutil.rmtree(float_dir)
    artifact = {**artifact, "format": "onnx", "onnx": names, "quantization": f"int8-{mode}"}
    save_config(stage, config, data_info, artifact)
    return artifact


def shrink(run_dir: str | Path, out: str | Path, *, prune: float | None = None, structured: bool = False,
           quantize: str | None = None, distill_to: str | None = None, rounds: int = 3, finetune_epochs: int | None = None,
           distill_epochs: int | None = None, student_alone: bool = True, quant_mode: str = "static",
           overwrite: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Shrink a trained run into the new run directory `out`; returns its metrics.

    Args:
        run_dir: the trained run.
        out: the new run directory.
        prune: fraction of weights (or, with `structured`, of each layer's channels) to remove.
        structured: remove whole channels (a smaller dense model) instead of single weights.
        quantize: "int8" for post-training int8 through ONNX Runtime.
        distill_to: a student model spec (e.g. "conv:width=8") trained to imitate the run's model.
        rounds, finetune_epochs: the pruning schedule (rounds of prune + fine-tune). By default the rounds
            share as many fine-tuning epochs as the run was trained for: on the digits conv (40 epochs),
            50% unstructured then loses 0.05 dB, where 2 epochs a round lose 1.5 dB
            (benchmarks/results/shrink_unstructured.md).
        distill_epochs: the student's epochs (default: the teacher's).
        student_alone: with `distill_to`, also train the same student without the teacher (same
            epochs, seed and settings) and report it beside the distilled one; False skips that
            second training.
        quant_mode: static | mixed | dynamic (see aeopt.shrink.quantize).
        overwrite: replace an existing `out`.
    """
    if quantize not in (None, "int8"):
        raise AeoptError(f"unknown quantization {quantize!r}; only int8 is supported")
    if prune is not None:
        check_fraction(prune)
    if prune is None and quantize is None and distill_to is None:
        raise AeoptError("nothing to do: pass --prune F, --quantize int8 and/or --distill-to MODEL_SPEC")
    out = Path(out)
    if out.exists() and not overwrite:
        raise AeoptError(f"{out} already exists; pass --overwrite or choose another --out")
    run = load(run_dir, runtime="torch")
    config, data_info, artifact = run.config, run.data_info, dict(run.artifact)
    if artifact.get("format") == "onnx":
        raise AeoptError(f"{run_dir} is already quantized; shrink its float source run instead")
    dataset = load_run_data(config)
    model = run.model
    config = config.replace(out=str(out))
    if finetune_epochs is None:
        finetune_epochs = -(-config.optimization.epochs // rounds)
    before = _figures(model, dataset, Path(run_dir), artifact)
    log(f"before: {before['psnr']:.2f} dB, {_count(before)}, {before['size_bytes'] / 1e6:.3f} MB")
    steps: list[dict[str, Any]] = []
    with staged_dir(out) as stage:
        def measure(step: str, **details) -> dict[str, Any]:
            after = _figures(model, dataset, stage, artifact)
            previous = steps[-1]["after"] if steps else before
            steps.append({"step": step, **details, "before": previous, "after": after})
            log(f"{step}: {previous['psnr']:.2f} -> {after['psnr']:.2f} dB, {_count(previous)} -> {_count(after)}, "
                f"{previous['size_bytes'] / 1e6:.3f} -> {after['size_bytes'] / 1e6:.3f} MB")
            return steps[-1]

        if distill_to:
            teacher_config = config
            model, config = distill(model, teacher_config, dataset, distill_to, epochs=distill_epochs, log=log)
            config = config.replace(out=str(out))
            artifact.pop("channels", None)  # the student is a new model, unpruned
            _write_float(stage, model, config, data_info, artifact)
            step = measure("distill", student=distill_to)
            if student_alone:   # the baseline that shows what the teacher adds
                alone, _ = train_student(teacher_config, distill_to, dataset=dataset, epochs=distill_epochs, log=log)
                step["student_alone"] = _quality(alone, dataset)
                step["gain_db"] = step["after"]["psnr"] - step["student_alone"]["psnr"]
                log(f"student alone: {step['student_alone']['psnr']:.2f} dB; distilled: {step['after']['psnr']:.2f} "
                    f"dB ({step['gain_db']:+.2f} dB); teacher: {before['psnr']:.2f} dB")
        if prune is not None:
            model, channels = prune_model(model, config, dataset, fraction=prune, structured=structured,
                                          rounds=rounds, epochs_per_round=finetune_epochs, log=log)
            if channels:
                artifact["channels"] = channels
            _write_float(stage, model, config, data_info, artifact)
            measure("prune", fraction=prune, structured=structured, sparsity=sparsity(model),
                    layer_shapes=layer_shapes(model))
        if not (stage / "model.safetensors").is_file():
            _write_float(stage, model, config, data_info, artifact)
        if quantize:
            calibration = in_memory(dataset.train_split, CALIBRATION_SAMPLES)
            artifact = quantize_run(stage, model, config, data_info, artifact, calibration, quant_mode)
            model = load(stage).model   # the int8 ONNX Runtime model, as `aeopt.load` will see it
            measure("quantize", mode=quant_mode)
        metrics = evaluate_model(load(stage).model, dataset)
        metrics.update({"params": steps[-1]["after"]["params"], "size_bytes": size_bytes(stage, artifact),
                        "before": before, "steps": steps, "source": str(run_dir),
                        "shrink": {"prune": prune, "structured": structured, "quantize": quantize,
                                   "distill_to": distill_to, "student_alone": bool(distill_to) and student_alone,
                                   "rounds": rounds, "finetune_epochs": finetune_epochs}})
        write_json(stage / "metrics.json", metrics)
        atomic_write_text(stage / "report.md", shrink_report(metrics))
    return metrics
