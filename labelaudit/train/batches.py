"""The data path: whole batches sliced from the cache's uint8 array, and augmentation.

A batch is one fancy-indexing copy out of the (memory-mapped) N x C x S x S uint8
array, turned into a tensor without decoding or per-image Python work; the model
normalises on its device. Augmentation (the 8 flips/90-degree rotations, safe for
microscopy, which has no "up") runs on whole batches on the training device.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from labelaudit.train.ddp import DistInfo


class ArrayBatches(Dataset):
    """Batches of a uint8 image array and its label matrix, addressed by index lists.

    ``images`` is never written. A :class:`numpy.memmap` is re-opened read-only in
    loader worker processes instead of being pickled with its contents.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
        self.images = images
        self.labels = np.asarray(labels, dtype=np.float32)
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Sorted rows make memory-mapped reads sequential; order within a batch is irrelevant.
        rows = np.sort(self.indices[np.asarray(positions, dtype=np.int64)])
        x = torch.from_numpy(np.ascontiguousarray(self.images[rows]))
        y = torch.from_numpy(self.labels[rows])
        return x, y, torch.from_numpy(rows)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        img = self.images
        if isinstance(img, np.memmap) and getattr(img, "filename", None):
            state["images"] = ("memmap", img.filename, img.dtype.str, img.shape, img.offset)
        return state

    def __setstate__(self, state: dict) -> None:
        img = state["images"]
        if isinstance(img, tuple) and img and img[0] == "memmap":
            _, filename, dtype, shape, offset = img
            state["images"] = np.memmap(filename, dtype=dtype, mode="r", shape=shape, offset=offset)
        self.__dict__.update(state)


class _ShuffledPositions(torch.utils.data.Sampler):
    """A seeded permutation of ``range(n)``, different (and reproducible) each epoch."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(np.random.default_rng((self.seed, self.epoch)).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


def make_loader(
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    batch_size: int,
    *,
    train: bool,
    seed: int,
    info: DistInfo,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader of whole batches ``(uint8 images, float labels, row indices)``.

    Training loaders shuffle (seeded per epoch through ``sampler.set_epoch``) and
    drop the last incomplete batch when there is more than one batch (a batch of
    one breaks BatchNorm); under DDP a :class:`DistributedSampler` gives each
    process its shard. Evaluation loaders keep order and every image.
    """
    data = ArrayBatches(images, labels, indices)
    n = len(data)
    positions: Iterable[int]
    if train and info.enabled:  # the sampler reads only len(data): positions 0..n-1
        positions = DistributedSampler(data, info.world, info.rank, shuffle=True, seed=seed)
    elif train:
        positions = _ShuffledPositions(n, seed)
    else:
        positions = range(n)
    per_process = n // info.world if train and info.enabled else n
    drop_last = train and per_process > batch_size
    batches = BatchSampler(positions, batch_size, drop_last=drop_last)
    return DataLoader(
        data,
        sampler=batches,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Advance the shuffling of a training loader to ``epoch``."""
    sampler = getattr(loader.sampler, "sampler", None)
    if isinstance(sampler, DistributedSampler | _ShuffledPositions):
        sampler.set_epoch(epoch)


def dihedral(x: torch.Tensor, code: int) -> torch.Tensor:
    """One of the 8 flips/rotations of square images (B, C, S, S); code 0 = identity."""
    if code & 4:
        x = x.transpose(-1, -2)
    if code & 1:
        x = x.flip(-1)
    if code & 2:
        x = x.flip(-2)
    return x


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random dihedral transform per image, applied in at most 8 batched groups."""
    codes = torch.randint(0, 8, (x.shape[0],), generator=generator)
    if x.shape[-1] != x.shape[-2]:
        codes = codes & 3  # no transposes for non-square images
    out = torch.empty_like(x)
    for code in codes.unique().tolist():
        sel = torch.nonzero(codes == code).squeeze(1).to(x.device)
        out[sel] = dihedral(x[sel], code)
    return out


#: Test-time augmentation views: identity, horizontal, vertical and both flips.
TTA_CODES: tuple[int, ...] = (0, 1, 2, 3)
