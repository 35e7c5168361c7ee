"""What encode-time refinement (aeopt compress --refine) buys, against the peers, in one run.

  flock /tmp/aeopt-bench.lock python benchmarks/codec_refine.py [--steps 100,400] [--fmnist 1000] [--photos 100]
        # committed Fashion-MNIST part: --steps 100,400 --fmnist 1000 --photos 0 (the default fmcg2 runs)
        # another photo family: --fmnist 0 --photo-runs photos-cg256,photos-cg256-low --photos 100, then the
        # same with --photo-from 100: its parts (and their merge) are named by its runs, beside the committed ones
  python benchmarks/codec_refine.py --fmnist 0 --photos 0 --note "..."   # re-render only, with a new note

On the cached runs of benchmarks/codec.py (Fashion-MNIST fmcg2-*, photos photos-long2 / photos-low2):
for the first N test images of each set, aeopt plain and refined (one .aec file per image, every
byte counted) and the peers (PNG/JPEG/WebP/AVIF) on those same images; BD-rate of both against each
peer; the refined 768x512 photo's encode time. Refinement costs seconds per photo, so it runs on a
subset; plain aeopt on the same subset says how far the subset is from the whole set (codec.md).
Writes benchmarks/results/codec_refined.json (a part not rerun is kept from it: each Fashion-MNIST
family is its own part, named by its runs' prefix) and codec_refined.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.codec import BSDS, CACHE, FM_PEERS, PHOTO_PEERS, RESULTS, _bd_table, _rebuilt  # noqa: E402
from benchmarks.common import machine_line  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import aeopt  # noqa: E402
from aeopt.codec import compress, decompress_images  # noqa: E402
from aeopt.codec.container import FORMAT_VERSION  # noqa: E402
from aeopt.codec.evaluate import measure  # noqa: E402
from aeopt.codec.peers import measure_peers  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402


def _point(run_name: str, run, images, steps: int) -> dict:
    t = measure(run, images, refine=steps)
    point = {"run": run_name, "lmbda": run.model.lmbda, "refine": steps, "bpp": t["bpp"],
             "bytes_per_image": t["bytes_per_image"], "psnr": t["psnr"], "ms_ssim": t["ms_ssim"],
             "batch_bpp": t["batch_file"]["bpp"], "encode_ms": t["encode_ms_per_image"],
             "decode_ms": t["decode_ms_per_image"], "format": FORMAT_VERSION}
    print(json.dumps(point), flush=True)
    return point


def _carried(run_name: str, before: dict, steps: list[int]) -> tuple[list[dict], list[dict]]:
    """A run whose cached folder is gone (the cache lives on one machine): its plain and refined points
    from the committed codec_refined.json, on the same first images (sizes and PSNRs are deterministic:
    refinement is seeded), one-file sizes as format 4 writes them (codec_family.as_format4)."""
    from benchmarks.codec_family import as_format4

    part = next((p for p in before.get("parts", []) if any(q["run"] == run_name for q in p["plain"])), None)
    if part is None:
        raise SystemExit(f"{run_name}: no cached run in {CACHE} and no committed refinement of it")
    carried = {"carried_from": part["machine"]}
    plain = [{**as_format4(q), **carried} for q in part["plain"] if q["run"] == run_name]
    refined = [{**as_format4(q), **carried} for q in part["refined"] if q["run"] == run_name and q["refine"] in steps]
    if len(refined) != len(steps):
        raise SystemExit(f"{run_name}: the committed refinement has steps "
                         f"{sorted(q['refine'] for q in part['refined'] if q['run'] == run_name)}, not {steps}")
    return plain, refined


def _part(name: str, runs: list[str], images: list[np.ndarray], peers: dict, steps: list[int],
          before: dict | None = None) -> dict:
    load_before = os.getloadavg()
    plain, refined = [], []
    for run_name in runs:
        if before is not None and not (CACHE / run_name).is_dir():
            kept = _carried(run_name, before, steps)
            plain += kept[0]
            refined += kept[1]
            continue
        run = _rebuilt(CACHE / run_name)
        plain.append(_point(run_name, run, images, 0))
        refined += [_point(run_name, run, images, n) for n in steps]
    peer_points = measure_peers(images, peers)
    return {"data": name, "images": len(images), "machine": machine_line(), "load_before": load_before,
            "load_after": os.getloadavg(), "plain": plain, "refined": refined, "peers": peer_points}


PHOTO_RUNS = "photos-long2,photos-low2"  # the committed photo family; another's parts carry its runs in their names


def _photo_part_name(which: str, runs: str) -> str:
    """"Photographs (WHICH)" for the committed family, "Photographs (WHICH, RUNS)" for another, so
    another family's parts neither replace the committed ones nor merge with them."""
    return f"Photographs ({which})" if runs == PHOTO_RUNS else f"Photographs ({which}, {runs})"


