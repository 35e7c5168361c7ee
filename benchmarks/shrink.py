"""Shrink benchmark: size, params, speed and test PSNR of every deployable form of a trained model.

For each model (Fashion-MNIST, latent 32) the original is trained once and cached under
benchmarks/.cache (git-ignored), then shrunk with `aeopt.shrink`: structured pruning at 30/50/80%
(iterative rounds of prune + fine-tune), int8 of the original, int8 of the 50% pruned model, a
distilled student and, to show what the teacher adds, the same student trained alone (from scratch,
same epochs, seed and settings). Every form of every run (eager fp32 = the baseline, eager bf16,
torch.compile, ONNX Runtime fp32, ONNX Runtime int8) is timed in one process with the same threads,
in several interleaved repeats keeping the best, because the machine is shared. PSNR is measured per
form on the test set, through that form.

Run: python benchmarks/shrink.py [--models conv,seed] (see --help; the results file records the command).
Build one cache entry only (to build several in parallel processes): --only MODEL/LABEL --no-time.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_line  # noqa: E402

import aeopt  # noqa: E402
from aeopt.metrics import psnr  # noqa: E402
from aeopt.deploy.bench import build_forms, time_call  # noqa: E402
from aeopt.shrink.distill import train_student  # noqa: E402
from aeopt.shrink.pipeline import size_bytes  # noqa: E402

CACHE = Path(__file__).parent / ".cache"
RESULTS = Path(__file__).parent / "results" / "shrink.md"
STUDENTS = {"conv": "conv:width=16", "seed": "conv:width=16"}


def training(args, name: str) -> dict:
    limit, epochs = (args.seed_limit, args.seed_epochs) if name == "seed" else (args.limit, args.epochs)
    return dict(data="fashion-mnist", model=name, latent_dim=32, limit=limit, epochs=epochs, patience=None,
                threads=args.train_threads)


def variants(args, name: str) -> dict[str, tuple[str, dict]]:
    """label -> (source run label, aeopt.shrink settings)."""
    rounds, epochs = (1, 1) if name == "seed" else (args.rounds, args.finetune_epochs)
    pruning = dict(structured=True, rounds=rounds, finetune_epochs=epochs)
    longer = dict(pruning, finetune_epochs=2 * epochs)
    seed_skips = {"pruned 30%", "pruned 30% + int8", "pruned 30% x2 ft", "pruned 30% x2 ft + int8"} \
        if name == "seed" else set()   # seed is slow on CPU
    return {label: spec for label, spec in {
            "pruned 30%": ("original", dict(prune=0.3, **pruning)),
            "pruned 50%": ("original", dict(prune=0.5, **pruning)),
            "pruned 80%": ("original", dict(prune=0.8, **pruning)),
            "pruned 30% x2 ft": ("original", dict(prune=0.3, **longer)),   # twice the fine-tuning
            "int8": ("original", dict(quantize="int8")),
            "pruned 50% + int8": ("pruned 50%", dict(quantize="int8")),
            "pruned 30% + int8": ("pruned 30%", dict(quantize="int8")),
            "pruned 30% x2 ft + int8": ("pruned 30% x2 ft", dict(quantize="int8")),
            # student_alone=False: the "student alone" row below is that baseline, kept as a run so it is timed too
            "distilled": ("original", dict(distill_to=STUDENTS[name], distill_epochs=training(args, name)["epochs"],
                                           student_alone=False)),
            }.items() if label not in seed_skips}


def folder(name: str, label: str) -> Path:
    return CACHE / f"{name}-{label}".replace(" ", "_").replace("%", "").replace("+", "and")


def build(args, name: str, label: str) -> Path:
    """The cached run for `label` ("original", "student alone" or a variant), made if missing."""
    out = CACHE / name if label == "original" else folder(name, label)
    if not (out / "metrics.json").is_file():
        if label == "original":
            aeopt.train(out=str(out), overwrite=True, progress=False, **training(args, name))
        elif label == "student alone":   # the distilled student's spec, epochs and seed, without the teacher
            teacher = aeopt.load(build(args, name, "original"), runtime="torch").config
            train_student(teacher, STUDENTS[name], epochs=training(args, name)["epochs"], out=out)
        else:
            source, settings = variants(args, name)[label]
            aeopt.shrink(build(args, name, source), out, overwrite=True, **settings)
    return out


def form_psnr(forward, x: torch.Tensor) -> float:
    errors = torch.cat([((forward(x[i:i + 512]).float() - x[i:i + 512]) ** 2).flatten(1).mean(1)
                        for i in range(0, len(x), 512)])
    return psnr(float(errors.mean()))


def measure(args, name: str) -> list[str]:
    runs = {"original": build(args, name, "original")}
    runs.update({label: build(args, name, label) for label in [*variants(args, name), "student alone"]})
    cfg = training(args, name)
    x_test = aeopt.load_data("fashion-mnist", limit=cfg["limit"]).x_test[:args.test_samples]
    torch.set_num_threads(args.threads)
    forms, info = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in runs.items():
            artifact = aeopt.load(path, runtime="torch").artifact
            is_int8 = bool(artifact.get("onnx"))
            wanted = ("onnx_int8",) if is_int8 else ("eager_fp32", "eager_bf16", "onnx_fp32")
            if label in ("original", "pruned 50%") and not is_int8 and args.compile:
                wanted += ("compiled",)
            work = Path(tmp) / label.replace(" ", "_").replace("%", "")
            work.mkdir()
            params = aeopt.load(path, runtime="torch").model.num_params()
            for form, forward in build_forms(path, work, threads=args.threads, forms=wanted).items():
                forms[(label, form)] = forward
                info[(label, form)] = (size_bytes(path, artifact), params, form_psnr(forward, x_test))
        big, one = torch.rand(256, 1, 28, 28), torch.rand(1, 1, 28, 28)
        best: dict = {}
        for _ in range(args.repeats):   # interleaved repeats: each form sees the same load, the best is kept
            for key, forward in forms.items():
                t_big = time_call(forward, big, min_seconds=args.seconds)
                t_one = time_call(forward, one, min_seconds=args.seconds / 2)
                old = best.get(key, (1e9, 1e9))
                best[key] = (min(old[0], t_big), min(old[1], t_one))
    base_key = ("original", "eager_fp32")
    base_size, base_psnr, base_time = info[base_key][0], info[base_key][2], best[base_key][0]
    lines = [f"\n## {name} (Fashion-MNIST, latent 32; original trained {cfg['epochs']} epochs on "
             f"{cfg['limit']} samples)\n",
             "| run | form | size MB | smaller vs orig | params | batch-1 ms | batch-256 samples/s | "
             "throughput vs eager fp32 | test PSNR dB | dB vs orig |", "|" + "---|" * 10]
    for (label, form), (size, params, quality) in info.items():
        t_big, t_one = best[(label, form)]
        lines.append(f"| {label} | {form} | {size / 1e6:.3f} | {base_size / size:.2f}x | {params:,} | "
                     f"{t_one * 1e3:.2f} | {256 / t_big:.0f} | {base_time / t_big:.2f}x | {quality:.2f} | "
                     f"{quality - base_psnr:+.2f} |")
    print("\n".join(lines), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="conv,seed")
    parser.add_argument("--limit", type=int, default=12000, help="conv training samples")
    parser.add_argument("--epochs", type=int, default=12, help="conv training epochs")
    parser.add_argument("--seed-limit", type=int, default=12000)
    parser.add_argument("--seed-epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="pruning rounds (conv; seed uses 1)")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="fine-tuning epochs per round (conv; seed 1)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every timed form")
    parser.add_argument("--train-threads", type=int, default=2,
                        help="training threads (1: on a busy 2-core machine a second thread slows steps)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--test-samples", type=int, default=2000, help="test images for each form's PSNR")
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum timing per form and repeat")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to build)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the Markdown results file")
    parser.add_argument("--only", help="MODEL/LABEL: build that cache entry only")
    parser.add_argument("--no-time", action="store_true")
    args = parser.parse_args()
    if args.only:
        name, label = args.only.split("/", 1)
        print(build(args, name, label))
        return
    lines = []
    for name in args.models.split(","):
        lines += measure(args, name)
    command = "python benchmarks/shrink.py " + " ".join(sys.argv[1:])
    header = ["# Shrink benchmark", "",
              f"Machine: {machine_line()} at the end; every form timed with {args.threads} threads, all forms of "
              f"a model in one process, interleaved, {args.repeats} repeats, best kept: compare ratios within a "
              "table.", "",
              f"Command: `{command}` (pruning: structured, iterative; conv {args.rounds} rounds x "
              f"{args.finetune_epochs} fine-tuning epochs, seed 1 x 1; int8: ONNX Runtime static QDQ, 512 "
              "calibration samples; distilled: the student trained on the teacher's reconstructions, alpha 0.7, "
              "as many epochs as the original; student alone: the same student spec, epochs and seed trained "
              "on the data only). Size = the deployable file (float safetensors, or the int8 "
              f"full graph). PSNR is measured through each form on the first {args.test_samples} test images "
              "(so the original's figure differs slightly from its metrics.json, which uses all 10,000)."]
    args.out.write_text("\n".join(header + lines) + "\n")


if __name__ == "__main__":
    main()
