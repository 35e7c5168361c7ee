"""compress / decompress: images <-> .aec bytes with a trained codec run.

Images are uint8 arrays (or floats in [0, 1]) shaped (H, W), (C, H, W) or a batch (N, C, H, W),
or a list of such images of different sizes. Decoding returns uint8. What the decoder outputs is
exactly `model.reconstruct_quantized(x)` rounded to 8 bits: the latents are entropy-decoded
bit-exactly, and the hyperprior's table choice is integer arithmetic (intnet.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..errors import AeoptError
from ..models.codec.model import CodecModel
from ..models.codec.transforms import HYPER_STRIDE
from . import container
from .coder import LATENT_LIMIT, Coder
from .tables import CodecTables, load_tables

BATCH = 256  # images per transform call: big enough for throughput, small enough for memory


@dataclass
class CodecRun:
    """A trained codec, ready to code: its model, its integer tables and their fingerprint."""

    path: Path
    model: CodecModel
    tables: CodecTables
    coder: Coder

    @property
    def channels(self) -> int:
        return self.model.input_shape[0]

    def pack(self, entries: list[container.Entry], *, many: bool | None = None) -> bytes:
        return container.pack(entries, rgb=self.channels == 3, fingerprint=self.tables.fingerprint,
                              many=len(entries) > 1 if many is None else many,
                              model_size=self.model.input_shape[1:])

    def unpack(self, data: bytes, what: str) -> list[container.Entry]:
        rgb, entries = container.unpack(data, fingerprint=self.tables.fingerprint, what=what,
                                        model_size=self.model.input_shape[1:])
        if rgb != (self.channels == 3):
            raise AeoptError(f"{what} holds {'RGB' if rgb else 'grey'} images but the codec is "
                             f"{'RGB' if self.channels == 3 else 'grey'}; the file is damaged")
        return entries


def load_codec(run: "str | Path | CodecRun") -> CodecRun:
    if isinstance(run, CodecRun):
        return run
    from ..runs import load

    loaded = load(run)
    if not isinstance(loaded.model, CodecModel):
        raise AeoptError(f"{run} is a {loaded.config.model!r} run, not a codec; train one with "
                         "`aeopt train --model codec`")
    tables = load_tables(run, loaded.model)
    return CodecRun(Path(run), loaded.model, tables, Coder(tables))


def as_images(images, channels: int) -> list[torch.Tensor]:
    """A list of float (C, H, W) tensors in [0, 1], checked against the model's channels."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        arr = images
        if arr.ndim == 2:
            arr = arr[None]
        items = [arr] if arr.ndim == 3 else list(arr) if arr.ndim == 4 else None
        if items is None:
            raise AeoptError(f"images must be (H, W), (C, H, W) or (N, C, H, W), got shape {tuple(arr.shape)}")
    elif isinstance(images, Iterable):
        items = [im[None] if im.ndim == 2 else im for im in images]
    else:
        raise AeoptError(f"images must be an array or a list of arrays, got {type(images).__name__}")
    if not items:
        raise AeoptError("no images to compress")
    out = []
    for im in items:
        t = im if isinstance(im, torch.Tensor) else torch.from_numpy(np.array(im))
        if t.ndim != 3 or t.shape[0] != channels:
            raise AeoptError(f"this codec codes {'grey' if channels == 1 else 'RGB'} images ({channels} "
                             f"channel{'s' if channels > 1 else ''}); got an image of shape {tuple(t.shape)}")
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        else:
            t = t.float()
            if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
                raise AeoptError("float images must hold finite values in [0, 1] (or pass uint8 pixels)")
        if min(t.shape[1:]) < 1 or max(t.shape[1:]) > container.MAX_SIDE:
            raise AeoptError(f"image sides must be 1..{container.MAX_SIDE} pixels, got {tuple(t.shape[1:])}")
        out.append(t)
    return out


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return torch.round(x.clamp(0, 1) * 255).to(torch.uint8).numpy()


def _same_size_groups(images: list[torch.Tensor]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape[1:]), []).append(i)
    return groups


