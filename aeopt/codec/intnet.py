"""The hyperprior's h_s in integer arithmetic (after Ballé, Johnston & Minnen 2019, "Integer
networks for data compression").

Why: h_s's output chooses the CDF table of every element of y. If the encoder and the decoder
computed it in floats, a different thread count, precision or CPU could round one value across a
table boundary, and from there the range decoder reads garbage (the classic CompressAI
cross-platform failure). Here weights are fixed point with W_BITS fractional bits, activations
with A_BITS, the output log-scale is compared with integer thresholds, and every rescale is an
arithmetic shift: the same z gives the same table rows on every machine.

The products are summed by a float64 matrix product (BLAS, through torch) on integer-valued
operands. That is exact, not approximate: every product and every partial sum is an integer below
2**53, which float64 represents exactly, so no summation order, blocking, FMA or thread count can
change the result (numpy's own int64 matmul gives the same numbers, several times slower). The
bounds that make it so are enforced, not assumed: activations are clipped to +-2**ACT_LIMIT_LOG2
after every layer, weights must be below 2**WEIGHT_LIMIT_LOG2 and a layer's fan-in below MAX_FAN_IN
(both checked when the tables are built), so |sum| < 2**(24 + 16 + 12) = 2**52.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from ..errors import AeoptError

A_BITS, W_BITS = 12, 12
ACT_LIMIT_LOG2, WEIGHT_LIMIT_LOG2 = 12, 4  # |activation| < 4096, |weight| < 16 (fixed point: 2**24, 2**16)
MAX_FAN_IN = 1 << 12  # 9 x input channels: up to 455 channels


@dataclass
class IntConv:
    weight: np.ndarray  # (O, C, 3, 3) int64, W_BITS fractional bits
    bias: np.ndarray    # (O,) int64, A_BITS + W_BITS fractional bits
    shuffle: bool       # PixelShuffle(2) and ReLU follow
    relu: bool


class IntNet:
    """`phases` > 0: the mean-scale h_s, whose last layer gives log-scales then means (tables.py);
    a mean is read as its integer part (the coder's offset) and its fractional part in 1/phases.
    `grid`: the mean grid's h_s (the model's latent_grid="mean"): the offset is the mean's bin centre
    (floor(mean * phases) + 1/2) / phases itself, a multiple of 1/(2 phases), and the row the scale's."""

    def __init__(self, layers: list[IntConv], thresholds: np.ndarray, phases: int = 0, grid: bool = False):
        self.layers, self.thresholds, self.phases, self.grid = layers, thresholds, phases, grid
        # what indices() computes with, in float64 (integers below 2**53: exact)
        self._matrices = [conv_matrix(layer.weight) for layer in layers]
        self._thresholds64 = thresholds.astype(np.float64)

    @classmethod
    def from_module(cls, hs: nn.Sequential, scales: torch.Tensor, phases: int = 0, grid: bool = False) -> "IntNet":
        """Fixed-point copy of an h_s made of 3x3 Conv2d / PixelShuffle(2) / ReLU (transforms.py)."""
        modules = list(hs)
        layers = []
        for i, m in enumerate(modules):
            if not isinstance(m, nn.Conv2d):
                continue
            if m.kernel_size != (3, 3) or m.padding != (1, 1) or m.stride != (1, 1):
                raise AeoptError("the integer h_s supports only 3x3 stride-1 convolutions with padding 1")
            w = m.weight.detach().double()
            if 9 * m.in_channels > MAX_FAN_IN:
                raise AeoptError(f"the integer h_s takes at most {MAX_FAN_IN // 9} channels per layer; lower --width")
            if w.abs().max() >= 2 ** WEIGHT_LIMIT_LOG2 or m.bias.detach().abs().max() >= 2 ** ACT_LIMIT_LOG2:
                raise AeoptError("a hyper-decoder weight is too large for the integer h_s; retrain with a lower --lr")
            following = modules[i + 1:i + 3]
            shuffle = any(isinstance(f, nn.PixelShuffle) for f in following)
            relu = any(isinstance(f, nn.ReLU) for f in following)
            layers.append(IntConv(torch.round(w * 2 ** W_BITS).long().numpy(),
                                  torch.round(m.bias.detach().double() * 2 ** (A_BITS + W_BITS)).long().numpy(),
                                  shuffle, relu))
        # Row k of the y table holds scale k; an element uses the first row whose scale is >= exp(r),
        # i.e. the number of thresholds log(scale_k), k < last, that lie below r.
        thresholds = torch.round(torch.log(scales[:-1]) * 2 ** A_BITS).long().numpy()
        return cls(layers, thresholds, phases, grid)

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}.thresholds": torch.from_numpy(self.thresholds)}
        if self.phases:  # only then: the scale-only runs' fingerprints (which hash these) stay as they were
            out[f"{prefix}.phases"] = torch.tensor([self.phases])
        if self.grid:  # likewise: the integer-grid mean-scale runs' fingerprints stay as they were
            out[f"{prefix}.grid"] = torch.tensor([1])
        for i, layer in enumerate(self.layers):
            out[f"{prefix}.{i}.weight"] = torch.from_numpy(layer.weight)
            out[f"{prefix}.{i}.bias"] = torch.from_numpy(layer.bias)
            out[f"{prefix}.{i}.flags"] = torch.tensor([int(layer.shuffle), int(layer.relu)])
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], prefix: str) -> "IntNet":
        layers, i = [], 0
        while f"{prefix}.{i}.weight" in t:
            shuffle, relu = (bool(v) for v in t[f"{prefix}.{i}.flags"].tolist())
            layers.append(IntConv(t[f"{prefix}.{i}.weight"].numpy().astype(np.int64),
                                  t[f"{prefix}.{i}.bias"].numpy().astype(np.int64), shuffle, relu))
            i += 1
        phases = int(t[f"{prefix}.phases"][0]) if f"{prefix}.phases" in t else 0
        grid = f"{prefix}.grid" in t and bool(int(t[f"{prefix}.grid"][0]))
        return cls(layers, t[f"{prefix}.thresholds"].numpy().astype(np.int64), phases, grid)

    def indices(self, z_hat: np.ndarray, y_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        """Table row of every element of y, (N, M, H, W) int16, from the integer z_hat (N, C, h, w),
        and for the mean-scale h_s the integer part of each mean (int64, same shape; else None)."""
        return self.rows_of(self.forward(from_integers(z_hat), y_shape))

    def forward(self, a: np.ndarray, out_hw: tuple[int, int] | None = None) -> np.ndarray:
        """The network on fixed-point activations a (N, H, W, C: integers in float64 with A_BITS
        fractional bits, channels last); the last layer computes only the top-left out_hw outputs.

        Activations are integers held in float64, channels last (see _conv3x3 for why): the shift
        back to A_BITS is floor((a + half) / 2**W_BITS), exact in float64 as a power-of-two division
        of an integer below 2**53, so it equals the arithmetic shift of integers bit for bit."""
        limit = float(2 ** (ACT_LIMIT_LOG2 + A_BITS))
        for k, layer in enumerate(self.layers):
            last = k == len(self.layers) - 1
            # the last layer computes only the y positions the crop keeps (a padded y is odd-sized)
            hw = out_hw if last and out_hw is not None else a.shape[1:3]
            a = _conv3x3(a, self._matrices[k], hw) + layer.bias
            a = np.floor((a + (1 << (W_BITS - 1))) * 2.0 ** -W_BITS)
            if layer.shuffle:  # torch's PixelShuffle(2): channel 4c + 2i + j -> (c, 2h + i, 2w + j)
                n, h, w, c = a.shape
                a = a.reshape(n, h, w, c // 4, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(n, 2 * h, 2 * w, c // 4)
            if layer.relu:
                np.maximum(a, 0, out=a)
            np.clip(a, -limit, limit, out=a)
        return a

    def rows_of(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(rows, offsets) NCHW from fixed-point output activations (N, H, W, C): C log-scales, or
        with phases C/2 log-scales then C/2 means."""
        if not self.phases:
            # searched channels last (contiguous), then viewed channels first: int16 rows also let the
            # coder's grouping sort by radix (coder._groups)
            rows = np.searchsorted(self._thresholds64, a, side="left").astype(np.int16)
            return rows.transpose(0, 3, 1, 2), None
        m = a.shape[-1] // 2
        scale_rows = np.searchsorted(self._thresholds64, np.ascontiguousarray(a[..., :m]), side="left")
        # the mean in A_BITS fixed point: its floor and its 1/phases phase, by power-of-two scalings
        # of integers (exact in float64)
        mean = a[..., m:]
        if self.grid:  # the bin centre: (floor(mean * phases) + 1/2) / phases, exact for phases a power of 2
            centre = (np.floor(mean * (self.phases * 2.0 ** -A_BITS)) + 0.5) / self.phases
            return scale_rows.astype(np.int16).transpose(0, 3, 1, 2), centre.transpose(0, 3, 1, 2)
        whole = np.floor(mean * 2.0 ** -A_BITS)
        phase = np.floor(mean * (self.phases * 2.0 ** -A_BITS)) - whole * self.phases
        rows = (scale_rows * self.phases + phase).astype(np.int16)
        return rows.transpose(0, 3, 1, 2), whole.astype(np.int64).transpose(0, 3, 1, 2)


def from_integers(v: np.ndarray) -> np.ndarray:
    """Latents (N, C, H, W) as fixed-point activations, channels last (clipped to the limit): integers,
    or the mean grid's multiples of 1/16 (exact: A_BITS > 4)."""
    a = np.clip(v, -2 ** ACT_LIMIT_LOG2, 2 ** ACT_LIMIT_LOG2).astype(np.float64) * 2 ** A_BITS
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def conv_matrix(weight: np.ndarray) -> np.ndarray:
    """A (O, C, 3, 3) integer weight as the (9 * C, O) float64 matrix _conv3x3 multiplies by: tap-major,
    like its columns."""
    return weight.transpose(2, 3, 1, 0).reshape(-1, weight.shape[0]).astype(np.float64)


def _conv3x3(a: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Exact 3x3 convolution, zero padding 1 (cross-correlation, as torch's Conv2d), of an
    integer-valued float64 (N, H, W, C) array, keeping the top-left out_hw outputs: im2col and one
    float64 matrix product, whose sums stay below 2**53 (the module docstring says why that is
    exact, for any summation order). Channels last because each tap's columns are then contiguous
    runs of C values. Both steps run in torch (its im2col copy and its BLAS's float64 GEMM): they
    took 0.45-0.72x the time of numpy's strided copy and matrix product on the context nets' shapes
    (benchmarks/results/codec_intnet.md); a GEMM only multiplies and adds, so the result is the
    same integers whichever library sums them."""
    oh, ow = out_hw
    padded = torch.nn.functional.pad(torch.from_numpy(a), (0, 0, 1, 1, 1, 1))
    # (N, H, W, C, dy, dx) windows -> rows of (dy, dx, C), tap-major like conv_matrix's rows
    windows = padded.unfold(1, 3, 1).unfold(2, 3, 1)[:, :oh, :ow].permute(0, 1, 2, 4, 5, 3)
    cols = windows.reshape(-1, matrix.shape[0])
    return (cols @ torch.from_numpy(matrix)).reshape(a.shape[0], oh, ow, -1).numpy()
