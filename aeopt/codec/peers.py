"""The codecs a user would otherwise pick (Pillow): PNG, JPEG, WebP, AVIF on whole files.

Each point is (codec, setting) with its total bytes, bpp and PSNR (from the mean MSE, peak 255)
over the same images, and the encode + decode time per image. Settings follow benchmarks/
(WebP method 6, AVIF speed 4, PNG optimize).
"""
from __future__ import annotations

import io
import math
import time

import numpy as np

SETTINGS = {"PNG": [None], "JPEG": [5, 10, 30, 50, 75, 90], "WebP": [0, 10, 30, 50, 75, 90],
            "AVIF": [0, 10, 30, 50, 70, 90]}


def _pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))


def encode_file(image: np.ndarray, codec: str, setting) -> bytes:
    buf = io.BytesIO()
    im = _pil(image)
    if codec == "PNG":
        im.save(buf, "PNG", optimize=True)
    elif codec == "JPEG":
        im.save(buf, "JPEG", quality=setting)
    elif codec == "WebP":
        im.save(buf, "WEBP", quality=setting, method=6)
    elif codec == "AVIF":
        im.save(buf, "AVIF", quality=setting, speed=4)
    else:
        raise ValueError(f"unknown peer codec {codec!r}")
    return buf.getvalue()


def decode_file(data: bytes, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        pixels = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def measure_peer(images: list[np.ndarray], codec: str, setting) -> dict:
    total, se, values = 0, 0.0, 0
    started = time.perf_counter()
    files = [encode_file(im, codec, setting) for im in images]
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    decoded = [decode_file(f, im.shape[0]) for f, im in zip(files, images)]
    decode_s = time.perf_counter() - started
    for f, im, d in zip(files, images, decoded):
        total += len(f)
        se += float(np.square(im.astype(np.float64) - d.astype(np.float64)).sum())
        values += im.size
    pixels = sum(im.shape[1] * im.shape[2] for im in images)
    mse = se / values
    return {"codec": codec, "setting": setting, "bytes": total, "bytes_per_image": total / len(images),
            "bpp": 8 * total / pixels, "psnr": math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse),
            "encode_ms_per_image": 1000 * encode_s / len(images), "decode_ms_per_image": 1000 * decode_s / len(images)}


def measure_peers(images: list[np.ndarray], settings: dict | None = None) -> list[dict]:
    return [measure_peer(images, codec, s) for codec, values in (settings or SETTINGS).items() for s in values]


def closest_setting(image: np.ndarray, codec: str, target_bytes: int) -> tuple[int, bytes]:
    """The quality setting (0..100) whose file for `image` is closest in size to target_bytes."""
    best = None
    for q in range(0, 101, 5):
        data = encode_file(image, codec, q)
        if best is None or abs(len(data) - target_bytes) < abs(len(best[1]) - target_bytes):
            best = (q, data)
    return best
