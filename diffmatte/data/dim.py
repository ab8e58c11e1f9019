"""DIM-style training set: foregrounds composited on the fly onto background photographs.

:class:`DIMDataset` applies the augmentation chain of GCA-Matting (Li & Lu, AAAI 2020), which
ViTMatte and the DiffMatte release (Hu et al. 2023, ``data/dim_dataset.py``) reuse unchanged,
in the order the original trainer ran it (docs/original_release.md#training-data); the steps
themselves are in :mod:`diffmatte.data.augmentations`, foreground loading and estimation in
:mod:`diffmatte.data.foreground`, and the index stream and DataLoader in
:mod:`diffmatte.data.loader`.

Deliberate differences from the original, none of which changes what DiffMatte reads:
the pipeline works on float32 RGB in [0, 1] throughout (the original truncates the mixed
foreground to uint8); CutMask and GenMask's discarded first erosion are left out (they only touch
a ``mask`` entry DiffMatte never reads, or are thrown away); values are clipped to [0, 1] after
each geometric step rather than only at composition (the thresholds and masks that follow are
unchanged by this); randomness comes from one ``numpy.random.Generator`` per sample, seeded by
``(seed, epoch, index)``, so a sample does not depend on the worker that builds it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from diffmatte.data.augmentations import (
    composite,
    mix_foregrounds,
    random_affine,
    random_crop,
    random_jitter,
    random_trimap,
    resize_foreground,
)
from diffmatte.data.composition1k import DatasetError
from diffmatte.data.foreground import load_foreground
from diffmatte.data.sources import ForegroundFiles, find_foregrounds, list_images
from diffmatte.modeling.trimap import trimap_from_uint8
from diffmatte.utils.image_io import read_image

__all__ = ["DIMDataset"]

# Fg + alpha are resized to this square with probability RESIZE_PROB before the chain.
RESIZE_SIZE = 640
RESIZE_PROB = 0.25
MIX_PROB = 0.5

ForegroundSource = ForegroundFiles | tuple[np.ndarray, np.ndarray]
BackgroundSource = Path | np.ndarray


def _as_float_image(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(65535.0)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{what}: expected uint8, uint16 or float pixels, got {array.dtype}")
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def _in_memory_foreground(item: Sequence[np.ndarray], position: int) -> tuple[np.ndarray, ...]:
    if len(item) != 2:
        raise ValueError(f"foreground {position}: expected a (fg, alpha) pair")
    fg = _as_float_image(item[0], f"foreground {position}")
    alpha = _as_float_image(item[1], f"alpha {position}")
    if fg.ndim != 3 or fg.shape[2] != 3 or alpha.shape != fg.shape[:2]:
        raise ValueError(
            f"foreground {position}: expected fg (H, W, 3) and alpha (H, W), got "
            f"{fg.shape} and {alpha.shape}"
        )
    return fg, alpha


def _collect_foregrounds(foregrounds: object) -> list[ForegroundSource]:
    if isinstance(foregrounds, (str, os.PathLike)):
        return list(find_foregrounds(foregrounds))
    items = list(foregrounds)  # type: ignore[call-overload]
    if not items:
        raise DatasetError("no foregrounds given")
    collected: list[ForegroundSource] = []
    for position, item in enumerate(items):
        if isinstance(item, ForegroundFiles):
            collected.append(item)
        elif isinstance(item, (str, os.PathLike)):
            collected.extend(find_foregrounds(item))
        else:
            collected.append(_in_memory_foreground(item, position))
    return collected


def _collect_backgrounds(backgrounds: object) -> list[BackgroundSource]:
    if isinstance(backgrounds, (str, os.PathLike)):
        return list(list_images(backgrounds))
    items = list(backgrounds)  # type: ignore[call-overload]
    if not items:
        raise DatasetError("no backgrounds given")
    collected: list[BackgroundSource] = []
    for position, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            collected.extend(list_images(item))
        else:
            image = _as_float_image(item, f"background {position}")
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"background {position}: expected (H, W, 3), got {image.shape}")
            collected.append(image)
    return collected


class DIMDataset(Dataset):
    """DIM-style training set: foregrounds composited onto backgrounds with random augmentation.

    Per sample, in order: with p = 0.5 a second random foreground is mixed in
    (:func:`mix_foregrounds`); with p = 0.25 fg and alpha are resized to 640x640;
    :func:`random_affine`; :func:`random_trimap`; :func:`random_crop` to ``crop_size``;
    :func:`random_jitter`; :func:`composite`.

    Indexing follows the original: ``len(dataset)`` is the number of backgrounds (or
    ``samples_per_epoch``), sample ``j`` uses background ``j % #bg`` and foreground
    ``j % #fg``. Any index ``i >= 0`` is accepted and means sample ``i % len``; the randomness of
    a sample comes only from ``numpy.random.default_rng([seed, epoch, i])``, so ``i`` and
    ``i + len`` give different augmentations of the same pair (used by
    :class:`~diffmatte.data.loader.ShardedInfiniteSampler`) and results never depend on the
    DataLoader worker count.

    Args:
        foregrounds: a DIM-style folder (``alpha/`` + ``fg/`` or ``image/``), a sequence of
            such folders or of :class:`~diffmatte.data.sources.ForegroundFiles`, or a sequence
            of in-memory ``(fg, alpha)`` pairs (fg (H, W, 3) RGB, alpha (H, W); uint8, uint16
            or float in [0, 1]).
        backgrounds: a folder or image file, a sequence of them, or in-memory (H, W, 3) RGB
            arrays.
        crop_size: side of the square training crop (no default: every config states it).
        seed: base seed of all randomness.
        samples_per_epoch: dataset length; default the number of backgrounds.
        foreground_estimation: for ``image/`` folders, ``"blur_fusion"`` or ``"image"``
            (see :func:`load_foreground`).
        random_interp: draw interpolations at random wherever the original does.
        rotation_min_size: long side from which :func:`random_affine` rotates (1024, as the
            original code does; 0 rotates every sample as the recipe's summary reads).
        cache: keep decoded foregrounds and backgrounds in memory (per worker process).
    """

    def __init__(
        self,
        foregrounds: str | os.PathLike | Sequence,
        backgrounds: str | os.PathLike | Sequence,
        crop_size: int,
        seed: int = 0,
        samples_per_epoch: int | None = None,
        foreground_estimation: str = "blur_fusion",
        random_interp: bool = True,
        rotation_min_size: int = 1024,
        cache: bool = False,
    ) -> None:
        if crop_size < 8:
            raise ValueError(f"crop_size must be at least 8, got {crop_size}")
        if foreground_estimation not in ("blur_fusion", "image"):
            raise ValueError(
                f"foreground_estimation must be 'blur_fusion' or 'image', "
                f"got {foreground_estimation!r}"
            )
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be positive, got {samples_per_epoch}")
        self.foregrounds = _collect_foregrounds(foregrounds)
        self.backgrounds = _collect_backgrounds(backgrounds)
        self.crop_size = int(crop_size)
        self.seed = int(seed)
        self.epoch = 0
        self.samples_per_epoch = samples_per_epoch
        self.foreground_estimation = foreground_estimation
        self.random_interp = random_interp
        self.rotation_min_size = rotation_min_size
        self.cache = cache
        self._fg_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._bg_cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        if self.samples_per_epoch is not None:
            return self.samples_per_epoch
        return len(self.backgrounds)

    def set_epoch(self, epoch: int) -> None:
        """Changes the augmentation stream (for epoch-based loaders, ``infinite=False``)."""
        self.epoch = int(epoch)

    def _foreground(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        source = self.foregrounds[position]
        if not isinstance(source, ForegroundFiles):
            return source
        if position in self._fg_cache:
            return self._fg_cache[position]
        loaded = load_foreground(source, self.foreground_estimation)
        if self.cache:
            self._fg_cache[position] = loaded
        return loaded

    def _background(self, position: int) -> np.ndarray:
        source = self.backgrounds[position]
        if isinstance(source, np.ndarray):
            return source
        if position in self._bg_cache:
            return self._bg_cache[position]
        image = read_image(source)
        if self.cache:
            self._bg_cache[position] = image
        return image

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Builds one augmented training sample.

        Returns:
            dict with float32 tensors, C = crop_size:
            ``"image"`` (3, C, C) RGB composite in [0, 1]; ``"alpha"`` (1, C, C) in [0, 1];
            ``"trimap"`` (1, C, C) in {0, 0.5, 1}; ``"fg"`` and ``"bg"`` (3, C, C) in [0, 1].
        """
        index = int(index)
        if index < 0:
            raise IndexError(f"negative index {index}")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        position = index % len(self)
        fg, alpha = self._foreground(position % len(self.foregrounds))
        bg = self._background(position % len(self.backgrounds))

        if rng.random() < MIX_PROB:
            fg2, alpha2 = self._foreground(int(rng.integers(len(self.foregrounds))))
            fg, alpha = mix_foregrounds(fg, alpha, fg2, alpha2, rng, self.random_interp)
        if rng.random() < RESIZE_PROB:
            fg, alpha = resize_foreground(fg, alpha, RESIZE_SIZE, rng, self.random_interp)
        fg, alpha = random_affine(fg, alpha, rng, self.random_interp, self.rotation_min_size)
        trimap = random_trimap(alpha, rng, self.random_interp)
        fg, alpha, trimap, bg = random_crop(
            fg, alpha, trimap, bg, self.crop_size, rng, self.random_interp
        )
        fg = random_jitter(fg, alpha, rng)
        image = composite(fg, alpha, bg)
        return {
            "image": _chw(image),
            "alpha": _chw(alpha),
            "trimap": trimap_from_uint8(trimap[None]),
            "fg": _chw(fg),
            "bg": _chw(bg),
        }


def _chw(array: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) numpy -> contiguous float32 (C, H, W) tensor."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))
