"""A codec family with a model chosen per quality (tiers), measured as one RD curve against the peers.

  flock /tmp/aeopt-bench.lock python benchmarks/codec_family.py --name fmcgt \\
      --runs fmcg2-0.0003,fmcg2-0.0008,fmcg2-0.002,fmcgw2-0.005,fmcgw2-0.011,fmcgw2-0.013
  # the same tiers grown by residual units (--blocks 2 --decoder-blocks 2; codec.md lists each run's stages):
  flock /tmp/aeopt-bench.lock python benchmarks/codec_family.py --name fmcgrt \\
      --runs fmcgrn-0.0003,fmcgrn-0.0008,fmcgrn-0.002,fmcgrd-0.005,fmcgrd-0.011,fmcgrd-0.013
  python benchmarks/codec.py report --note "..."     # codec.md and codec_rd.png, this family first

Published codecs size the model to the quality: CompressAI's bmshj2018 models use 128/192 channels
for its five lower qualities and 192/320 above, since a high rate has more to say than a narrow
latent can carry. aeopt's wide probe (codec_wide_probe.json) found the same on Fashion-MNIST: the
wide channel-wise model (width 48, latent 32) saves 9% at 33 dB and 2% at 30 dB over the narrow one
(width 32, latent 16), which decodes a one-image file in about 60% of the wide one's time (codec.md);
below 30 dB the narrow one is used. A
family is the runs named by --runs (cached folders PREFIX-LAMBDA in benchmarks/.cache/codec), one
per lambda: a user trains each with its own flags (codec.md lists them).

Each run whose folder is here is measured now on the 10,000 test images (one .aec file each, every
byte counted, and one many-image file). A run whose folder is gone (the cache lives on one machine)
is carried from the committed codec_fmnist.json (its family PREFIX, its lambda): sizes and PSNR are
deterministic, so they stand beside this run's. A carried point measured before format 4 has its
one-file-per-image sizes taken 2 bytes smaller: format 4 ends every file under 256 bytes in a 2-byte
check instead of 4 and changes nothing else (exact while every file was under 260 bytes in format 3:
the measured points' `max_file_bytes` says how far the largest files are from that). The peers are
measured again on the same images in this run and compared with the committed ones. The family goes
first in codec_fmnist.json (the headline figures); the other families stay, their BD-rates taken
against this run's peers; the throughput table is kept with the machine it was measured on.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.codec import CACHE, FM_PEERS, RESULTS, _bd_table, measured_point, run_shape  # noqa: E402
from benchmarks.common import machine_line  # noqa: E402

import torch  # noqa: E402

import aeopt  # noqa: E402
from aeopt.codec.container import CHECKSUM_BYTES, SHORT_CHECK_BYTES  # noqa: E402
from aeopt.codec.peers import measure_peers  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402

PIXELS = 28 * 28


def as_format4(point: dict) -> dict:
    """A Fashion-MNIST point measured in format 3 or before, its one-file-per-image sizes as format 4
    writes them (the many-image file, over 256 bytes, is unchanged)."""
    if point.get("format", 3) >= 4:
        return dict(point)
    saved = CHECKSUM_BYTES - SHORT_CHECK_BYTES
    size = point["bytes_per_image"] - saved
    return {**point, "bytes_per_image": size, "bpp": 8 * size / PIXELS, "format": 4,
            "derived": f"measured in format 3; {saved} bytes less per file (format 4's short check)"}


def _carried(name: str, committed: dict) -> dict:
    prefix, lmbda = name.rsplit("-", 1)
    family = next((f for f in committed["families"] if f["prefix"] == prefix), None)
    point = family and next((p for p in family["points"] if p["lmbda"] == float(lmbda)), None)
    if not point:
        raise SystemExit(f"{name}: no cached run in {CACHE} and no such point in the committed codec_fmnist.json")
    shape = {k: family.get(k) for k in ("width", "latent", "hyper_width", "entropy", "latent_grid", "precision")}
    return {**as_format4(point), **shape, "run": name,
            "carried_from": family.get("carried_from") or committed["machine"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="fmcgt", help="the family's name in the tables")
    parser.add_argument("--runs", default="fmcg2-0.0003,fmcg2-0.0008,fmcg2-0.002,fmcgw2-0.005,fmcgw2-0.011,fmcgw2-0.013",
                        help="one cached run per lambda, PREFIX-LAMBDA, lowest lambda first")
    parser.add_argument("--results", default=str(RESULTS), help="the folder of codec_fmnist.json (read and rewritten)")
    args = parser.parse_args()
    path = Path(args.results) / "codec_fmnist.json"
    committed = json.loads(path.read_text())
    load_before = os.getloadavg()
    torch.set_num_threads(1)
    test = list((aeopt.load_data("fashion-mnist").x_test * 255).round().byte().numpy())[:committed["test_images"]]
    points = []
    for name in args.runs.split(","):
        run_dir = CACHE / name
        if run_dir.is_dir():
            point, _ = measured_point(run_dir, float(name.rsplit("-", 1)[1]), test)
            point = {**point, **run_shape(run_dir), "run": name}
        else:
            point = _carried(name, committed)
        points.append(point)
        print(json.dumps(point), flush=True)
    peers = measure_peers(test, FM_PEERS)
    before = {(p["codec"], p["setting"]): (p["bytes"], p["psnr"]) for p in committed["peers"]}
    changed = [f"{p['codec']} {p['setting']}" for p in peers if before.get((p["codec"], p["setting"])) != (p["bytes"], p["psnr"])]
    print("peers as committed" if not changed else f"peers differ from the committed run: {', '.join(changed)}")
    # shape and precision differ by tier: each point carries its own, the family only what they share
    family = {"prefix": args.name, "tiers": True, "runs": args.runs.split(","), "entropy": points[0]["entropy"],
              "latent_grid": points[0]["latent_grid"], "points": points}
    others = [{"carried_from": committed["machine"], **f} for f in committed["families"] if f["prefix"] != args.name]
    for f in [family] + others:
        f["bd_rate_per_file"] = _bd_table(f["points"], peers)
        f["bd_rate_batch_file"] = _bd_table(f["points"], peers, "batch_bpp")
    timing = dict(committed["timing"])
    if not timing.get("machine"):  # measured with the families' earlier run: keep its machine beside it
        timing.setdefault("measured_on", committed["machine"])
    result = {**committed, "machine": machine_line(), "load_before": load_before, "load_after": os.getloadavg(),
              "settings": {"part": "family", **vars(args)}, "aeopt": points, "peers": peers,
              "peers_as_committed": not changed, "bd_rate_per_file": family["bd_rate_per_file"],
              "bd_rate_batch_file": family["bd_rate_batch_file"], "families": [family] + others, "timing": timing}
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(json.dumps({f["prefix"]: f["bd_rate_per_file"] for f in result["families"]}))


if __name__ == "__main__":
    main()
