"""Batch-mode throughput for benchmarks/codec.py: aeopt's many-image files on 1 and 2 cores beside
WebP and JPEG coding one file per image, in interleaved rounds."""
from __future__ import annotations

import time

import numpy as np
import torch

from aeopt.codec import compress, decompress_images
from aeopt.codec.peers import decode_file, encode_file


def _batch_timing(run, images: list[np.ndarray], workers: int) -> dict:
    """aeopt batch mode: one many-image file for all images, encode then decode, per image, on
    `workers` cores: torch and BLAS get one thread each (one worker is one core; BLAS would
    otherwise spread the integer h_s over both, and did in the tables before this one)."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):
        compress(run, images[:300], workers=workers)  # warm-up: first calls allocate
        started = time.perf_counter()
        data = compress(run, images, workers=workers)
        encode_s = time.perf_counter() - started
        started = time.perf_counter()
        decoded = decompress_images(run, data, workers=workers)
        decode_s = time.perf_counter() - started
    assert len(decoded) == len(images)
    n = len(images)
    return {"workers": workers, "encode_ms": 1000 * encode_s / n, "decode_ms": 1000 * decode_s / n,
            "images_per_s": n / (encode_s + decode_s), "file_bytes": len(data)}


def _peer_encode(job: tuple) -> list[bytes]:
    images, codec, setting = job
    return [encode_file(im, codec, setting) for im in images]


def _peer_decode(files: list[bytes]) -> int:
    for f in files:
        decode_file(f, 1)
    return len(files)


def _peer_timing(images: list[np.ndarray], codec: str, setting, workers: int = 1, pool: str = "threads") -> dict:
    """A peer's encode then decode of every image, per image; with workers > 1 the images are split
    into `workers` parts coded side by side by a thread pool (Pillow holds the GIL part of the time:
    what a Python user gets from threads) or a process pool (the peer's ceiling on these cores; the
    files travel back to the parent, as a real pipeline needs them). Grey images only (decode_file)."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    parts = [images[k::workers] for k in range(workers)]
    executor = (ProcessPoolExecutor if pool == "processes" else ThreadPoolExecutor)(workers)
    with executor:
        list(executor.map(_peer_encode, [(p[:20], codec, setting) for p in parts]))  # start the workers
        started = time.perf_counter()
        files = list(executor.map(_peer_encode, [(p, codec, setting) for p in parts]))
        encode_s = time.perf_counter() - started
        started = time.perf_counter()
        assert sum(executor.map(_peer_decode, files)) == len(images)
        decode_s = time.perf_counter() - started
    n = len(images)
    return {"codec": codec, "setting": setting, "workers": workers, "pool": pool if workers > 1 else None,
            "encode_ms": 1000 * encode_s / n, "decode_ms": 1000 * decode_s / n, "images_per_s": n / (encode_s + decode_s)}


def timing_rounds(runs: dict, test: list[np.ndarray], rounds: int) -> dict:
    """Batch throughput of each run (1 and 2 cores) and of the peers, `rounds` times interleaved; each
    row is the round with the median images/s, so one burst of another tenant's load moves one round
    and not the figure (this machine is shared); every round is kept."""
    each = []
    for _ in range(rounds):
        each.append({"aeopt": [{"model": prefix, **_batch_timing(run, test, workers)}
                               for prefix, run in runs.items() for workers in (1, 2)],
                     "peers": [_peer_timing(test, "WebP", 10), _peer_timing(test, "WebP", 10, 2, "threads"),
                               _peer_timing(test, "WebP", 10, 2, "processes"), _peer_timing(test, "JPEG", 50)]})

    def median(kind: str, k: int) -> dict:
        rows = sorted((r[kind][k] for r in each), key=lambda row: row["images_per_s"])
        return rows[(len(rows) - 1) // 2]

    out = {kind: [median(kind, k) for k in range(len(each[0][kind]))] for kind in ("aeopt", "peers")}
    return {**out, "rounds": each} if rounds > 1 else out
