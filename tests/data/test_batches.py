import numpy as np
import pytest
import torch

import aeopt
from aeopt.data import InMemorySource, MappedSplit, MmapSource, load_data
from aeopt.data.batches import shard


def test_in_memory_and_mapped_sources_yield_the_same_batches(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(103, 1, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "x.npy", pixels)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    rows = np.arange(3, 103)  # a split: not every row, not starting at 0
    to_float = lambda a: np.divide(a, 255, dtype=np.float32)  # noqa: E731
    memory = InMemorySource(torch.from_numpy(to_float(pixels[rows])), seed=5)
    stream = MmapSource(mapped, rows, to_float, seed=5)
    for epoch in (0, 1):
        a, b = list(memory.batches(epoch, 16)), list(stream.batches(epoch, 16))
        assert len(a) == len(b) == 7
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(next(memory.batches(0, 16)), next(memory.batches(1, 16)))  # a new order per epoch
    assert torch.equal(torch.cat(list(stream.in_order(32))), torch.from_numpy(to_float(pixels[rows])))


def test_ranks_take_disjoint_equal_shares_of_one_epoch_order():
    order = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    shares = [shard(order, rank, 2) for rank in range(2)]
    assert len(shares[0]) == len(shares[1]) == 51  # equal step counts on every rank; one sample left out
    assert not set(shares[0].tolist()) & set(shares[1].tolist())
    x = torch.arange(103.0)[:, None]
    per_rank = [InMemorySource(x, seed=1, rank=r, world_size=2) for r in range(2)]
    seen = [torch.cat(list(s.batches(0, 8))).flatten().tolist() for s in per_rank]
    assert len(seen[0]) == len(per_rank[0]) == 51 and not set(seen[0]) & set(seen[1])


@pytest.mark.parametrize("dtype", ["uint8", "float32-table"])
def test_training_from_a_memory_map_matches_the_in_memory_run(tmp_path, dtype):
    digits = load_data("digits")
    if dtype == "uint8":
        x = np.concatenate([digits.x_train, digits.x_val, digits.x_test]).__mul__(255).round().astype(np.uint8)
        settings = dict(model="conv", width=4, latent_dim=4)
    else:  # a table: standardized from statistics gathered chunk by chunk over the map
        x = np.concatenate([digits.x_train, digits.x_val, digits.x_test]).reshape(-1, 64).astype(np.float32) * 16
        settings = dict(model="mlp", hidden="16", latent_dim=4)
    np.save(tmp_path / "x.npy", x)
    spec = f"npy:{tmp_path / 'x.npy'}"
    mapped = load_data(spec, mmap=True)
    assert isinstance(mapped.x_train, MappedSplit) and isinstance(mapped.x_train.array, np.memmap)
    runs = {}
    for mmap in (False, True):
        runs[mmap] = aeopt.train(data=spec, mmap=mmap, epochs=2, batch_size=64, precision="fp32", threads=1,
                                 out=str(tmp_path / f"run-{mmap}"), progress=False, log=lambda m: None, **settings)
    assert runs[True].metrics["test"]["mse"] == runs[False].metrics["test"]["mse"]
    assert [r["val_loss"] for r in runs[True].history] == [r["val_loss"] for r in runs[False].history]
    assert runs[True].metrics["pca"]["mse"] == pytest.approx(runs[False].metrics["pca"]["mse"], rel=1e-5)
