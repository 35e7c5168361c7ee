"""The learned codec against PNG / JPEG / WebP / AVIF on whole files (every header counted).

  flock /tmp/aeopt-bench.lock python benchmarks/codec.py train-fmnist [--lambdas 0.0008,0.002,0.005,0.013] [--epochs 3]
        # then: train-fmnist --init --epochs 12 --lr 5e-4 (continues each cached run: the committed table)
        # the fast model: --prefix fmfast --width 32 --latent 16 --hyper-width 16, the same two stages, then
        # --prefix fmfast2 --init-from fmfast --epochs 30 --lr 3e-4, then fmfast3 from fmfast2 at --lr 2e-4
        # mean-scale: --prefix fmms --entropy meanscale --precision bf16 --width 32 --latent 16
        # --hyper-width 16 --epochs 30 --lr 1e-3, one lambda per process, two side by side; the same with
        # --latent-grid mean: --prefix fmmg; channel-wise: --prefix fmcg --entropy channelwise --latent-grid mean
        # (same flags); then --prefix fmcg2 --init-from fmcg --epochs 24 --lr 3e-4, fmmg2 from fmmg likewise;
        # residual units grown into the wide tiers: --prefix fmcgrd --init-from fmcgw2 --blocks 2 --decoder-blocks 2
        # --width 48 --latent 32 --hyper-width 16 --lr 1.5e-4 --epochs 16 (0.013) / 12 (0.005, 0.011); the narrow
        # ones by `aeopt train ... --width 32 --latent-dim 16 --hyper-width 16 --blocks 2 --decoder-blocks 2
        # --epochs 12 --threads 1 --init`: fmcgrn-0.0003 from fmcg2-0.0003 at lr 1.5e-4, fmcgrn-0.0008 and
        # fmcgrn-0.002 from fmcgrn-0.0003 at lr 3e-4 (benchmarks/codec_family.py measures them as fmcgrt)
  flock /tmp/aeopt-bench.lock python benchmarks/codec.py train-photos [--minutes 20] [--epochs 40] [--lmbda 0.0067]
        # the scale hyperprior (carried): photos (--minutes 25, shared), then per lambda, side by side (0.0067 here;
        # --lmbda 0.0025 as photos-low, photos-low2):
        # --name photos-long --init photos --minutes 46 --epochs 95 --threads 1;
        # --name photos-long2 --init photos-long --minutes 56 --epochs 130 --lr 2e-4 --threads 1;
        # then photos --runs photos-long2,photos-low2 (the scale hyperpriors, carried since);
        # channel-wise on the mean grid, from scratch, side by side: --name photos-cg (--lmbda 0.0067) and
        # photos-cg-low (--lmbda 0.0025), --entropy channelwise --latent-grid mean --minutes 95 --epochs 400
        # --threads 1; then photos --runs photos-cg,photos-cg-low --carry photos-long2,photos-low2;
        # mean-scale on the mean grid on 256 crops, from scratch, side by side: --name photos-ms256 (0.0067)
        # and photos-ms256-low (0.0025), --entropy meanscale --latent-grid mean --patch 256 --batch 2
        # --minutes 105 --epochs 110 --threads 1; then photos --runs photos-ms256,photos-ms256-low
        # --carry "photos-long2,photos-low2;photos-cg,photos-cg-low"; channel-wise on the mean grid on 256
        # crops, from scratch, side by side: --name photos-cg256 (0.0067) and photos-cg256-low (0.0025),
        # --entropy channelwise --latent-grid mean --patch 256 --batch 2 --minutes 110 --epochs 120 --threads 1;
        # then photos --runs photos-cg256,photos-cg256-low
        # --carry "photos-ms256,photos-ms256-low;photos-long2,photos-low2;photos-cg,photos-cg-low";
        # the committed table (Intel Ice Lake, no bf16 hardware): photos-cg256's flags with --precision fp32 as
        # --name photos-cgf256 (0.0067) and photos-cgf256-low (0.0025), side by side; then photos --runs
        # photos-cgf256,photos-cgf256-low --carry "photos-cg256,photos-cg256-low;photos-ms256,photos-ms256-low;
        # photos-long2,photos-low2;photos-cg,photos-cg-low"
  flock /tmp/aeopt-bench.lock python benchmarks/codec.py fmnist     # measure everything in one run
        # committed: fmnist --prefixes fmcg2,fmmg2 --carry fmmg,fmcg,fmms,fmfast3,fm --rounds 3 (families kept
        # from the JSON, not re-measured)
  flock /tmp/aeopt-bench.lock python benchmarks/codec.py fmnist-timing --rounds 3
        # committed (Intel Ice Lake): --prefixes fmcgrd,fmmgf2, after fmmg's two stages again in fp32 on one thread:
        # train-fmnist --prefix fmmgf --entropy meanscale --latent-grid mean --precision fp32 --width 32 --latent 16
        # --hyper-width 16 --epochs 30 --lr 1e-3 --lambdas 0.005, then --prefix fmmgf2 --init-from fmmgf --epochs 24 --lr 3e-4
  flock /tmp/aeopt-bench.lock python benchmarks/codec.py photos
  python benchmarks/codec.py report      # benchmarks/results/codec.md + codec_rd.png from the JSON files

fmnist: scale-hyperprior codecs trained on Fashion-MNIST's train set (55k; 5k held out for the
best epoch) at several lambdas, tested on all 10k test images, one .aec file per image (and one
many-image file); the peers on the same 10k images; BD-rate (PCHIP Bjøntegaard) against each;
batch encode + decode time per image for aeopt and WebP in the same run.
photos (codec_photos.py): codecs trained on crops (128x128, later 256x256) of BSDS500 train + val (300
images) for a fixed wall-clock budget, tested on the 200 test photos; and a 768x512 photo's encode + decode time.
The train-* parts cache runs in benchmarks/.cache/codec/; fmnist and photos rebuild their tables
(so a run trained before a table change is measured with the current code) and measure; each
writes benchmarks/results/codec_<part>.json; `report` renders both.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.codec_timing import timing_rounds  # noqa: E402
from benchmarks.common import machine_line  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import aeopt  # noqa: E402
from aeopt.codec import load_codec  # noqa: E402
from aeopt.codec.bdrate import bd_rate  # noqa: E402
from aeopt.codec.container import FORMAT_VERSION  # noqa: E402
from aeopt.codec.evaluate import measure  # noqa: E402
from aeopt.codec.peers import measure_peers  # noqa: E402
from aeopt.codec.report import strip_figure  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(__file__).resolve().parent / ".cache" / "codec"
BSDS = Path(os.environ.get("AEOPT_BSDS", "/work/shared/data/bsds500"))  # train/, val/, test/ folders
FM_PEERS = {"PNG": [None], "JPEG": [5, 10, 30, 50, 75], "WebP": [0, 10, 30, 50, 75], "AVIF": [0, 10, 30, 50]}
PHOTO_PEERS = {"JPEG": [10, 30, 50, 75], "WebP": [0, 10, 30, 50, 75], "AVIF": [10, 30, 50]}  # AVIF: ~0.5 s a photo


def part_fmnist_timing(args) -> None:
    """Only the throughput of the committed codec_fmnist.json again (its sizes are deterministic), in
    --rounds interleaved rounds, for the runs of its middle lambda."""
    path = RESULTS / "codec_fmnist.json"
    result = json.loads(path.read_text())
    mid = result["timing"]["aeopt_lmbda"]
    data = aeopt.load_data("fashion-mnist")
    test = list((data.x_test * 255).round().byte().numpy())[:result["test_images"]]
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    timing = timing_rounds({p: _rebuilt(CACHE / f"{p}-{mid:g}") for p in args.prefixes.split(",")}, test, args.rounds)
    result["timing"] = {"aeopt_lmbda": mid, **timing, "machine": machine_line(), "load_before": load_before,
                        "load_after": os.getloadavg()}
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result["timing"][k] for k in ("aeopt", "peers")}))


def _bd_table(ours: list[dict], peers: list[dict], key: str = "bpp") -> dict:
    out = {}
    for codec in sorted({p["codec"] for p in peers if p["setting"] is not None}):
        pts = [p for p in peers if p["codec"] == codec]
        out[codec] = bd_rate([p["bpp"] for p in pts], [p["psnr"] for p in pts],
                             [o[key] for o in ours], [o["psnr"] for o in ours])
    return out


def train_fmnist(args) -> None:
    """Train one hyperprior per lambda into benchmarks/.cache/codec/fm-LAMBDA (measured by `fmnist`);
    with --init, each lambda starts from the weights of its run already there (then renamed -init)."""
    for lmbda in [float(v) for v in args.lambdas.split(",")]:
        started = time.perf_counter()
        out = CACHE / f"{args.prefix}-{lmbda:g}"
        init = None
        if args.init_from:  # a new family of runs, each from the same lambda's run of another family
            init = CACHE / f"{args.init_from}-{lmbda:g}"
        elif args.init:  # the library's --init: a fresh optimizer and schedule from the run's best weights
            init = CACHE / f"{args.prefix}-{lmbda:g}-init"
            if not init.exists():
                out.rename(init)
        result = aeopt.train(data="fashion-mnist", model="codec", entropy=args.entropy, lmbda=lmbda,
                             precision=args.precision, rate_quantization=args.rate_quantization,
                             latent_grid=args.latent_grid,
                             latent_dim=args.latent, width=args.width, hyper_width=args.hyper_width,
                             blocks=args.blocks or None, decoder_blocks=args.decoder_blocks or None,
                             epochs=args.epochs, batch_size=64, lr=args.lr,
                             threads=args.threads, seed=args.seed, out=str(out), overwrite=True, progress=False, log=print,
                             limit=args.limit, init=str(init) if init else None, max_minutes=args.minutes)
        print(f"lambda {lmbda:g}: {json.dumps(result.metrics['test'])} in {time.perf_counter() - started:.0f} s",
              flush=True)


def _rebuilt(run_dir: Path):
    """The run with its tables rebuilt by this aeopt (the table code may be newer than the training)."""
    from aeopt.codec.tables import build_tables, save_tables
    from aeopt.runs import load_torch

    save_tables(run_dir, build_tables(load_torch(run_dir).model))
    return load_codec(run_dir)


def _stage(run_dir: Path) -> dict:
    """How one cached run trained: epochs, optimizer, peak learning rate, schedule (its config.yaml)."""
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    epochs = json.loads((run_dir / "metrics.json").read_text())["epochs"]
    return {"epochs": epochs, **{k: config[k] for k in ("optimizer", "lr", "weight_decay", "schedule")},
            "lmbda": config.get("lmbda"), **_units_of(config)}


def _units_of(config: dict) -> dict:
    """A run's residual units (--blocks / --decoder-blocks; 0 for runs from before they existed)."""
    return {"blocks": config.get("blocks") or 0, "decoder_blocks": config.get("decoder_blocks") or 0}


