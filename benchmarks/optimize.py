"""Benchmark: `aeopt optimize` on Fashion-MNIST (latent 32) vs PCA-32 and the seed architecture.

Protocol: the search gets --budget of wall time (search + retraining its front); the seed
architecture is then trained by aeopt (same trainer, default recipe) for the same wall time.
Targets: a front member with <= 5% of the seed's training FLOPs per sample beats the seed's
test MSE; the best member beats PCA-32 by >= 4 dB.

    python benchmarks/optimize.py --budget 15m          # the full protocol
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_line  # noqa: E402

import aeopt  # noqa: E402
from aeopt.evaluate import pca_reconstruction, reconstruct  # noqa: E402
from aeopt.metrics import psnr  # noqa: E402
from aeopt.optimize.objectives import parse_objectives  # noqa: E402
from aeopt.optimize.pareto import trial_rows  # noqa: E402
from aeopt.optimize.report import plot_front  # noqa: E402
from aeopt.optimize.api import SEARCH_SHARE  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402
from aeopt.optimize.retrain import BEST_SHARE, LEAD_SHARE  # noqa: E402
from aeopt.optimize.search import parse_budget  # noqa: E402
from aeopt.optimize.space import describe  # noqa: E402
from aeopt.train import OnEpochEnd  # noqa: E402


def train_seed_for(seconds: float, dataset, latent_dim: int, out: Path, threads: int, device: str):
    """The seed architecture, trained by aeopt's default recipe for `seconds` of wall time."""
    # The probe's rate sets the epochs; on a GPU a short probe is all start-up, so it takes a full epoch there.
    probe_data = _head(dataset, 2048 if device == "cpu" else len(dataset.x_train))
    probe = aeopt.train(model="seed", data="fashion-mnist", latent_dim=latent_dim, epochs=1, limit=None,
                        dataset=probe_data, out=str(out) + "-probe", overwrite=True, progress=False,
                        threads=threads, device=device, log=lambda m: None)
    rate = probe.metrics["samples_per_second"]
    epochs = max(1, int(seconds * rate / len(dataset.x_train)))
    deadline = time.time() + seconds

    def stop_at_deadline(loop, row):
        if time.time() > deadline:  # end the loop gracefully: train() still evaluates and reports
            loop.stop = True

    return aeopt.train(model="seed", data="fashion-mnist", latent_dim=latent_dim, epochs=epochs, patience=None,
                       dataset=dataset, out=str(out), overwrite=True, progress=False, threads=threads,
                       device=device, callbacks=[OnEpochEnd(stop_at_deadline)], log=lambda m: None)


