"""PatchSource: random crops from images of any sizes, replayable per (seed, epoch), sharded by rank."""
import numpy as np
import pytest
import torch

from aeopt.data.patches import PatchSource
from aeopt.errors import AeoptError


def _images():
    rng = np.random.default_rng(0)
    return [(rng.random((3, h, w)) * 255).astype(np.uint8) for h, w in ((40, 50), (20, 90), (10, 12), (64, 64))]


def test_crops_are_patch_sized_in_unit_range_and_replayable():
    source = PatchSource(_images(), 16, seed=3, per_image=2)
    assert source.sample_shape == (3, 16, 16) and len(source) == 8
    first = torch.cat(list(source.batches(0, 3)))
    assert first.shape == (8, 3, 16, 16) and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, torch.cat(list(PatchSource(_images(), 16, seed=3, per_image=2).batches(0, 5))))
    assert not torch.equal(first, torch.cat(list(source.batches(1, 3))))


def test_ranks_take_disjoint_shares_of_the_same_order():
    full = torch.cat(list(PatchSource(_images(), 16, seed=1, per_image=2).batches(0, 8)))
    shares = [torch.cat(list(PatchSource(_images(), 16, seed=1, per_image=2, rank=r, world_size=2).batches(0, 8)))
              for r in (0, 1)]
    assert torch.equal(shares[0], full[0::2]) and torch.equal(shares[1], full[1::2])


def test_in_order_gives_centre_crops_and_small_images_are_padded():
    images = _images()
    crops = torch.cat(list(PatchSource(images, 16).in_order(2)))
    assert torch.equal(crops[0], torch.from_numpy(images[0][:, 12:28, 17:33].copy()).float() / 255)
    assert crops.shape == (4, 3, 16, 16)  # the 10x12 image, edge-padded to 16x16


def test_bad_patch_sources_are_refused():
    with pytest.raises(AeoptError, match="--patch must be an integer >= 8"):
        PatchSource(_images(), 4)
    with pytest.raises(AeoptError, match="mixes grey and colour"):
        PatchSource([np.zeros((1, 9, 9), np.uint8), np.zeros((3, 9, 9), np.uint8)], 8)
