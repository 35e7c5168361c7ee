"""Entropy coding of the integer latents with constriction's range coder (a queue: FIFO).

Factorized: y's table row is its channel. Hyperprior: z is coded first, channel by channel, then
h_s (integer, intnet.py) gives every element of y a table row, and y is coded row by row, so the
decoder, which computes the same rows from the z it just decoded, reads the groups back in order.
A batch of images shares one stream: one call per table row for the whole batch instead of one
per image is what makes batch coding fast (one image is a batch of one).
The mean-scale hyperprior's h_s also gives each element of y an integer offset (its mean's integer
part): the coder codes y minus it, and the decoder adds it back. On the mean grid the offset is the
mean's bin centre (a multiple of 1/16) and y_hat = offset + an integer: the coder codes the integer,
and the latents it hands back (and g_s decodes) are y_hat, exact multiples of 1/16 in float64. The channel-wise model codes y
in channel slices, each grouped by row on its own, because the decoder needs slice s decoded
before it can compute slice s + 1's rows (its context nets read the earlier slices).
A value outside its row's range is coded as the row's escape symbol and then the value itself:
its bit length (uniform over 0..ESCAPE_BITS) and its bits below the leading one (uniform).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import AeoptError
from .intnet import A_BITS, ACT_LIMIT_LOG2, from_integers
from .tables import CodecTables, Table


try:  # the codec's optional group, aeopt[codec]: `import aeopt` and every other command work without it
    import constriction

    cmodel, queue = constriction.stream.model, constriction.stream.queue  # (a native module: no submodule imports)
except ImportError:
    constriction = cmodel = queue = None


def require_constriction() -> None:
    """One line saying how to install constriction when it is missing. load_codec and train_codec call
    it before any work; Coder calls it too, for other ways in."""
    if constriction is None:
        raise AeoptError("the codec needs the constriction package (entropy coding): "
                         "pip install 'aeopt[codec]' (or pip install constriction)")

ESCAPE_BITS = 22  # zigzag values below 2**22: latents are clamped to +-(2**21 - 1) before rounding
LATENT_LIMIT = 2 ** 21 - 1 - 2 ** 12  # and the mean-scale offsets are below 2**12 (intnet's activations)
ACTIVATION_LIMIT = float(2 ** (ACT_LIMIT_LOG2 + A_BITS))


@dataclass(frozen=True)
class YRows:
    """Table row of every element of y (N, M, h, w), and for the mean-scale model the offset
    subtracted before coding (None otherwise). Indexing slices images."""

    index: np.ndarray
    offset: np.ndarray | None = None  # int64, or float64 bin centres on the mean grid
    slices: int = 1  # channel slices coded one after another (the channel-wise model)

    def __getitem__(self, images) -> "YRows":
        return YRows(self.index[images], None if self.offset is None else self.offset[images], self.slices)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.index.shape


class _Models:
    """constriction models of a table's rows, built once and reused for every image."""

    def __init__(self, table: Table):
        self.table = table
        self.rows = [cmodel.Categorical(table.counts[r, :table.n[r] + 1].astype(np.float64), perfect=False)
                     for r in range(len(table.n))]


