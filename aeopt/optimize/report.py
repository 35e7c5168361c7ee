"""pareto.png (error vs cost, every trial, the front, PCA and the seed architecture) and report.md."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..evaluate.figures import pyplot
from ..runs import atomic_write_bytes, atomic_write_text
from .objectives import COST_KEYS, COSTS, Objectives
from .space import describe

COST_LABELS = {"params": "parameters", "flops": "training FLOPs per sample", "latency": "latency per sample (us)"}


def recommend(front: list[dict[str, Any]], objectives: Objectives, tolerance: float) -> dict[str, Any]:
    """The cheapest member (first cost) whose validation error is within `tolerance` of the best."""
    best = min(m[objectives.error] for m in front)
    within = [m for m in front if m[objectives.error] <= best * (1 + tolerance)]
    return min(within, key=lambda m: m[COST_KEYS[objectives.costs[0]]])


def plot_front(path: Path, trials: list[dict[str, Any]], front: list[dict[str, Any]], objectives: Objectives,
               references: list[dict[str, Any]]) -> None:
    """Error vs the first cost (log scale): search trials, the retrained front, reference points."""
    import io

    plt = pyplot()

    error, cost_key = objectives.error, COST_KEYS[objectives.costs[0]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    searched = [t for t in trials if t.get(f"value_{error}") is not None]
    ax.scatter([t[cost_key] for t in searched], [t[f"value_{error}"] for t in searched], s=12, c="0.7",
               label="search trials (short training, subset)")
    points = sorted((m[cost_key], m[error]) for m in front)
    ax.plot([p[0] for p in points], [p[1] for p in points], "o-", c="C0", label="Pareto front (retrained)")
    for ref in references:
        if ref.get(error) is None:
            continue
        if ref.get(cost_key) is None:
            ax.axhline(ref[error], ls="--", c=ref.get("color", "C3"), label=ref["name"])
        else:
            ax.scatter([ref[cost_key]], [ref[error]], marker="*", s=120, c=ref.get("color", "C1"), label=ref["name"])
    for ref in references:  # a reference with a cost but no error: its cost as a vertical line
        if ref.get(error) is None and ref.get(cost_key) is not None:
            ax.axvline(ref[cost_key], ls=":", c=ref.get("color", "C1"), label=f"{ref['name']} (cost only)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(COST_LABELS[objectives.costs[0]])
    ax.set_ylabel(f"validation {error}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def write_report(path: Path, *, data: str, objectives: Objectives, front: list[dict[str, Any]],
                 dropped: list[dict[str, Any]], counts: dict[str, int], plan_text: str, tolerance: float,
                 references: list[dict[str, Any]], seconds: dict[str, float],
                 skipped: list[dict[str, Any]] = ()) -> None:
    """report.md: what was searched and how, the front as a table, and the recommendation."""
    pick = recommend(front, objectives, tolerance)
    error = objectives.error
    lines = [
        f"# aeopt optimize: {data}", "",
        f"Objectives (all minimized): validation {error} vs "
        f"{' and '.join(COSTS[c] for c in objectives.costs)}.", "",
        f"Trials: {counts['total']} in the study ({counts['complete']} complete, {counts['pruned']} stopped early, "
        f"{counts['failed']} failed, {counts['running']} running or interrupted).",
        f"Search time {seconds['search']:.0f} s, retraining the front {seconds['retrain']:.0f} s.", "",
        "## How the search ran", "", plan_text, "",
        "## Pareto front (retrained on the full training set)", "",
        "| trial | picked as | model | val mse | test mse | test PSNR dB | params | train MFLOP/sample | epochs "
        "| run |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in front:
        lines.append(f"| {m['trial']} | {m.get('picked_as', '')} | {_arch(m['settings'])} | {m['mse']:.5f} | "
                     f"{m['test_mse']:.5f} | {m['test_psnr']:.2f} | {m['params']:,} | "
                     f"{m['train_flops_per_sample'] / 1e6:.2f} | {m['epochs']} of {m.get('planned_epochs', '?')} | "
                     f"{m['run']} |")
    for ref in references:
        if ref.get("test_mse") is not None:
            lines.append(f"| ref | | {ref['name']} | {_fmt(ref.get('mse'))} | {ref['test_mse']:.5f} | "
                         f"{ref.get('test_psnr', float('nan')):.2f} | {_int(ref.get('params'))} | "
                         f"{_mflop(ref.get('train_flops_per_sample'))} | | |")
    if dropped:
        lines += ["", "Dominated after retraining (kept as runs, not on the front): "
                  + ", ".join(f"trial {m['trial']} ({m['run']})" for m in dropped)]
    if skipped:
        lines += ["", "Not retrained within the budget: "
                  + "; ".join(f"trial {m['trial']} ({', '.join(m['reasons'])}): {m['why']}" for m in skipped)]
    lines += ["", "## Recommendation", "",
              f"The cheapest model within {tolerance:.0%} of the best validation {error} is **trial {pick['trial']}** "
              f"({_arch(pick['settings'])}): val {error} {pick[error]:.5f}, test mse {pick['test_mse']:.5f}, "
              f"{pick['params']:,} params, {pick['train_flops_per_sample'] / 1e6:.2f} MFLOP per training sample; "
              f"run directory `{pick['run']}`.", "", "![Pareto front](pareto.png)", ""]
    atomic_write_text(path, "\n".join(lines))


def _arch(settings: dict[str, Any]) -> str:

    return describe(settings).replace("|", "/")


def _fmt(value) -> str:
    return "" if value is None else f"{value:.5f}"


def _int(value) -> str:
    return "" if value is None else f"{int(value):,}"


def _mflop(value) -> str:
    return "" if value is None else f"{value / 1e6:.2f}"
