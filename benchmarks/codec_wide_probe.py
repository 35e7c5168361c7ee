"""Probe: does a wider channel-wise codec close the Fashion-MNIST gap to WebP where it is widest (high PSNR)?

The committed narrow family (fmcg / fmcg2: width 32, latent 16, hyperprior 16) needs -70% of WebP's
bytes at 23 dB but only -43% at 33 dB (codec.md). This trains the upper two lambdas wider (width 48,
latent 32, hyperprior and contexts still 16, so the integer decoder stays as narrow) with fmcg's
recipe, then fmcg2's second stage, one lambda per process, side by side:

  python benchmarks/codec.py train-fmnist --prefix fmcgw --lambdas 0.005 --entropy channelwise \\
      --latent-grid mean --precision fp32 --width 48 --latent 32 --hyper-width 16 --epochs 30 --minutes 85 --lr 1e-3
  python benchmarks/codec.py train-fmnist --prefix fmcgw2 --init-from fmcgw --lambdas 0.005 ... --epochs 24 \\
      --minutes 40 --lr 3e-4                      # (and the same with --lambdas 0.013)
  python benchmarks/codec_wide_probe.py --prefixes fmcgw,fmcgw2

Each wide run's test figures come from its metrics.json (all 10,000 test images, one real .aec file
each); the narrow points and WebP's curve from the committed codec_fmnist.json, whose per-file sizes
are taken 2 bytes smaller (format 4's short check, which the wide runs' files have: exact, the files
differ only there). Reports each point's rate against WebP's curve at its own PSNR, and the wide
pair's rate against each narrow pair's at equal PSNR (log-rate linear between the two points).
Writes benchmarks/results/codec_wide_probe.json.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.codec_report import _rate_delta  # noqa: E402
from benchmarks.common import machine_line  # noqa: E402

from aeopt.runs import atomic_write_text  # noqa: E402

HERE = Path(__file__).resolve().parent
LAMBDAS = (0.005, 0.013)
PIXELS = 28 * 28


def _wide_point(prefix: str, lmbda: float) -> dict:
    m = json.loads((HERE / ".cache" / "codec" / f"{prefix}-{lmbda:g}" / "metrics.json").read_text())
    t = m["test"]
    return {"bytes_per_image": t["bytes_per_image"], "bpp": t["bpp"], "psnr": t["psnr"], "ms_ssim": t["ms_ssim"],
            "batch_bytes_per_image": t["batch_file"]["bytes_per_image"], "epochs_this_stage": m["epochs"],
            "steps": m.get("steps"), "train_seconds": m["train_seconds"], "params": m["params"],
            "precision": m["precision"], "encode_ms_per_file": t["encode_ms_per_image"],
            "decode_ms_per_file": t["decode_ms_per_image"]}


def _rate_at(pair: list[dict], psnr: float) -> float:
    (b0, q0), (b1, q1) = ((p["bpp"], p["psnr"]) for p in pair)
    return math.exp(math.log(b0) + (psnr - q0) / (q1 - q0) * (math.log(b1) - math.log(b0)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prefixes", default="fmcgw,fmcgw2", help="the wide families' cached run prefixes")
    p.add_argument("--narrow", default="fmcg,fmcg2", help="committed narrow families to compare with")
    args = p.parse_args()
    committed = json.loads((HERE / "results" / "codec_fmnist.json").read_text())
    families = {f["prefix"]: f for f in committed["families"]}
    out = {"machine": machine_line(), "peers": "WebP's curve and the narrow points from codec_fmnist.json",
           "families": {}, "wide_vs_narrow_pct_at_psnr": {}}
    for prefix in args.narrow.split(","):
        points = [dict(q, bytes_per_image=q["bytes_per_image"] - 2, bpp=8 * (q["bytes_per_image"] - 2) / PIXELS)
                  for q in families[prefix]["points"] if q["lmbda"] in LAMBDAS]
        out["families"][prefix] = {"width": 32, "latent": 16, "epochs": points[0]["epochs"], "points": points}
    for prefix in args.prefixes.split(","):
        if not (HERE / ".cache" / "codec" / f"{prefix}-{LAMBDAS[0]:g}" / "metrics.json").exists():
            print(f"{prefix}: no finished runs, skipped")
            continue
        points = [dict(_wide_point(prefix, lmbda), lmbda=lmbda) for lmbda in LAMBDAS]
        out["families"][prefix] = {"width": 48, "latent": 32, "points": points}
    for name, family in out["families"].items():
        for point in family["points"]:
            point["vs_webp_pct"] = _rate_delta(committed["peers"], "WebP", point)
            print(f"{name} {point['lmbda']:g}: {point['bytes_per_image']:.1f} B @ {point['psnr']:.2f} dB, "
                  f"vs WebP at this PSNR {point['vs_webp_pct']:+.1f}%")
    for wide in args.prefixes.split(","):
        for narrow in args.narrow.split(","):
            if wide not in out["families"]:
                continue
            w, n = out["families"][wide]["points"], out["families"][narrow]["points"]
            low, high = max(w[0]["psnr"], n[0]["psnr"]), min(w[1]["psnr"], n[1]["psnr"])
            deltas = {f"{q:.1f}": 100 * (_rate_at(w, q) / _rate_at(n, q) - 1) for q in (low, (low + high) / 2, high)}
            out["wide_vs_narrow_pct_at_psnr"][f"{wide} vs {narrow}"] = deltas
            print(f"{wide} vs {narrow}, rate at equal PSNR: " + ", ".join(f"{k} dB {v:+.1f}%" for k, v in deltas.items()))
    atomic_write_text(HERE / "results" / "codec_wide_probe.json", json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
