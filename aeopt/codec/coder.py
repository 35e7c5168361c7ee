"""Entropy coding of the integer latents with constriction's range coder (a queue: FIFO).

One stream per image. Factorized: y channel by channel, each with its own table row.
Hyperprior: z channel by channel, then h_s (integer, intnet.py) gives every element of y a table
row, and y is coded row by row (elements in raster order within a row), so the decoder, which
knows the same rows from the z it just decoded, reads the groups back in the same order.
A value outside its row's range is coded as the row's escape symbol and then the value itself:
its bit length (uniform over 0..ESCAPE_BITS) and its bits below the leading one (uniform).
"""
from __future__ import annotations

import numpy as np
import constriction

from ..errors import AeoptError
from .tables import CodecTables, Table

cmodel, queue = constriction.stream.model, constriction.stream.queue  # (a native module: no submodule imports)

ESCAPE_BITS = 22  # zigzag values below 2**22: latents are clamped to +-(2**21 - 1) before rounding
LATENT_LIMIT = 2 ** 21 - 1


class _Models:
    """constriction models of a table's rows, built once and reused for every image."""

    def __init__(self, table: Table):
        self.table = table
        self.rows = [cmodel.Categorical(table.counts[r, :table.n[r] + 1].astype(np.float64), perfect=False)
                     for r in range(len(table.n))]


class Coder:
    def __init__(self, tables: CodecTables):
        self.tables = tables
        self.y = _Models(tables.y)
        self.z = _Models(tables.z) if tables.z is not None else None

    # --- groups -------------------------------------------------------------------------------
    @staticmethod
    def _encode_group(enc, values: np.ndarray, models: _Models, row: int) -> None:
        t = models.table
        sym = values - t.low[row]
        escape = (sym < 0) | (sym >= t.n[row])
        sym[escape] = t.n[row]
        enc.encode(sym.astype(np.int32), models.rows[row])
        if escape.any():
            _encode_escapes(enc, values[escape])

    @staticmethod
    def _decode_group(dec, count: int, models: _Models, row: int) -> np.ndarray:
        t = models.table
        sym = np.asarray(dec.decode(models.rows[row], count), dtype=np.int64)
        values = sym + t.low[row]
        escape = sym == t.n[row]
        if escape.any():
            values[escape] = _decode_escapes(dec, int(escape.sum()))
        return values

    # --- one image ------------------------------------------------------------------------------
    def encode(self, y: np.ndarray, z: np.ndarray | None) -> bytes:
        """y (M, h, w) and z (C, hz, wz) int64 of one image -> its stream."""
        enc = queue.RangeEncoder()
        if z is None:
            for c in range(len(y)):
                self._encode_group(enc, y[c].ravel(), self.y, c)
        else:
            for c in range(len(z)):
                self._encode_group(enc, z[c].ravel(), self.z, c)
            rows = self.tables.hyper.indices(z[None], y.shape[-2:])[0]
            for row, values in _by_row(y, rows):
                self._encode_group(enc, values, self.y, row)
        return enc.get_compressed().astype(">u4").tobytes()

    def decode(self, stream: bytes, y_shape: tuple[int, int, int], z_shape: tuple[int, int, int] | None
               ) -> tuple[np.ndarray, np.ndarray | None]:
        if len(stream) % 4:
            raise AeoptError("the compressed stream is damaged (its length is not a whole number of words)")
        dec = queue.RangeDecoder(np.frombuffer(stream, dtype=">u4").astype(np.uint32))
        try:
            if z_shape is None:
                m, h, w = y_shape
                y = np.stack([self._decode_group(dec, h * w, self.y, c).reshape(h, w) for c in range(m)])
                return y, None
            zc, zh, zw = z_shape
            z = np.stack([self._decode_group(dec, zh * zw, self.z, c).reshape(zh, zw) for c in range(zc)])
            rows = self.tables.hyper.indices(z[None], y_shape[-2:])[0]
            y = np.zeros(rows.shape, dtype=np.int64)
            for row in np.unique(rows):
                mask = rows == row
                y[mask] = self._decode_group(dec, int(mask.sum()), self.y, int(row))
            return y, z
        except (AssertionError, ValueError, RuntimeError) as err:  # constriction's reports of invalid data
            raise AeoptError(f"the compressed stream is damaged ({str(err).splitlines()[0][:80]})") from None


def _by_row(y: np.ndarray, rows: np.ndarray):
    for row in np.unique(rows):
        yield int(row), y[rows == row]


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
