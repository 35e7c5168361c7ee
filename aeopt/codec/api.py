"""compress / decompress: images <-> .aec bytes with a trained codec run.

Images are uint8 arrays (or floats in [0, 1]) shaped (H, W), (C, H, W) or a batch (N, C, H, W),
or a list of such images of different sizes. Decoding returns uint8. What the decoder outputs is
exactly `model.reconstruct_quantized(x)` rounded to 8 bits: the latents are entropy-decoded
bit-exactly, and the hyperprior's table choice is integer arithmetic (intnet.py).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from ..errors import AeoptError
from ..models.codec.transforms import HYPER_STRIDE
from . import coder, container
from .coder import LATENT_LIMIT
from .parallel import in_parallel
from .refine import check_size, check_steps, refine
from .run import CodecRun, load_codec

BATCH = 256  # images per transform call: big enough for throughput, small enough for memory
BATCH_PIXELS = 1 << 21  # and at most ~2 Mpixel per call: a batch of photos' activations stays < 1 GB


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


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
    return torch.round(x.clamp(0, 1) * 255).to(torch.uint8).contiguous().numpy()  # NCHW even after channels_last


def chunks(sizes: list[tuple[int, int]]) -> list[tuple[tuple[int, int], list[int]]]:
    """The coding order: images grouped by size (in order of first appearance), BATCH at a time (fewer
    for large images, BATCH_PIXELS).
    Encoder and decoder both derive it from the list of sizes alone."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(i)
    out = []
    for size, idx in groups.items():
        step = max(1, min(BATCH, BATCH_PIXELS // (size[0] * size[1])))
        out += [(size, idx[k:k + step]) for k in range(0, len(idx), step)]
    return out


PRECISIONS = ("fp32", "bf16")  # of the encoder's transforms; decoding is always fp32


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise AeoptError(f"unknown encoding precision {precision!r}; known: {', '.join(PRECISIONS)}")
    return precision


@torch.no_grad()
def encode_latents(run: CodecRun, x: torch.Tensor, precision: str = "fp32", refine_steps: int = 0
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """Integer y (and z) of a same-size batch (N, C, H, W) in [0, 1]; on the mean grid y as a float64
    (unrounded, or refine's y_hat): the coder rounds it around the integer h_s's means (Coder.quantize).

    `precision="bf16"` runs g_a and h_a under bf16 autocast (meant for CPUs with AMX; not timed yet):
    that changes which integers the encoder picks, never whether they decode, since the decoder
    reads the integers themselves and chooses their tables in integer arithmetic (intnet.py).
    `refine_steps` > 0 searches for better integers than rounding finds (refine.py), in fp32 on the CPU.
    On a GPU (run.encode_device) only g_a and h_a run there; y and z come back to the CPU."""
    model, device = run.model.eval(), run.encode_device
    encoder = run.encoder()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=check_precision(precision) == "bf16"):
        y = encoder.analyse(channels_last(x.to(device))).float().clamp(-LATENT_LIMIT, LATENT_LIMIT)
        z = None
        if model.has_hyperprior:
            # h_a sees y before rounding, as in training (and in CompressAI's compress): on rounded y it
            # predicted scales that cost Fashion-MNIST files 17% more at the lowest rate (codec.md)
            z = encoder.hyper_analyse(y).float().clamp(-LATENT_LIMIT, LATENT_LIMIT).cpu()
        y = y.cpu()
    if model.on_mean_grid:  # y is rounded around its means by the coder, from the integer h_s (Coder.quantize)
        if refine_steps:  # y_hat on the grid of the float h_s, which the coder's almost always matches
            y, z = refine(model, x.float(), y.float(), z, check_steps(refine_steps))
        return y.double().numpy(), torch.round(z).clamp(-LATENT_LIMIT, LATENT_LIMIT).long().numpy()
    y, z = refine(model, x.float(), y, z, check_steps(refine_steps))
    as_ints = lambda t: t.clamp(-LATENT_LIMIT, LATENT_LIMIT).long().numpy()  # noqa: E731
    return as_ints(y), None if z is None else as_ints(z)


@torch.no_grad()
def _synthesise(run: CodecRun, y: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return to_uint8(run.model.synthesise(channels_last(torch.from_numpy(y).float()), size))


@dataclass
class Chunk:
    """The latents of a chunk of same-size images (chunks()), y_hat as the decoder will have it
    (integers, or the mean grid's float64 values), and their table rows."""

    size: tuple[int, int]
    idx: list[int]
    y: np.ndarray
    z: np.ndarray | None
    rows: coder.YRows
    slice: int = 0  # which slice of the file (container.slices) its images are in


def latents(run: CodecRun, images, *, progress=None, precision: str = "fp32", refine: int = 0
            ) -> tuple[list[tuple[int, int]], list[Chunk]]:
    """(sizes, chunks) of every image: what encode() codes, computed once (measure() codes it twice)."""
    run = load_codec(run)
    items = as_images(images, run.channels)
    sizes = [tuple(im.shape[1:]) for im in items]
    _check_options(sizes, precision, refine)
    return sizes, _latents_of(run, items, sizes, progress, precision, refine)


def _latents_of(run: CodecRun, items: list[torch.Tensor], sizes: list[tuple[int, int]], progress,
                precision: str, refine: int) -> list[Chunk]:
    """The chunks of images already checked (as_images, _check_options): latents() and encode's slices."""
    out = []
    for k, size, idx in sliced_chunks(sizes):
        y, z = encode_latents(run, torch.stack([items[i] for i in idx]), precision, refine)
        y, rows = run.coder.quantize(y, z)
        out.append(Chunk(size, idx, y, z, rows, k))
        if progress is not None:
            progress.update(len(idx))
    return out


def _check_options(sizes: list[tuple[int, int]], precision: str, refine: int) -> None:
    check_precision(precision)
    check_steps(refine)
    if refine:
        for size in set(sizes):
            check_size(*size)


def sliced_chunks(sizes: list[tuple[int, int]]) -> list[tuple[int, tuple[int, int], list[int]]]:
    """(slice, size, image indices) in coding order: each slice's images in chunks(), slice by slice;
    the order of a one-slice file is chunks(sizes) itself (what versions 1 and 2 coded)."""
    return [(k, size, [a + i for i in idx]) for k, (a, b) in enumerate(container.slices(sizes))
            for size, idx in chunks(sizes[a:b])]


def streams(run: CodecRun, parts: list[Chunk], n_images: int, *, joint: bool = True) -> list[bytes]:
    """One stream per slice (`joint`: a many-image file), else one stream per image; short streams
    cut to the bytes they need (coder.trimmed)."""
    if joint:
        out = []
        for k in sorted({part.slice for part in parts}):
            mine = [part for part in parts if part.slice == k]
            enc = coder.new_encoder()
            for part in mine:
                run.coder.encode_into(enc, part.y, part.z, part.rows)
            out.append(coder.trimmed(coder.finish(enc), lambda stream, mine=mine: _decodes_to(run, stream, mine)))
        return out
    out: list = [None] * n_images
    for part in parts:
        for k, i in enumerate(part.idx):
            one = Chunk(part.size, [i], part.y[k:k + 1], None if part.z is None else part.z[k:k + 1],
                        part.rows[k:k + 1])
            stream = run.coder.encode(one.y, one.z, one.rows)
            out[i] = coder.trimmed(stream, lambda s, one=one: _decodes_to(run, s, [one]))
    return out


def _decodes_to(run: CodecRun, stream: bytes, parts: list[Chunk]) -> bool:
    """Whether the stream decodes to exactly these latents (z first: y's tables come from it; y with
    its known rows, which a stream that decodes to these latents makes the decoder's rows too)."""
    try:
        decoder = coder.start_decoder(stream)
        for part in parts:
            _, z_shape = latent_shapes(run, *part.size)
            if z_shape and not np.array_equal(run.coder.decode_z(decoder, len(part.idx), z_shape), part.z):
                return False
            if not np.array_equal(run.coder.decode_y(decoder, part.rows), part.y):
                return False
        return True
    except (AssertionError, ValueError, RuntimeError, OverflowError):  # what constriction raises on bad data
        return False


def encode(run, images, *, joint: bool = True, reconstruct: bool = False, progress=None, precision: str = "fp32",
           refine: int = 0, workers: int | None = None):
    """(sizes, streams, reconstructions): `joint` -> one stream per slice of the images
    (container.slices: a many-image file), else one stream per image; reconstructions (the decoder's
    uint8 output) on request; `precision`: of the encoder's transforms (encode_latents); `refine`:
    steps of the encode-time search for better latents (refine.py; 0 = plain rounding); `workers`:
    threads coding slices side by side (parallel.py; None: as many as torch may use). The file is the
    same whatever the number of workers."""
    run = load_codec(run)
    items = as_images(images, run.channels)
    sizes = [tuple(im.shape[1:]) for im in items]
    _check_options(sizes, precision, refine)
    bounds = container.slices(sizes) if joint else [(0, len(items))]

    def one_slice(bound: tuple[int, int]):
        a, b = bound
        parts = _latents_of(run, items[a:b], sizes[a:b], progress, precision, refine)
        recon: list = [None] * (b - a)
        if reconstruct:
            for part in parts:
                for k, x_hat in zip(part.idx, _synthesise(run, part.y, part.size)):
                    recon[k] = x_hat
        return streams(run, parts, b - a, joint=joint), recon

    done = in_parallel(one_slice, bounds, workers)
    coded = [stream for streams_, _ in done for stream in streams_] if joint else done[0][0]
    return sizes, coded, [x_hat for _, recon in done for x_hat in recon]


def compress(run, images, *, precision: str = "fp32", refine: int = 0, workers: int | None = None) -> bytes:
    """One .aec file holding every image (a single-image file for one image); `precision`: of the
    encoder's transforms, fp32 or bf16 (the file decodes the same way, in fp32, anywhere);
    `refine`: steps of the encode-time search for smaller files (refine.py), 0 = none; `workers`:
    threads (None: as many as torch may use; the file does not depend on it)."""
    run = load_codec(run)
    sizes, coded, _ = encode(run, images, precision=precision, refine=refine, workers=workers)
    return run.pack(sizes, coded)


def latent_shapes(run: CodecRun, h: int, w: int) -> tuple[tuple[int, int, int], tuple[int, int, int] | None]:
    s = run.model.stride
    yh, yw = -(-h // s), -(-w // s)
    y_shape = (run.model.latent_dim, yh, yw)
    if not run.model.has_hyperprior:
        return y_shape, None
    return y_shape, (run.model.hyper_width, -(-yh // HYPER_STRIDE), -(-yw // HYPER_STRIDE))


def _decode_chunk(run: CodecRun, decoders: list, size: tuple[int, int], n_each: int) -> np.ndarray:
    """y of a chunk: one decoder holding all its images (n_each = chunk size), or one per image."""
    return run.coder.decode_latents(decoders, n_each, *latent_shapes(run, *size))[0]


@contextmanager
def _decoding(what: str):
    """constriction reports impossible data with AssertionError/ValueError: one line for the user."""
    try:
        yield
    except AeoptError:
        raise
    except (AssertionError, ValueError, RuntimeError, OverflowError) as err:
        detail = str(err).splitlines()[0][:80] if str(err) else type(err).__name__
        raise AeoptError(f"{what} is damaged (its stream does not decode: {detail})") from None


def decompress_images(run, data: bytes, *, what: str = "the data", progress=None, workers: int | None = None
                      ) -> list[np.ndarray]:
    """Every image of an .aec file, uint8 (C, H, W) each, in order; `workers`: threads decoding its
    slices side by side (None: as many as torch may use)."""
    run = load_codec(run)
    sizes, slices = run.unpack(data, what)

    def one_slice(part: tuple[int, int, bytes]) -> list[np.ndarray]:
        a, b, stream = part
        out: list = [None] * (b - a)
        with _decoding(what):
            decoder = coder.start_decoder(stream)
            for size, idx in chunks(sizes[a:b]):
                for i, x_hat in zip(idx, _synthesise(run, _decode_chunk(run, [decoder], size, len(idx)), size)):
                    out[i] = x_hat
                if progress is not None:
                    progress.update(len(idx))
        return out

    return [x_hat for part in in_parallel(one_slice, slices, workers) for x_hat in part]


def decompress_files(run, files: list[bytes], *, names: list[str] | None = None, progress=None,
                     workers: int | None = None) -> list[list[np.ndarray]]:
    """The images of many .aec files, each checked on its own; single-image files of one size are
    decoded in shared batches (one h_s and one synthesis call per BATCH files), `workers` batches
    (or slices of a many-image file) at a time."""
    run = load_codec(run)
    names = names or [f"file {i}" for i in range(len(files))]
    parsed = [(sizes, slices[0][2]) for sizes, slices in (run.unpack(data, name) for data, name in zip(files, names))]
    out: list = [None] * len(files)
    singles = [i for i, (sizes, _) in enumerate(parsed) if len(sizes) == 1]
    for i, (sizes, _) in enumerate(parsed):
        if len(sizes) > 1:
            out[i] = decompress_images(run, files[i], what=names[i], progress=progress, workers=workers)

    def one_batch(batch: tuple[tuple[int, int], list[int]]) -> None:
        size, idx = batch
        files_idx = [singles[k] for k in idx]
        with _decoding(names[files_idx[0]] if len(files_idx) == 1 else f"one of {len(files_idx)} files"):
            decoders = [coder.start_decoder(parsed[i][1]) for i in files_idx]
            y = _decode_chunk(run, decoders, size, 1)
        for i, x_hat in zip(files_idx, _synthesise(run, y, size)):
            out[i] = [x_hat]
        if progress is not None:
            progress.update(len(idx))

    in_parallel(one_batch, chunks([parsed[i][0][0] for i in singles]), workers)
    return out


def decompress(run, data: bytes) -> np.ndarray:
    """The images of an .aec file as one uint8 array (N, C, H, W) (N = 1 for a single-image file)."""
    images = decompress_images(run, data)
    if len({im.shape for im in images}) > 1:
        raise AeoptError("the file holds images of different sizes; use aeopt.codec.decompress_images")
    return np.stack(images)
