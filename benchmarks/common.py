"""What every benchmark prints and records: the machine it ran on."""
from __future__ import annotations

import os
import platform

import torch


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
            f"{gpu}, load average {os.getloadavg()[0]:.1f}")


def cycled_fresh_processes(script: str, variants: tuple[str, ...], repeats: int, args: list[str]) -> dict[str, list[dict]]:
    """Each variant timed in a fresh process (`script --one VARIANT *args`, which prints one
    `RESULT {json}` line), all of them cycled `repeats` times so a shared machine's changing load hits
    them alike: variant -> its results in order. A process-wide setting (malloc, a patched kernel) then
    cannot leak from one variant into the next."""
    import json
    import subprocess
    import sys

    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(repeats):
        for variant in variants:
            done = subprocess.run([sys.executable, script, "--one", variant, *args],
                                  capture_output=True, text=True, check=True)
            line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
            runs[variant].append(json.loads(line[len("RESULT "):]))
            print(variant, runs[variant][-1], flush=True)
    return runs
