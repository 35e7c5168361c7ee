"""Batch sources: where the training loop draws its batches from.

The loop asks a source for the batches of an epoch; the order is a pure function of (seed, epoch),
so a run resumed after epoch e replays epoch e+1 bit for bit, and with `rank`/`world_size` each
process of a multi-process run takes its own interleaved share of that same order.
- `InMemorySource`: the split as one tensor on the device, batches by `index_select` (the fast path:
  no copies through the host, no worker processes).
- `MmapSource`: a memory-mapped array (`np.load(mmap_mode="r")`), read batch by batch; rows are
  gathered in ascending file order (sequential reads) and put back in the epoch's order, so both
  sources yield the same batches from the same data.
"""
from __future__ import annotations

from typing import Callable, Iterator, Protocol

import numpy as np
import torch


class BatchSource(Protocol):
    sample_shape: tuple[int, ...]

    def __len__(self) -> int:
        """Samples this process sees per epoch."""

    def batches(self, epoch: int, batch_size: int) -> Iterator[torch.Tensor]:
        """The epoch's batches, on the source's device, in the order fixed by (seed, epoch)."""

    def in_order(self, batch_size: int) -> Iterator[torch.Tensor]:
        """This process's samples in file order (validation passes): every rank::world_size-th, so that
        over all processes each sample is seen once."""


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float32 in [0, 1] (the same values as numpy's x / 255); other tensors unchanged."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of epoch `epoch`: the same on every process and on every resume."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This process's share of an epoch's order: every world_size-th sample from `rank` on, cut to an
    equal count on every process (so all take the same number of steps)."""
    per_rank = len(order) // world_size if world_size > 1 else len(order)
    return order[rank::world_size][:per_rank]


class InMemorySource:
    """A split held as one tensor on the training device; uint8 pixels become float32 in [0, 1] one batch
    at a time (the same values as converting the whole split first)."""

    def __init__(self, x: torch.Tensor, *, seed: int, device: torch.device | str = "cpu", rank: int = 0,
                 world_size: int = 1):
        self.x = x.to(device)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.sample_shape = tuple(x.shape[1:])

    def __len__(self) -> int:
        return len(shard(torch.arange(len(self.x)), self.rank, self.world_size))

    def batches(self, epoch: int, batch_size: int) -> Iterator[torch.Tensor]:
        order = shard(epoch_order(len(self.x), self.seed, epoch), self.rank, self.world_size).to(self.x.device)
        for start in range(0, len(order), batch_size):
            yield as_float(self.x.index_select(0, order[start:start + batch_size]))

    def in_order(self, batch_size: int) -> Iterator[torch.Tensor]:
        x = self.x if self.world_size == 1 else self.x[self.rank::self.world_size]  # every sample, on some rank
        for start in range(0, len(x), batch_size):
            yield as_float(x[start:start + batch_size])


class MmapSource:
    """Rows of a (memory-mapped) array, turned into float32 samples by `to_samples` batch by batch.

    Only one batch is ever in memory: resident memory stays flat however large the file is.
    """

    def __init__(self, array: np.ndarray, rows: np.ndarray, to_samples: Callable[[np.ndarray], np.ndarray], *,
                 seed: int, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                 release: Callable[[int], None] | None = None,
                 gather: Callable[[np.ndarray, np.ndarray], np.ndarray] = lambda array, rows: array[rows]):
        self.array, self.rows, self.to_samples = array, np.asarray(rows, dtype=np.int64), to_samples
        self.release = release  # hands the map's pages back to the page cache as batches are read
        self.gather = gather    # array[rows], read without mapping the file's pages (data/shards.py)
        self.seed, self.device, self.rank, self.world_size = seed, torch.device(device), rank, world_size
        self.sample_shape = tuple(to_samples(array[:1]).shape[1:])

    def __len__(self) -> int:
        return len(shard(torch.arange(len(self.rows)), self.rank, self.world_size))

    def batches(self, epoch: int, batch_size: int) -> Iterator[torch.Tensor]:
        order = shard(epoch_order(len(self.rows), self.seed, epoch), self.rank, self.world_size).numpy()
        yield from self._read(order, batch_size)

    def in_order(self, batch_size: int) -> Iterator[torch.Tensor]:
        yield from self._read(np.arange(self.rank, len(self.rows), self.world_size), batch_size)

    def _read(self, order: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(order), batch_size):
            wanted = self.rows[order[start:start + batch_size]]
            ascending = np.argsort(wanted, kind="stable")
            block = self.to_samples(self.gather(self.array, wanted[ascending]))  # sorted: sequential reads
            batch = np.empty_like(block)
            batch[ascending] = block
            if self.release is not None:
                self.release(block.nbytes)
            yield torch.from_numpy(batch).to(self.device)
