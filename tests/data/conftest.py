"""Fixtures of the data tests: a small synthetic training set, disc-shaped alphas."""

from collections.abc import Callable

import numpy as np
import pytest

from diffmatte.data.dim import DIMDataset
from diffmatte.data.synthetic import generate_foregrounds

CROP = 64


@pytest.fixture(scope="module")
def synthetic_dataset() -> DIMDataset:
    """Three synthetic foregrounds on three random backgrounds, 64-pixel crops, seed 7."""
    rng = np.random.default_rng(5)
    backgrounds = [rng.random((80, 120, 3)).astype(np.float32) for _ in range(3)]
    return DIMDataset(generate_foregrounds(3, 96, seed=1, supersample=2), backgrounds, CROP, seed=7)


@pytest.fixture(scope="session")
def disc() -> Callable[[int, float, float], np.ndarray]:
    """``disc(size, radius, soft)``: alpha of a centred disc with a linear soft rim."""

    def make(size: int, radius: float, soft: float) -> np.ndarray:
        ys, xs = np.mgrid[0:size, 0:size]
        distance = np.hypot(xs - size / 2, ys - size / 2)
        return np.clip((radius + soft - distance) / soft, 0.0, 1.0).astype(np.float32)

    return make
