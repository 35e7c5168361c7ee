"""PatchSource: random square crops from a folder of images of any sizes (the BatchSource protocol).

Photos differ in size, so they cannot be stacked into one tensor; the codec trains on fixed-size
crops (`--patch 128`) instead, as every learned codec does. Images are decoded once into memory
as uint8. The crops of epoch e come from a generator seeded by (seed, epoch), so an epoch is
replayable on resume; each image gives `per_image` crops per epoch, flipped left-right at random,
and each process of a multi-process run takes every world_size-th crop of that same order.
`in_order` (validation) yields each image's centre crop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import AeoptError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


def read_image(path: Path, mode: str | None = None) -> np.ndarray:
    """One image file as uint8 (C, H, W); `mode` "L" or "RGB" converts, None keeps grey as grey."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if mode is None:
                mode = "L" if im.mode in ("1", "L", "I;16", "I", "F", "LA", "P") and _is_grey(im) else "RGB"
            pixels = np.asarray(im.convert(mode))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise AeoptError(f"cannot read image {path} ({err}); fix or remove the file") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _is_grey(im) -> bool:
    return im.mode != "P" or im.convert("RGB").getextrema() == im.convert("L").convert("RGB").getextrema()


def image_files(folder: str | Path) -> list[Path]:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise AeoptError(f"no such image folder: {folder}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise AeoptError(f"{folder} holds no PNG/JPEG/BMP images")
    return files


def edge_padded(image: np.ndarray, side: int) -> np.ndarray:
    """`image` (C, H, W) edge-padded at the bottom and right to at least side x side, so an image
    smaller than a crop still gives one."""
    ph, pw = max(0, side - image.shape[1]), max(0, side - image.shape[2])
    return np.pad(image, ((0, 0), (0, ph), (0, pw)), mode="edge") if ph or pw else image


class PatchSource:
    def __init__(self, images: list[np.ndarray], patch: int, *, seed: int = 0, per_image: int = 1,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1):
        if not images:
            raise AeoptError("PatchSource needs at least one image")
        if not isinstance(patch, int) or patch < 8:
            raise AeoptError(f"--patch must be an integer >= 8, got {patch!r}")
        channels = {im.shape[0] for im in images}
        if len(channels) != 1:
            raise AeoptError("the image folder mixes grey and colour images; convert them to one mode")
        self.images = [edge_padded(im, patch) for im in images]
        self.patch, self.seed, self.per_image, self.device = patch, seed, per_image, device
        self.rank, self.world_size = rank, world_size
        self.sample_shape = (channels.pop(), patch, patch)

    def __len__(self) -> int:
        return (len(self.images) * self.per_image) // self.world_size

    def _stack(self, crops: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.stack(crops))).to(self.device).float().div_(255.0)

    def batches(self, epoch: int, batch_size: int) -> Iterator[torch.Tensor]:
        rng = np.random.default_rng([self.seed, epoch])
        total = len(self.images) * self.per_image
        order = rng.permutation(total)
        tops, lefts, flips = rng.random(total), rng.random(total), rng.random(total) < 0.5
        mine = np.arange(total)[self.rank::self.world_size][:len(self)]
        p = self.patch
        for start in range(0, len(mine), batch_size):
            crops = []
            for j in mine[start:start + batch_size]:
                im = self.images[order[j] % len(self.images)]
                top = int(tops[j] * (im.shape[1] - p + 1))
                left = int(lefts[j] * (im.shape[2] - p + 1))
                crop = im[:, top:top + p, left:left + p]
                crops.append(crop[:, :, ::-1] if flips[j] else crop)
            yield self._stack(crops)

    def in_order(self, batch_size: int) -> Iterator[torch.Tensor]:
        mine = self.images[self.rank::self.world_size]
        for start in range(0, len(mine), batch_size):
            yield self._stack([centre_crop(im, self.patch) for im in mine[start:start + batch_size]])


def centre_crop(image: np.ndarray, patch: int) -> np.ndarray:
    top, left = (image.shape[1] - patch) // 2, (image.shape[2] - patch) // 2
    return image[:, top:top + patch, left:left + patch]