class Coder:
    """Codes a batch of same-size images into one stream: z channel by channel (all images'
    values of a channel together), then y grouped by table row (all images' elements of a row,
    in C order over (image, channel, row, column)); the channel-wise model's y slice by slice,
    each grouped so. One image is a batch of one."""

    def __init__(self, tables: CodecTables):
        require_constriction()  # before anything else: a missing package is one line, not None.attribute
        self.tables = tables
        self.y = _Models(tables.y)
        self.z = _Models(tables.z) if tables.z is not None else None

    @property
    def slices(self) -> int:
        return len(self.tables.contexts) + 1 if self.tables.contexts else 1

    def rows(self, z: np.ndarray, y_shape: tuple[int, ...], y: np.ndarray | None = None) -> YRows:
        """Table rows of y (N, M, h, w): integer h_s for the hyperpriors (with the context nets on
        y itself for the channel-wise model: the encoder's view), the channel otherwise."""
        if z is None:
            n, m, h, w = y_shape
            return YRows(np.broadcast_to(np.arange(m)[None, :, None, None], (n, m, h, w)))
        if self.slices == 1:
            return YRows(*self.tables.hyper.indices(z, y_shape[-2:]))
        base = self.tables.hyper.forward(from_integers(z), y_shape[-2:])
        parts = [self._slice_rows(base, y, s) for s in range(self.slices)]
        return YRows(np.concatenate([p.index for p in parts], 1), np.concatenate([p.offset for p in parts], 1),
                     self.slices)

    @property
    def on_mean_grid(self) -> bool:
        return self.tables.hyper is not None and self.tables.hyper.grid

    def quantize(self, y: np.ndarray, z: np.ndarray | None) -> tuple[np.ndarray, YRows]:
        """(y_hat, rows) of the encoder's y (N, M, h, w): on the integer grid y is already rounded and
        is y_hat; on the mean grid y is unrounded (float) and rounded around each element's bin centre,
        slice by slice for the channel-wise model (slice s's centres depend on y_hat before it)."""
        if not self.on_mean_grid:
            return y, self.rows(z, y.shape, y)
        if self.slices == 1:
            rows = YRows(*self.tables.hyper.indices(z, y.shape[-2:]))
            return rows.offset + np.rint(y - rows.offset), rows
        base = self.tables.hyper.forward(from_integers(z), y.shape[-2:])
        y_hat = np.zeros(y.shape, dtype=np.float64)
        k = y.shape[1] // self.slices
        parts = []
        for s in range(self.slices):
            part = self._slice_rows(base, y_hat, s)
            y_hat[:, s * k:(s + 1) * k] = part.offset + np.rint(y[:, s * k:(s + 1) * k] - part.offset)
            parts.append(part)
        return y_hat, YRows(np.concatenate([p.index for p in parts], 1), np.concatenate([p.offset for p in parts], 1),
                            self.slices)

    def _slice_rows(self, base: np.ndarray, y: np.ndarray, s: int) -> YRows:
        """Slice s's rows from h_s's fixed-point output (N, h, w, 2M) and y's slices before s
        (the model's quantize_latents, in integers)."""
        m = base.shape[-1] // 2
        k = m // self.slices
        own = np.concatenate([base[..., s * k:(s + 1) * k], base[..., m + s * k:m + (s + 1) * k]], -1)
        if s:
            own = own + self.tables.contexts[s - 1].forward(np.concatenate([own, from_integers(y[:, :s * k])], -1))
            # the sum of two clipped activations, clipped again: offsets stay below 2**12 (LATENT_LIMIT)
            np.clip(own, -ACTIVATION_LIMIT, ACTIVATION_LIMIT, out=own)
        return YRows(*self.tables.hyper.rows_of(own))

    # --- encoding -----------------------------------------------------------------------------
    @staticmethod
    def _encode_group(enc, values: np.ndarray, models: _Models, row: int) -> None:
        t = models.table
        sym = values - t.low[row]
        escape = (sym < 0) | (sym >= t.n[row])
        sym[escape] = t.n[row]
        enc.encode(sym.astype(np.int32), models.rows[row])
        if escape.any():
            _encode_escapes(enc, values[escape])

    def encode_into(self, enc, y: np.ndarray, z: np.ndarray | None, rows: YRows) -> None:
        """Append a batch: y (N, M, h, w), z (N, C, hz, wz) or None, rows = self.rows(z, y.shape)."""
        if z is not None:
            for c in range(z.shape[1]):
                self._encode_group(enc, z[:, c].ravel(), self.z, c)
        coded = y if rows.offset is None else y - rows.offset
        if coded.dtype.kind == "f":  # the mean grid: y_hat - its bin centre, an exact integer in float64
            coded = np.rint(coded).astype(np.int64)
        k = y.shape[1] // rows.slices
        for s in range(rows.slices):  # one slice (all of y) for all but the channel-wise model
            flat_y = coded[:, s * k:(s + 1) * k].ravel() if rows.slices > 1 else coded.ravel()
            index = rows.index[:, s * k:(s + 1) * k] if rows.slices > 1 else rows.index
            for row, members in _groups(index):
                self._encode_group(enc, flat_y[members], self.y, row)

    def encode(self, y: np.ndarray, z: np.ndarray | None, rows: YRows) -> bytes:
        enc = queue.RangeEncoder()
        self.encode_into(enc, y, z, rows)
        return finish(enc)

    # --- decoding -----------------------------------------------------------------------------
    @staticmethod
    def _decode_group(dec, count: int, models: _Models, row: int) -> np.ndarray:
        t = models.table
        sym = np.asarray(dec.decode(models.rows[row], count), dtype=np.int64)
        values = sym + t.low[row]
        escape = sym == t.n[row]
        if escape.any():
            values[escape] = _decode_escapes(dec, int(escape.sum()))
        return values

    def decode_z(self, dec, n: int, z_shape: tuple[int, int, int]) -> np.ndarray:
        c, h, w = z_shape
        return np.stack([self._decode_group(dec, n * h * w, self.z, k).reshape(n, h, w) for k in range(c)], 1)

    def decode_latents(self, decoders: list, n_each: int, y_shape: tuple[int, int, int],
                       z_shape: tuple[int, int, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(y, z) of n_each images from each decoder (a chunk: one decoder for all its images, or one
        per single-image file): z first, since y's rows come from it, then y slice by slice."""
        z = np.concatenate([self.decode_z(d, n_each, z_shape) for d in decoders]) if z_shape else None
        n = n_each * len(decoders)
        parts = [slice(i * n_each, (i + 1) * n_each) for i in range(len(decoders))]
        if self.slices == 1:
            rows = self.rows(z, (n, *y_shape))
            return np.concatenate([self.decode_y(d, rows[p]) for d, p in zip(decoders, parts)]), z
        base = self.tables.hyper.forward(from_integers(z), y_shape[-2:])
        y = np.zeros((n, *y_shape), dtype=np.float64 if self.on_mean_grid else np.int64)
        k = y_shape[0] // self.slices
        for s in range(self.slices):
            rows = self._slice_rows(base, y, s)
            for d, p in zip(decoders, parts):
                y[p, s * k:(s + 1) * k] = self.decode_y(d, rows[p])
        return y, z

    def decode_y(self, dec, rows: YRows) -> np.ndarray:
        """y of known rows, slice after slice when rows.slices > 1 (the encoder's trial decodes know
        every slice's rows; the decoder learns them slice by slice: decode_latents)."""
        if rows.slices > 1:
            k = rows.shape[1] // rows.slices
            return np.concatenate([self.decode_y(dec, YRows(rows.index[:, s * k:(s + 1) * k],
                                                            rows.offset[:, s * k:(s + 1) * k]))
                                   for s in range(rows.slices)], 1)
        y = np.zeros(rows.index.size, dtype=np.int64)
        for row, members in _groups(rows.index):
            y[members] = self._decode_group(dec, len(members), self.y, row)
        y = y.reshape(rows.shape)
        return y if rows.offset is None else y + rows.offset


def _groups(rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(row, flat indices of its elements in C order) for every table row in use, rows ascending:
    one stable sort instead of a full-array comparison per row (what a boolean mask per row costs)."""
    flat = rows.ravel()
    if flat.dtype.itemsize > 2 and (flat.size == 0 or int(flat.max()) < 2 ** 15):
        flat = flat.astype(np.int16)  # numpy sorts 16-bit integers stably by radix sort, not by comparisons
    order = np.argsort(flat, kind="stable")
    starts = np.flatnonzero(np.diff(flat[order], prepend=-1))
    ends = np.append(starts[1:], len(order))
    return [(int(flat[order[a]]), order[a:b]) for a, b in zip(starts, ends)]


def new_encoder():
    return queue.RangeEncoder()


def start_decoder(stream: bytes):
    """A decoder over the stream, zero-padded to whole 32-bit words (trimmed() cuts the last word short)."""
    padded = bytes(stream) + b"\0" * (-len(stream) % 4)
    return queue.RangeDecoder(np.frombuffer(padded, dtype=">u4").astype(np.uint32))


def finish(enc) -> bytes:
    return enc.get_compressed().astype(">u4").tobytes()


TRIM_BELOW = 4096  # bytes: below this the ~2 bytes that trimming saves are worth its trial decodes


def trimmed(stream: bytes, decodes: Callable[[bytes], bool]) -> bytes:
    """The stream cut to as few bytes as still decode to the same symbols once zero-padded.

    The range coder ends on whole 32-bit words, wasting 2 bytes per stream on average: a third of
    the gap between a 28x28 image's file and its information content. Any number inside the final
    coding interval decodes the same, so the shortest prefix that, padded with zeros, lands inside it
    is either the stream's prefix itself or that prefix plus one unit in its last byte; both are
    tried with a real decode (`decodes`), shortest first while one works. Saves 1.8 bytes per stream
    on average (design_notes.md). Only streams under TRIM_BELOW bytes are worth the trial decodes."""
    if len(stream) >= TRIM_BELOW:
        return stream
    best = stream
    for cut in range(1, len(stream)):
        head = stream[:-cut]
        bumped = int.from_bytes(head, "big") + 1
        candidates = [head] + ([bumped.to_bytes(len(head), "big")] if bumped < 256 ** len(head) else [])
        fits = next((c for c in candidates if decodes(c)), None)
        if fits is None:  # a shorter cut needs a coarser multiple inside the same interval: none
            return best
        best = fits
    return best


def _encode_escapes(enc, values: np.ndarray) -> None:
    u = np.where(values >= 0, 2 * values, -2 * values - 1)  # zigzag: small magnitudes, small numbers
    bits = np.array([int(v).bit_length() for v in u], dtype=np.int64)
    enc.encode(bits.astype(np.int32), cmodel.Uniform(ESCAPE_BITS + 1))
    long = bits > 1
    if long.any():
        low_bits = u[long] - (1 << (bits[long] - 1))
        enc.encode(low_bits.astype(np.int32), cmodel.Uniform(), (1 << (bits[long] - 1)).astype(np.int32))


def _decode_escapes(dec, count: int) -> np.ndarray:
    bits = np.asarray(dec.decode(cmodel.Uniform(ESCAPE_BITS + 1), count), dtype=np.int64)
    u = np.where(bits == 1, 1, 0).astype(np.int64)
    long = bits > 1
    if long.any():
        sizes = (1 << (bits[long] - 1)).astype(np.int32)
        u[long] = sizes + np.asarray(dec.decode(cmodel.Uniform(), sizes), dtype=np.int64)
    return np.where(u % 2 == 0, u // 2, -(u + 1) // 2)
