"""Capture and restore of the global RNG states (Python, NumPy, torch)."""

import io
import random

import numpy as np
import pytest
import torch

from diffmatte.utils.rng import capture_rng_state, check_seed, restore_rng_state, seed_everything


def _draw() -> tuple[float, float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3)


def test_restore_replays_every_generator_after_a_checkpoint_round_trip():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    state = capture_rng_state()
    expected = _draw()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # plain tensors and numbers only
    _draw()
    restore_rng_state(loaded)
    got = _draw()
    assert got[:3] == expected[:3]
    assert torch.equal(got[3], expected[3])
    assert state["numpy"]["has_gauss"] == 1


def test_seed_everything_fixes_every_generator():
    seed_everything(2**32 + 5)  # NumPy takes the seed modulo 2**32
    first = _draw()
    random.seed(2**32 + 5)
    np.random.seed(5)
    torch.manual_seed(2**32 + 5)
    expected = _draw()
    assert first[:3] == expected[:3]
    assert torch.equal(first[3], expected[3])
    seed_everything(6)
    assert _draw()[:3] != first[:3]


def test_seed_range_is_the_generator_range() -> None:
    assert check_seed(0) == 0 and check_seed(2**63 - 1) == 2**63 - 1
    torch.Generator().manual_seed(2**63 - 1)  # the largest accepted seed is usable
    for seed in (-1, 2**63, 10**23):
        with pytest.raises(ValueError, match=rf"^seed {seed}: out of range; .*0 <= S < 2\*\*63"):
            check_seed(seed)
    with pytest.raises(ValueError, match="not an integer"):
        check_seed(True)
