"""Capture and restore of the global RNG states (Python, NumPy, torch)."""

import io
import random

import numpy as np
import torch

from diffmatte.utils.rng import capture_rng_state, restore_rng_state, seed_everything


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
