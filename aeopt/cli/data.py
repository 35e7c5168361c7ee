"""`aeopt shard`: write any data spec as a folder of .npy shards (`shards:DIR`, see aeopt/data/shards.py)."""
from __future__ import annotations

import argparse

from ..data.datasets import read_source
from ..data.shards import write_shards
from .flags import add_common_flags


def cmd_shard(args: argparse.Namespace) -> None:
    x, y, _ = read_source(args.data, data_dir=args.data_dir, mmap=True)  # a big .npy is read through its map
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(x), unit="sample", dynamic_ncols=True)
    try:
        meta = write_shards(x, y, args.out, args.shard_size, overwrite=args.overwrite,
                            progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    labels = "with labels" if y is not None else "no labels"
    print(f"wrote {meta['count']:,} samples ({meta['dtype']}, shape {tuple(meta['sample_shape'])}, {labels}) as "
          f"{len(meta['shards'])} shard(s) to {args.out}; train on them with --data shards:{args.out}")


def add_commands(sub) -> None:
    p = sub.add_parser("shard", help="write a data spec as .npy shards, for data larger than memory (shards:DIR)")
    p.add_argument("--data", required=True, help="any data spec: digits | fashion-mnist | npy:PATH | images:DIR ...")
    p.add_argument("--data-dir", help="folder holding fashion-mnist's IDX files")
    p.add_argument("--out", required=True, metavar="DIR", help="the shard folder to write")
    p.add_argument("--shard-size", type=int, default=50_000, help="samples per shard (default 50000)")
    add_common_flags(p)
    p.set_defaults(func=cmd_shard)
