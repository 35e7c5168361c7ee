"""report.md of a shrunk run: each step's figures before and after it, and, for distillation, the
teacher beside the distilled student and the same student trained alone (what the teacher adds)."""
from __future__ import annotations

from typing import Any

HEADER = ["| step | model | test PSNR dB | test MSE | test SSIM | params | size MB |",
          "|---|---|---:|---:|---:|---:|---:|"]


def _row(step: str, label: str, figures: dict[str, Any]) -> str:
    ssim = "-" if figures.get("ssim") is None else f"{figures['ssim']:.3f}"
    size = "-" if figures.get("size_bytes") is None else f"{figures['size_bytes'] / 1e6:.3f}"
    return (f"| {step} | {label} | {figures['psnr']:.2f} | {figures['mse']:.5f} | {ssim} | "
            f"{figures['params']:,} | {size} |")


def shrink_report(metrics: dict[str, Any]) -> str:
    """The Markdown text of report.md for the metrics that `aeopt.shrink` writes to metrics.json."""
    lines = ["# Shrink report", "", f"Source run: `{metrics['source']}`. Figures on the test set.", "", *HEADER]
    notes = []
    for step in metrics["steps"]:
        name = step["step"]
        if name == "distill":
            lines.append(_row(name, "teacher", step["before"]))
            lines.append(_row(name, f"distilled student `{step['student']}`", step["after"]))
            if "student_alone" in step:
                # same architecture as the distilled student, so the same size; not written to disk
                lines.append(_row(name, "same student trained alone", step["student_alone"]))
                notes.append(f"Distillation gain: {step['gain_db']:+.2f} dB over the same student trained "
                             "alone (same epochs, seed and settings, no teacher).")
        else:
            lines.append(_row(name, "before", step["before"]))
            lines.append(_row(name, "after", step["after"]))
    final, before = metrics["test"], metrics["before"]
    notes.append(f"Result: {before['psnr']:.2f} -> {final['psnr']:.2f} dB, {before['params']:,} -> "
                 f"{metrics['params']:,} params, {before['size_bytes'] / 1e6:.3f} -> "
                 f"{metrics['size_bytes'] / 1e6:.3f} MB.")
    return "\n".join([*lines, "", *notes]) + "\n"