def _runs_of(part: dict) -> str:
    return ",".join(point["run"] for point in part["plain"])


def _merged(parts: list[dict], name: str) -> dict:
    """One part from parts over disjoint subsets of the same images (same runs, steps, peers): bytes,
    bpp, MS-SSIM and times averaged by image count, PSNR from the averaged MSE. Exact when the
    images have one pixel count (BSDS500 photos are all 481 x 321)."""
    total = sum(p["images"] for p in parts)

    def combine(points: list[dict]) -> dict:
        out = dict(points[0])
        for key in ("bpp", "bytes_per_image", "ms_ssim", "batch_bpp", "encode_ms", "decode_ms"):
            if all(point.get(key) is not None for point in points):
                out[key] = sum(point[key] * p["images"] for point, p in zip(points, parts)) / total
        if all(point.get("psnr") is not None for point in points):
            mse = sum(10 ** (-point["psnr"] / 10) * p["images"] for point, p in zip(points, parts)) / total
            out["psnr"] = -10 * np.log10(mse)
        return out

    merged = {"data": name, "images": total, "machine": parts[-1]["machine"], "load_before": parts[0]["load_before"],
              "load_after": parts[-1]["load_after"], "merged_from": [p["data"] for p in parts]}
    for key in ("plain", "refined", "peers"):
        merged[key] = [combine(list(points)) for points in zip(*(p[key] for p in parts))]
    return merged


def _bd_rates(part: dict) -> dict[str, dict]:
    """BD-rate per peer of plain aeopt and of each refinement setting, from the part's points: one
    file per image, then (where the points have it) the same latents as one many-image file, since
    on 28x28 images the per-file header is a quarter of the smallest files."""
    settings = {"plain": part["plain"]}
    for steps in sorted({p["refine"] for p in part["refined"]}):
        settings[f"refined, {steps} steps"] = [p for p in part["refined"] if p["refine"] == steps]
    out = {name: _bd_table(points, part["peers"]) for name, points in settings.items()}
    for name, points in settings.items():
        if all(p.get("batch_bpp") is not None for p in points):
            out[f"{name}, one many-image file"] = _bd_table(points, part["peers"], "batch_bpp")
    return out


def _photo_timing(run_name: str, image: np.ndarray, steps: int) -> dict:
    from PIL import Image

    run = _rebuilt(CACHE / run_name)
    big = np.asarray(Image.fromarray(image.transpose(1, 2, 0)).resize((768, 512), Image.Resampling.BICUBIC))
    big = big.transpose(2, 0, 1).copy()
    started = time.perf_counter()
    data = compress(run, big, refine=steps)
    mid = time.perf_counter()
    decompress_images(run, data)
    return {"run": run_name, "encode_s": mid - started, "decode_s": time.perf_counter() - mid, "bytes": len(data),
            "plain_bytes": len(compress(run, big))}


def _which(part: dict) -> str:
    if "merged_from" in part:
        return f"All {part['images']} test images, from runs on {' and '.join(part['merged_from'])} merged (_merged)"
    if "photos " in part["data"]:  # "Photographs (BSDS500 test photos 101-200)"
        return part["data"].split("(")[1].rstrip(")")
    return f"The first {part['images']} test images"