def _lineage(run_dir: Path) -> list[Path]:
    """The run and every run it warm-started from, oldest first: its config's `init`, or (runs trained
    before configs recorded it) the NAME-init folder beside it."""
    import yaml

    chain = [run_dir]
    while True:
        init = yaml.safe_load((chain[-1] / "config.yaml").read_text()).get("init")
        before = CACHE / Path(init).name if init else CACHE / f"{chain[-1].name}-init"
        if not before.is_dir() or before in chain or (not init and chain[-1].name.endswith("-init")):
            return chain[::-1]
        chain.append(before)


def measured_point(run_dir: Path, lmbda: float, test: list[np.ndarray]) -> tuple[dict, object]:
    """One cached run measured on the test images (one .aec file each, and one many-image file), with
    how it trained (every stage of its warm-start lineage): its point and the rebuilt run."""
    run = _rebuilt(run_dir)
    chain = _lineage(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    stages = [_stage(r) for r in chain]
    train_seconds = sum(json.loads((r / "metrics.json").read_text())["train_seconds"] for r in chain)
    t = measure(run, test)
    point = {"lmbda": lmbda, "bpp": t["bpp"], "bytes_per_image": t["bytes_per_image"], "psnr": t["psnr"],
             "ms_ssim": t["ms_ssim"], "batch_bpp": t["batch_file"]["bpp"],
             "batch_bytes_per_image": t["batch_file"]["bytes_per_image"], "max_file_bytes": t["max_file_bytes"],
             "encode_ms": t["encode_ms_per_image"], "decode_ms": t["decode_ms_per_image"],
             "train_seconds": train_seconds, "epochs": sum(st["epochs"] for st in stages), "stages": stages,
             "params": metrics["params"], "format": FORMAT_VERSION}
    return point, run


def _family(prefix: str, lambdas: list[float], test: list[np.ndarray]) -> tuple[dict, list]:
    """One model family (PREFIX-LAMBDA runs) measured on the test images: its points and runs."""
    points, runs = [], []
    for lmbda in lambdas:
        point, run = measured_point(CACHE / f"{prefix}-{lmbda:g}", lmbda, test)
        points.append(point)
        runs.append(run)
        print(prefix, json.dumps(point), flush=True)
    return {"prefix": prefix, **run_shape(CACHE / f"{prefix}-{lambdas[0]:g}"), "points": points}, runs


def run_shape(run_dir: Path) -> dict:
    """A cached run's model shape and training precision, as the tables name them (from its config.yaml)."""
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    return {"width": config["width"], "latent": config["latent_dim"],
            "hyper_width": config.get("hyper_width") or config["width"], "entropy": config.get("entropy"),
            "latent_grid": config.get("latent_grid") or "integer", "precision": config.get("precision"),
            **_units_of(config)}


def _carried(prefixes: str) -> list[dict]:
    """Families kept from the committed codec_fmnist.json, not re-measured (their runs may be gone:
    the cache lives on one machine): their bytes and PSNRs are deterministic, so they stand beside
    this run's; their timings are not carried (another run, maybe another machine)."""
    wanted = [p for p in prefixes.split(",") if p]
    if not wanted:
        return []
    before = json.loads((RESULTS / "codec_fmnist.json").read_text())
    kept = {f["prefix"]: f for f in before.get("families", [])}
    missing = [p for p in wanted if p not in kept]
    if missing:
        raise SystemExit(f"--carry: {', '.join(missing)} not in {RESULTS / 'codec_fmnist.json'}")
    # families measured before they recorded their entropy model were all scale hyperpriors in fp32
    return [{"entropy": "hyperprior", "precision": "fp32", **kept[p],
             "carried_from": kept[p].get("carried_from") or before["machine"]} for p in wanted]


def part_fmnist(args) -> None:
    load_before = os.getloadavg()
    lambdas = [float(v) for v in args.lambdas.split(",")]
    data = aeopt.load_data("fashion-mnist")
    test = list((data.x_test * 255).round().byte().numpy())[:args.test]
    torch.set_num_threads(1)
    families, mids = [], []
    for prefix in args.prefixes.split(","):
        family, runs = _family(prefix, lambdas, test)
        families.append(family)
        mids.append(runs[len(runs) // 2])
    peers = measure_peers(test, FM_PEERS)
    families += _carried(args.carry)
    for family in families:
        family["bd_rate_per_file"] = _bd_table(family["points"], peers)
        family["bd_rate_batch_file"] = _bd_table(family["points"], peers, "batch_bpp")
    strip_figure(mids[0].path / "strip.png", mids[0], test)  # with this code's tables (the run's own may be older)
    timing = timing_rounds({f["prefix"]: mid for f, mid in zip(families, mids)}, test, args.rounds)
    default = families[0]
    result = {"machine": machine_line(), "load_before": load_before, "load_after": os.getloadavg(),
              "test_images": len(test), "settings": {**vars(args), "width": default["width"],
                                                     "latent": default["latent"]},
              "aeopt": default["points"], "peers": peers, "bd_rate_per_file": default["bd_rate_per_file"],
              "bd_rate_batch_file": default["bd_rate_batch_file"], "families": families,
              "timing": {"aeopt_lmbda": lambdas[len(lambdas) // 2], **timing}}
    atomic_write_text(RESULTS / "codec_fmnist.json", json.dumps(result, indent=2) + "\n")
    print(json.dumps({f["prefix"]: f["bd_rate_per_file"] for f in families}), json.dumps(result["timing"]))


def main() -> None:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    for name in ("train-fmnist", "fmnist"):
        p = sub.add_parser(name)
        p.add_argument("--lambdas", default="0.0008,0.002,0.005,0.013")
        p.add_argument("--epochs", type=int, default=3)
        p.add_argument("--minutes", type=float, default=None, help="wall-clock cap per lambda (--max-minutes): "
                       "the epochs, and the schedule, shrink to what it holds")
        p.add_argument("--lr", type=float, default=1e-3)
        p.add_argument("--init", action="store_true", help="continue each lambda's cached run (warm start)")
        p.add_argument("--limit", type=int, default=None, help="train on the first N images (smoke runs)")
        p.add_argument("--seed", type=int, default=0, help="training's seed (new units' init, noise, batch order)")
        p.add_argument("--threads", type=int, default=1, help="training's torch threads (1: two runs side by side)")
        p.add_argument("--latent", type=int, default=32)
        p.add_argument("--width", type=int, default=48)
        p.add_argument("--hyper-width", type=int, default=None, help="h_a / h_s channels (default: --width)")
        p.add_argument("--blocks", type=int, default=0, help="residual units in g_a (the encoder)")
        p.add_argument("--decoder-blocks", type=int, default=0, help="residual units in g_s (the decoder)")
        p.add_argument("--prefix", default="fm", help="cached runs are PREFIX-LAMBDA in benchmarks/.cache/codec")
        p.add_argument("--init-from", help="start each lambda from INIT_FROM-LAMBDA's weights (another prefix)")
        p.add_argument("--entropy", default="hyperprior", help="hyperprior | meanscale | channelwise | factorized")
        p.add_argument("--precision", default="fp32", help="training's autocast: fp32 | bf16 (on CPUs with AMX)")
        p.add_argument("--rate-quantization", default="noise", help="noise | ste (training's y and z for the rate)")
        p.add_argument("--latent-grid", default="integer", help="integer | mean (meanscale / channelwise: y's grid)")
        p.add_argument("--test", type=int, default=10_000)
        p.add_argument("--prefixes", default="fmcg2,fmmg2",
                       help="fmnist: model families to measure (PREFIX-LAMBDA runs), the default model first")
        p.add_argument("--carry", default="", help="fmnist: families to keep from the committed JSON, not re-measured")
        p.add_argument("--rounds", type=int, default=1, help="fmnist: throughput rounds, interleaved (median kept)")
    p = sub.add_parser("fmnist-timing", help="re-measure only the throughput of the committed codec_fmnist.json")
    p.add_argument("--prefixes", default="fmcg2,fmmg2", help="the families whose middle-lambda run is timed")
    p.add_argument("--rounds", type=int, default=3)
    p = sub.add_parser("train-photos")
    p.add_argument("--minutes", type=float, default=20, help="wall-clock cap on the training loop (--max-minutes)")
    # The most epochs: the schedule (warm-up, cosine decay) is laid over them and shrinks to what
    # --minutes holds at the measured speed (DeadlinePlan; an epoch is 150 steps of batch 8: ~28 s on
    # one thread here). A huge number would still stretch the warm-up (5% of it) past the cap.
    p.add_argument("--epochs", type=int, default=40)
    # CompressAI's examples/train.py clips at 1.0; at peak lr 1e-3 (batch 8) both photo runs collapsed
    # to 5 dB within 4 epochs without it
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--lmbda", type=float, default=0.0067)
    p.add_argument("--latent", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--name", default="photos", help="the run's folder in benchmarks/.cache/codec")
    p.add_argument("--init", help="warm start from this cached run's weights")
    p.add_argument("--entropy", default="hyperprior", help="hyperprior | meanscale | channelwise | factorized")
    p.add_argument("--latent-grid", default="integer", help="integer | mean (meanscale / channelwise: y's grid)")
    p.add_argument("--hyper-input", default="abs", help="abs | signed (meanscale / channelwise: what h_a sees of y)")
    p.add_argument("--precision", default="auto", help="training's autocast: auto | fp32 | bf16")
    p = sub.add_parser("photos")
    p.add_argument("--runs", default="photos", help="cached runs to measure, comma-separated")
    p.add_argument("--test", type=int, default=200)
    p.add_argument("--avif", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--carry", default="", help="families (their --runs, e.g. photos-long2,photos-low2) to keep "
                   "from the committed codec_photos.json, not re-measured; several: separated by ';'")
    p = sub.add_parser("report")
    p.add_argument("--note", default=None, help="how this run was made, printed under the title; stored in "
                   "codec_fmnist.json and kept if omitted (a fresh fmnist measurement drops it: say anew how it was made)")
    parser.add_argument("--results", default=str(RESULTS), help="where the JSON/markdown/figure go")
    args = parser.parse_args()
    RESULTS = Path(args.results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.part == "report":
        import shutil

        from benchmarks.codec_report import _photo_families, write_report

        fm_path = RESULTS / "codec_fmnist.json"
        if fm_path.is_file():  # the middle lambda's strip (original | aeopt | WebP | JPEG) beside the table
            fm = json.loads(fm_path.read_text())
            mid, first = fm["timing"]["aeopt_lmbda"], fm["families"][0]  # the strip is the first family's
            runs = {p["lmbda"]: p["run"] for p in first["points"] if p.get("run")}  # a tiered family names its runs
            strip = CACHE / runs.get(mid, f"{first['prefix']}-{mid:g}") / "strip.png"
            if strip.is_file():
                shutil.copyfile(strip, RESULTS / "codec_strip_fmnist.png")
        ph_path = RESULTS / "codec_photos.json"
        if ph_path.is_file():  # the measured family's first run's strip (part_photos draws it there)
            first = _photo_families(json.loads(ph_path.read_text()))[0]["points"][0]["run"]
            if (CACHE / first / "strip.png").is_file():
                shutil.copyfile(CACHE / first / "strip.png", RESULTS / "codec_strip_photos.png")
        note = args.note
        if fm_path.is_file():  # the note lives in codec_fmnist.json, so a re-render keeps it
            fm = json.loads(fm_path.read_text())
            if note is None:
                note = fm.get("note", "")
            elif fm.get("note") != note:
                atomic_write_text(fm_path, json.dumps({**fm, "note": note}, indent=2) + "\n")
        write_report(RESULTS, note or "")
    else:
        from benchmarks.codec_photos import part_photos, train_photos

        {"train-fmnist": train_fmnist, "fmnist": part_fmnist, "fmnist-timing": part_fmnist_timing,
         "train-photos": train_photos, "photos": part_photos}[args.part](args)


if __name__ == "__main__":
    main()