@torch.no_grad()
def encode_latents(run: CodecRun, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    """Integer y (and z) of a same-size batch (N, C, H, W) in [0, 1]."""
    model = run.model.eval()
    y = torch.round(model.analyse(x).clamp(-LATENT_LIMIT, LATENT_LIMIT))
    z = None
    if model.entropy == "hyperprior":
        z = torch.round(model.hyper_analyse(y).clamp(-LATENT_LIMIT, LATENT_LIMIT)).long().numpy()
    return y.long().numpy(), z


def encode(run, images, *, reconstruct: bool = False, progress=None) -> tuple[list[container.Entry], list]:
    """Streams of each image (and, with `reconstruct`, the decoder's uint8 output for each)."""
    run = load_codec(run)
    items = as_images(images, run.channels)
    entries: list = [None] * len(items)
    recon: list = [None] * len(items)
    for (h, w), idx in _same_size_groups(items).items():
        for start in range(0, len(idx), BATCH):
            chunk = idx[start:start + BATCH]
            x = torch.stack([items[i] for i in chunk])
            y, z = encode_latents(run, x)
            for k, i in enumerate(chunk):
                entries[i] = container.Entry(h, w, run.coder.encode(y[k], None if z is None else z[k]))
                if progress is not None:
                    progress.update(1)
            if reconstruct:
                with torch.no_grad():
                    x_hat = to_uint8(run.model.synthesise(torch.from_numpy(y).float(), (h, w)))
                for k, i in enumerate(chunk):
                    recon[i] = x_hat[k]
    return entries, recon


def compress(run, images) -> bytes:
    """One .aec file holding every image (a single-image file for one image)."""
    run = load_codec(run)
    return run.pack(encode(run, images)[0])


def latent_shapes(run: CodecRun, h: int, w: int) -> tuple[tuple[int, int, int], tuple[int, int, int] | None]:
    s = run.model.stride
    yh, yw = -(-h // s), -(-w // s)
    y_shape = (run.model.latent_dim, yh, yw)
    if run.model.entropy != "hyperprior":
        return y_shape, None
    return y_shape, (run.model.width, -(-yh // HYPER_STRIDE), -(-yw // HYPER_STRIDE))


def decode_entries(run: CodecRun, entries: list[container.Entry], *, progress=None) -> list[np.ndarray]:
    """uint8 (C, H, W) of each entry; the synthesis runs on same-size batches."""
    latents = []
    for e in entries:
        latents.append(run.coder.decode(e.stream, *latent_shapes(run, e.height, e.width))[0])
        if progress is not None:
            progress.update(1)
    out: list = [None] * len(entries)
    for (h, w), idx in _same_size_groups([torch.empty(0, e.height, e.width) for e in entries]).items():
        for start in range(0, len(idx), BATCH):
            chunk = idx[start:start + BATCH]
            with torch.no_grad():
                y = torch.from_numpy(np.stack([latents[i] for i in chunk])).float()
                x_hat = to_uint8(run.model.synthesise(y, (h, w)))
            for k, i in enumerate(chunk):
                out[i] = x_hat[k]
    return out


def decompress_images(run, data: bytes, *, what: str = "the data", progress=None) -> list[np.ndarray]:
    """Every image of an .aec file, uint8 (C, H, W) each, in order."""
    run = load_codec(run)
    return decode_entries(run, run.unpack(data, what), progress=progress)


def decompress_files(run, files: list[bytes], *, names: list[str] | None = None, progress=None
                     ) -> list[list[np.ndarray]]:
    """The images of many .aec files (each checked on its own), decoded in shared batches."""
    run = load_codec(run)
    names = names or [f"file {i}" for i in range(len(files))]
    parsed = [run.unpack(data, name) for data, name in zip(files, names)]
    flat = decode_entries(run, [e for entries in parsed for e in entries], progress=progress)
    out, pos = [], 0
    for entries in parsed:
        out.append(flat[pos:pos + len(entries)])
        pos += len(entries)
    return out


def decompress(run, data: bytes) -> np.ndarray:
    """The images of an .aec file as one uint8 array (N, C, H, W) (N = 1 for a single-image file)."""
    images = decompress_images(run, data)
    if len({im.shape for im in images}) > 1:
        raise AeoptError("the file holds images of different sizes; use aeopt.codec.decompress_images")
    return np.stack(images)
