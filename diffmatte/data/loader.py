"""Training DataLoader: an endless shuffled index stream, split across processes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from diffmatte.data.dim import DIMDataset
from diffmatte.utils.distributed import get_rank, get_world_size
from diffmatte.utils.rng import capture_rng_state, restore_rng_state

__all__ = ["ShardedInfiniteSampler", "StreamDataset", "build_train_loader"]


class ShardedInfiniteSampler(Sampler[int]):
    """Endless shuffled index stream, split across processes.

    The global stream is pass 0, pass 1, ... where pass ``e`` is
    ``e * size + permutation_e(size)`` (permutation seeded by ``(seed, e)``); rank ``r`` of
    ``W`` takes stream positions ``r, r + W, r + 2W, ...``, skipping its first ``start``. Indices
    of later passes exceed ``size`` on purpose: :class:`DIMDataset` maps them back to
    ``index % len`` and seeds the augmentation with the full index, so every pass is freshly
    augmented and a resumed run continues exactly where it stopped.

    Args:
        size: dataset length.
        seed: permutation seed, the same on every rank.
        rank: this process's rank.
        world_size: number of processes.
        start: number of this rank's indices to skip (resume at iteration k: k * batch size).
    """

    def __init__(
        self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0
    ) -> None:
        if size < 1:
            raise ValueError(f"cannot sample from an empty dataset (size {size})")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid rank {rank} for world size {world_size}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.size = size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start = start

    def __iter__(self) -> Iterator[int]:
        position = self.rank + self.start * self.world_size
        current_pass, permutation = -1, np.empty(0, dtype=np.int64)
        while True:
            pass_index, offset = divmod(position, self.size)
            if pass_index != current_pass:
                current_pass = pass_index
                permutation = np.random.default_rng([self.seed, pass_index]).permutation(self.size)
            yield pass_index * self.size + int(permutation[offset])
            position += self.world_size


class StreamDataset(Dataset):
    """Serves the endless index stream of :class:`ShardedInfiniteSampler`.

    Stream index ``i`` (pass ``i // len`` of the dataset) is handed on unchanged to datasets that
    accept any index and derive their augmentation from it (:class:`DIMDataset`); other
    datasets get ``i % len``. Python's ``random``, NumPy's global RNG and torch's CPU RNG are
    seeded from (seed, i) first, so datasets that use the global RNGs are reproducible too; in
    the main process (``num_workers=0``) their previous states are put back afterwards, so data
    loading never shifts the training RNG.

    Args:
        dataset: map-style dataset returning a dict of tensors.
        seed: base seed of the global-RNG seeding.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.stream_indexed = isinstance(dataset, DIMDataset)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        in_main = torch.utils.data.get_worker_info() is None
        saved = capture_rng_state() if in_main else None
        sample_seed = int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0])
        random.seed(sample_seed)
        np.random.seed(sample_seed)
        torch.manual_seed(sample_seed)
        try:
            return self.dataset[index if self.stream_indexed else index % len(self)]
        finally:
            if saved is not None:
                restore_rng_state(saved)


def build_train_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    start_iter: int = 0,
    infinite: bool = True,
    pin_memory: bool = False,
) -> DataLoader:
    """DataLoader for training: shuffled, split across ranks, full batches only.

    The data of every process is split across the ranks of ``torch.distributed`` (or ``RANK`` /
    ``WORLD_SIZE`` from torchrun; one process otherwise). The loader has its own generator, so
    creating its iterator does not consume the global torch RNG (which would shift the noise of
    a resumed run).

    Args:
        dataset: the training set (typically a :class:`DIMDataset`).
        batch_size: samples per batch and per process.
        num_workers: loader processes (0 loads in the main process); results do not depend on it.
        seed: shuffling seed (the dataset keeps its own augmentation seed).
        start_iter: iterations already done; the infinite stream skips ``start_iter * batch_size``
            samples of this rank, so batch ``k`` is the same for any ``start_iter`` and a resumed
            run sees the batches it would have seen.
        infinite: True: one endless stream (:class:`ShardedInfiniteSampler` through
            :class:`StreamDataset`), never exhausted. False: one epoch per iteration over the
            loader, through ``DistributedSampler`` (several processes) or ``RandomSampler``; call
            ``loader.sampler.set_epoch(e)`` (distributed) and ``dataset.set_epoch(e)`` before
            each epoch for new shuffles and augmentations.
        pin_memory: pin batches in page-locked memory (faster host-to-GPU copies).

    Returns:
        A DataLoader yielding dicts of batched tensors (``drop_last=True``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rank, world_size = get_rank(), get_world_size()
    sampler: Sampler[int]
    if infinite:
        sampler = ShardedInfiniteSampler(
            len(dataset), seed, rank, world_size, start_iter * batch_size
        )
        dataset = StreamDataset(dataset, seed)
    else:
        if start_iter:
            raise ValueError("start_iter needs the infinite sampler (infinite=True)")
        if world_size > 1:
            sampler = DistributedSampler(
                dataset, world_size, rank, shuffle=True, seed=seed, drop_last=True
            )
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0 and infinite,
        generator=torch.Generator().manual_seed(int(seed)),
    )
