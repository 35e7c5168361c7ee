"""The photo part of benchmarks/codec.py: train-photos (one codec on BSDS500 train + val crops for a
wall-clock budget) and photos (the cached runs and the peers on the 200 test photos, and a 768x512
photo's encode + decode time). Run through codec.py; the commands are in its docstring."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from aeopt.codec import compress, decompress_images
from aeopt.codec.evaluate import measure
from aeopt.codec.peers import measure_peers
from aeopt.codec.report import strip_figure
from aeopt.runs import atomic_write_text
from benchmarks.codec import BSDS, CACHE, PHOTO_PEERS, _bd_table, _rebuilt
from benchmarks.common import machine_line


def _photo_folder() -> Path:
    """BSDS500 as the library's images:DIR splits, as links in the cache (kept: the runs' config.yaml
    name it): train/ = train + val (the benchmark's 300 training photos), val/ = the first 32 of val
    (the best epoch), test/ = the first 8 test photos (the run's own first look; `photos` measures all
    200)."""
    import shutil
    import tempfile

    from aeopt.data.patches import image_files

    root = CACHE / "bsds500-splits"
    if root.is_dir():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=CACHE, prefix=".splits-"))
    for split, files in {"train": [*image_files(BSDS / "train"), *image_files(BSDS / "val")],
                         "val": image_files(BSDS / "val")[:32], "test": image_files(BSDS / "test")[:8]}.items():
        (building / split).mkdir()
        for f in files:  # prefixed by the folder: train's photos first, then val's, as sorted names
            (building / split / f"{f.parent.name}-{f.name}").symlink_to(f.resolve())
    try:
        building.rename(root)
    except OSError:  # another process built it first
        shutil.rmtree(building)
    return root


def train_photos(args) -> None:
    """One codec (--entropy: a scale hyperprior by default) on BSDS500 train + val crops for --minutes
    into benchmarks/.cache/codec/NAME: `aeopt train --model codec --patch P --max-minutes M` on the
    photo folder above."""
    from aeopt.codec.train import train_codec

    result = train_codec(
        data=f"images:{_photo_folder()}", model="codec", entropy=args.entropy, lmbda=args.lmbda,
        latent_grid=args.latent_grid, hyper_input=args.hyper_input, precision=args.precision,
        latent_dim=args.latent, width=args.width, patch=args.patch, batch_size=args.batch, lr=args.lr,
        optimizer="adam", weight_decay=0.0, epochs=args.epochs, max_minutes=args.minutes, patience=0,
        clip_grad=args.clip_grad, init=str(CACHE / args.init) if args.init else None, threads=args.threads,
        seed=0, out=str(CACHE / args.name), overwrite=True, progress=False)
    atomic_write_text(result.path / "training.json", json.dumps({
        "train_seconds": result.metrics["train_seconds"], "epochs": result.metrics["epochs"],
        "steps_about": result.metrics["steps"], "threads": args.threads, "patch": args.patch,
        "batch": args.batch, "init": args.init, "history": result.history}, indent=2) + "\n")


def _training_so_far(name: str) -> dict:
    """A cached photo run's training.json, its time and steps including the runs it warm-started from."""
    training = json.loads((CACHE / name / "training.json").read_text())
    if training.get("init"):
        before = _training_so_far(training["init"])
        training = {**training, "train_seconds": training["train_seconds"] + before["train_seconds"],
                    "steps_about": training["steps_about"] + before["steps_about"]}
    return training


def _carried_photos(prefixes: str, results: str) -> list[dict]:
    """Photo families kept from the committed codec_photos.json, not re-measured (their runs may be on
    another machine); a file from before families is one family, named by its runs ("a,b")."""
    wanted = [p for p in prefixes.split(";") if p]
    if not wanted:
        return []
    before = json.loads((Path(results) / "codec_photos.json").read_text())
    kept = {f["prefix"]: f for f in before.get("families") or []}
    if not kept:
        runs = ",".join(o["run"] for o in before["aeopt"])
        kept = {runs: {"prefix": runs, "entropy": "hyperprior", "latent_grid": "integer", "precision": None,
                       "width": before["settings"]["width"], "latent": before["settings"]["latent"],
                       "params": before["params"], "points": before["aeopt"]}}
    missing = [p for p in wanted if p not in kept]
    if missing:
        raise SystemExit(f"--carry: {', '.join(missing)} not in {Path(results) / 'codec_photos.json'} "
                         f"(it holds {'; '.join(kept)})")
    # families from before they recorded their crops all trained on 128 x 128 crops in batches of 8
    return [{"patch": 128, "batch": 8, **kept[p], "carried_from": kept[p].get("carried_from") or before["machine"]}
            for p in wanted]


def part_photos(args) -> None:
    import yaml

    from aeopt.data.patches import image_files, read_image

    load_before = os.getloadavg()
    torch.set_num_threads(2)
    test = [read_image(f, "RGB") for f in image_files(BSDS / "test")][:args.test]
    ours, trainings = [], []
    for name in args.runs.split(","):
        run_dir = CACHE / name
        run = _rebuilt(run_dir)
        training = _training_so_far(name)
        t = measure(run, test)
        ours.append({"run": name, "lmbda": run.model.lmbda, "bpp": t["bpp"], "psnr": t["psnr"], "ms_ssim": t["ms_ssim"],
                     "bytes_per_image": t["bytes_per_image"], "encode_ms": t["encode_ms_per_image"],
                     "decode_ms": t["decode_ms_per_image"], "train_seconds": training["train_seconds"],
                     "steps": training["steps_about"], "train_threads": training["threads"],
                     "init": training.get("init")})
        trainings.append(training)
        print(json.dumps(ours[-1]), flush=True)
    first = _rebuilt(CACHE / args.runs.split(",")[0])
    strip_figure(first.path / "strip.png", first, test)
    peers = measure_peers(test, PHOTO_PEERS if args.avif else {k: v for k, v in PHOTO_PEERS.items() if k != "AVIF"})
    from PIL import Image

    big = np.asarray(Image.fromarray(test[0].transpose(1, 2, 0)).resize((768, 512), Image.Resampling.BICUBIC))
    big = big.transpose(2, 0, 1).copy()
    times = []
    for _ in range(3):
        started = time.perf_counter()
        data = compress(first, big)
        mid = time.perf_counter()
        decompress_images(first, data)
        times.append((mid - started, time.perf_counter() - mid))
    enc, dec = min(times, key=sum)
    training = trainings[0]
    config = yaml.safe_load((first.path / "config.yaml").read_text())
    family = {"prefix": args.runs, "entropy": config.get("entropy") or "hyperprior",
              "latent_grid": config.get("latent_grid") or "integer", "precision": config.get("precision"),
              "width": first.model.width, "latent": first.model.latent_dim, "patch": training["patch"],
              "batch": training["batch"], "params": sum(p.numel() for p in first.model.parameters()), "points": ours}
    families = [family] + _carried_photos(args.carry, args.results)
    for f in families:  # every family against the peers of this run (the same 200 photos: bytes and PSNRs exact)
        f["bd_rate"] = _bd_table(f["points"], peers)
    result = {"machine": machine_line(), "load_before": load_before, "load_after": os.getloadavg(),
              "settings": {**vars(args), "width": first.model.width, "latent": first.model.latent_dim,
                           "lmbda": first.model.lmbda, "patch": training["patch"], "batch": training["batch"]},
              "train_seconds": training["train_seconds"], "epochs": training["epochs"],
              "steps_about": training["steps_about"], "train_threads": training["threads"],
              "params": sum(p.numel() for p in first.model.parameters()),
              "test_images": len(test), "aeopt": ours, "peers": peers, "bd_rate": _bd_table(ours, peers),
              "photo_768x512": {"encode_s": enc, "decode_s": dec, "bytes": len(data), "threads": 2},
              "families": families}
    atomic_write_text(Path(args.results) / "codec_photos.json", json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("aeopt", "bd_rate", "photo_768x512")}))