def _table(part: dict) -> list[str]:
    lines = [f"Machine: {part['machine']}; load average before {part['load_before'][0]:.1f}, after "
             f"{part['load_after'][0]:.1f}. {_which(part)}, one .aec file each.", "",
             "| run | lambda | encoder | bytes/image | bpp | PSNR dB | MS-SSIM | encode ms | decode ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in part["plain"] + part["refined"]:
        encoder = f"refined, {p['refine']} steps" if p["refine"] else "plain rounding"
        run = p["run"] + (" (carried)" if p.get("carried_from") else "")
        lines.append(f"| {run} | {p['lmbda']:g} | {encoder} | {p['bytes_per_image']:.1f} | {p['bpp']:.4f} | "
                     f"{p['psnr']:.2f} | {p['ms_ssim']:.4f} | {p['encode_ms']:.1f} | {p['decode_ms']:.1f} |")
    lines += ["", "| codec | setting | bytes/image | bpp | PSNR dB |", "| --- | --- | --- | --- | --- |"]
    for p in part["peers"]:
        psnr = "n/a" if p["setting"] is None else f"{p['psnr']:.2f}"
        lines.append(f"| {p['codec']} | {p['setting'] if p['setting'] is not None else 'optimize'} | "
                     f"{p['bytes_per_image']:.1f} | {p['bpp']:.4f} | {psnr} |")
    rates = _bd_rates(part)
    fmt = lambda v: "n/a" if v is None else f"{v:+.1f}%"  # noqa: E731
    lines += ["", "| BD-rate of aeopt vs | " + " | ".join(rates) + " |", "| --- |" + " --- |" * len(rates)]
    for codec in rates["plain"]:
        lines.append(f"| {codec} | " + " | ".join(fmt(r[codec]) for r in rates.values()) + " |")
    return lines


def write_report(result: dict) -> None:
    lines = ["# Encode-time refinement (`aeopt compress --refine STEPS`)", "",
             "`benchmarks/codec_refine.py`. The same cached runs as codec.md, the same decoder: only the encoder "
             "searches for better integers (SGA, aeopt/codec/refine.py). Whole files, every header counted; "
             "PSNR from the mean MSE; BD-rate over the PSNR range both curves cover (negative = fewer bytes); "
             "times on 2 threads.", ""]
    if result.get("note"):
        lines += [result["note"], ""]
    for part in result["parts"]:
        lines += [f"## {part['data']}", ""] + _table(part) + [""]
    if result.get("photo_768x512"):
        t = result["photo_768x512"]
        lines += [f"A 768x512 photo ({t['run']}), refined: encode {t['encode_s']:.1f} s, decode {t['decode_s']:.2f} s, "
                  f"{t['bytes']:,} bytes (plain: {t['plain_bytes']:,}).", ""]
    atomic_write_text(RESULTS / "codec_refined.md", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="100", help="refinement steps, comma-separated")
    parser.add_argument("--fmnist", type=int, default=1000, help="first N Fashion-MNIST test images (0: skip)")
    parser.add_argument("--photos", type=int, default=100, help="first N BSDS500 test photos (0: skip)")
    parser.add_argument("--photo-from", type=int, default=0,
                        help="start at this test photo: a later run can cover the rest of the set, and the parts "
                             "that together cover every test photo are reported merged")
    parser.add_argument("--fm-runs", default="fmcg2-0.0008,fmcg2-0.002,fmcg2-0.005,fmcg2-0.013")
    parser.add_argument("--fm-name", help="the Fashion-MNIST part's family name (default: its runs' prefixes); a run "
                                          "whose cached folder is gone is carried from the committed parts")
    parser.add_argument("--photo-runs", default=PHOTO_RUNS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default=None, help="how this run was made, printed under the title (kept if omitted)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = [int(v) for v in args.steps.split(",")]
    path = RESULTS / "codec_refined.json"
    result = json.loads(path.read_text()) if path.is_file() else {"parts": []}  # parts not rerun are kept
    result["threads"] = args.threads
    if args.note is not None:
        result["note"] = args.note
    fresh = []
    if args.fmnist:
        test = list((aeopt.load_data("fashion-mnist").x_test * 255).round().byte().numpy())[:args.fmnist]
        runs = args.fm_runs.split(",")
        families = args.fm_name or ", ".join(sorted({run.rsplit("-", 1)[0] for run in runs}))  # one part per family
        fresh.append(_part(f"Fashion-MNIST ({families})", runs, test, FM_PEERS, steps, before=json.loads(
            path.read_text()) if path.is_file() else None))
    from aeopt.data.patches import image_files, read_image

    if args.photos:
        files = image_files(BSDS / "test")[args.photo_from:args.photo_from + args.photos]
        test = [read_image(f, "RGB") for f in files]
        name = _photo_part_name("BSDS500 test" if not args.photo_from else
                                f"BSDS500 test photos {args.photo_from + 1}-{args.photo_from + len(test)}",
                                args.photo_runs)
        fresh.append(_part(name, args.photo_runs.split(","), test, PHOTO_PEERS, steps))
        if not args.photo_from:  # the committed family's is the report's; another's stays in its part
            timing = _photo_timing(args.photo_runs.split(",")[0], test[0], steps[0])
            if args.photo_runs == PHOTO_RUNS:
                result["photo_768x512"] = timing
            else:
                fresh[-1]["photo_768x512"] = timing
    names = [p["data"] for p in fresh]
    result["parts"] = fresh + [p for p in result["parts"] if p["data"] not in names]
    photo_parts = [p for p in result["parts"] if p["data"].startswith("Photographs (") and "merged_from" not in p]
    for runs in {_runs_of(p) for p in photo_parts}:  # a family's parts covering the set: one merged part
        own = [p for p in photo_parts if _runs_of(p) == runs]
        merged_name = _photo_part_name("BSDS500 test, all photos", runs)
        if len(own) > 1 and sum(p["images"] for p in own) == len(image_files(BSDS / "test")):
            result["parts"] = [p for p in result["parts"] if p["data"] != merged_name]
            result["parts"].append(_merged(own, merged_name))
    # Fashion-MNIST, then the photographs: the whole set first, then the runs it was merged from
    result["parts"].sort(key=lambda p: (p["data"].startswith("Photographs"), "merged_from" not in p, p["data"]))
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    write_report(result)
    print(json.dumps({p["data"]: _bd_rates(p) for p in result["parts"]}))


if __name__ == "__main__":
    main()