def _head(dataset, n):
    import dataclasses

    return dataclasses.replace(dataset, x_train=dataset.x_train[:n], y_train=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="15m")
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--subset", type=int, default=5000, help="training samples per search trial")
    parser.add_argument("--epochs", type=int, default=9, help="most epochs per search trial")
    parser.add_argument("--max-front", type=int, default=4, help="most front members to retrain")
    parser.add_argument("--out", default="runs/bench-optimize")
    parser.add_argument("--results", default="benchmarks/results")
    parser.add_argument("--name", default="optimize", help="result files: NAME.md and NAME.png")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--data-dir", help="folder holding fashion-mnist's IDX files (default: the system's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    info = machine_line()
    print(info, flush=True)
    dataset = aeopt.load_data("fashion-mnist", data_dir=args.data_dir)
    out = Path(args.out)
    goals = parse_objectives("mse,flops")

    started = time.time()
    result = aeopt.optimize(dataset, out=out / "search", objectives="mse,flops", budget=args.budget,
                            latent_dim=args.latent_dim, epochs=args.epochs, subset=args.subset,
                            max_front=args.max_front, threads=args.threads, device=args.device, progress=False)
    optimize_seconds = time.time() - started
    load_after_search = os.getloadavg()[0]
    print(f"optimize took {optimize_seconds:.0f} s (budget {parse_budget(args.budget):.0f} s)", flush=True)

    seed = train_seed_for(optimize_seconds, dataset, args.latent_dim, out / "seed", args.threads, args.device)
    sm = seed.metrics
    seed_flops = sm["train_flops_per_sample"]
    seed_val = float((reconstruct(seed.model, dataset.x_val, device=args.device) - dataset.x_val).square().mean())
    pca = sm["pca"]
    print(f"seed: test mse {sm['test']['mse']:.5f} after {sm['epochs']} epochs in {sm['train_seconds']:.0f} s",
          flush=True)

    front = result.front
    best = min(front, key=lambda m: m["test_mse"])
    small = [m for m in front if m["train_flops_per_sample"] <= 0.05 * seed_flops]
    small_best = min(small, key=lambda m: m["test_mse"]) if small else None
    target1 = small_best is not None and small_best["test_mse"] < sm["test"]["mse"]
    gain = best["test_psnr"] - pca["psnr"]
    target2 = gain >= 4.0
    counts = result.study.get_trials(deepcopy=False)
    states = [t.state.name.lower() for t in counts]
    skipped = "; ".join(f"trial {m['trial']} ({', '.join(m['reasons'])}): {m['why']}" for m in result.skipped)

    rows = ["| model | val MSE | test MSE | test PSNR dB | vs PCA-32 dB | train MFLOP/sample | % of seed FLOPs "
            "| params | epochs (full data) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in front + result.dropped:
        where = "front" if m in front else "dominated after retraining"
        rows.append(f"| {where} trial {m['trial']} ({m['picked_as']}): {describe(m['settings']).replace('|', '/')} "
                    f"| {m['mse']:.5f} | {m['test_mse']:.5f} | {m['test_psnr']:.2f} | "
                    f"{m['test_psnr'] - pca['psnr']:+.2f} | {m['train_flops_per_sample'] / 1e6:.2f} | "
                    f"{100 * m['train_flops_per_sample'] / seed_flops:.1f}% | "
                    f"{m['params']:,} | {m['epochs']} of {m['planned_epochs']} |")
    rows.append(f"| seed architecture, {sm['train_seconds']:.0f} s of training (aim: {optimize_seconds:.0f} s) | "
                f"{seed_val:.5f} | {sm['test']['mse']:.5f} | "
                f"{sm['test']['psnr']:.2f} | {sm['test']['psnr'] - pca['psnr']:+.2f} | {seed_flops / 1e6:.1f} | 100% | "
                f"{sm['params']:,} | {sm['epochs']} |")
    rows.append(f"| PCA-{args.latent_dim} | | {pca['mse']:.5f} | {pca['psnr']:.2f} | 0 | | | | |")
    ratio = (f"test MSE {small_best['test_mse']:.5f} vs the seed's {sm['test']['mse']:.5f} "
             f"({sm['test']['mse'] / small_best['test_mse']:.2f}x the seed's error ratio) at "
             f"{100 * small_best['train_flops_per_sample'] / seed_flops:.1f}% of its FLOPs") if small_best else "none"
    text = "\n".join([
        "# Benchmark: aeopt optimize (Fashion-MNIST, latent 32)", "",
        f"Command: `python benchmarks/optimize.py --budget {args.budget} --subset {args.subset} --epochs {args.epochs} "
        f"--max-front {args.max_front} --threads {args.threads}"
        + (f" --device {args.device}" if args.device != "cpu" else "") + "`", "",
        f"Machine: {info}; load average {load_after_search:.1f} when the search ended and "
        f"{os.getloadavg()[0]:.1f} at the end (the run's own {args.threads} threads make about {args.threads}; "
        "more means other jobs shared the machine and the timings are slower and noisier).", "",
        f"`aeopt.optimize` took {optimize_seconds:.0f} s for a {args.budget} budget ({SEARCH_SHARE:.0%} search, "
        f"then chosen front members retrained on all {len(dataset.x_train)} training images, cheapest first, "
        f"the best-error one last with {BEST_SHARE}x the epochs, the recommended one {LEAD_SHARE}x). Search: {len(counts)} "
        f"trials ({states.count('complete')} complete, {states.count('pruned')} stopped early) on {args.subset} "
        f"samples, at most {args.epochs} epochs each. The seed architecture was then trained by aeopt (default "
        "recipe: bce, adamw 3e-3, cosine) for the same wall time.", "",
        *rows, "",
        f"- Target 1 (a front member with <= 5% of the seed's {seed_flops / 1e6:.0f} MFLOP/sample beats its test MSE): "
        f"**{'met' if target1 else 'not met'}**; best such member: {ratio}.",
        f"- Target 2 (best member >= 4 dB over PCA-32, test MSE <= 0.0060): **{'met' if target2 else 'not met'}** "
        f"({best['test_psnr']:.2f} dB vs {pca['psnr']:.2f} dB: {gain:+.2f} dB, test MSE {best['test_mse']:.5f}).",
        *([f"- Not retrained within the budget: {skipped}."] if skipped else []),
        "", f"![front]({args.name}.png)", ""])
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results / f"{args.name}.md", text)
    pca_val = float((pca_reconstruction(dataset, args.latent_dim, dataset.x_val) - dataset.x_val).square().mean())
    references = [{"name": f"PCA-{args.latent_dim}", "mse": pca_val, "color": "C3"},
        {"name": "seed architecture (same wall time)", "mse": seed_val, "train_flops_per_sample": seed_flops,
         "color": "C1"}]
    plot_front(results / f"{args.name}.png", trial_rows(result.study, goals), front, goals, references)
    print(text, flush=True)
    print(f"PSNR gain over PCA: {gain:+.2f} dB; seed/front test MSE ratio: {ratio}; seed PSNR "
          f"{psnr(sm['test']['mse']):.2f}")


if __name__ == "__main__":
    main()
