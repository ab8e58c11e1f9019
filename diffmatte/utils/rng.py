"""Seed, capture and restore the global random number generators.

Exact resumption (docs/original_release.md#trainer) needs the states of every global RNG a run
draws from: Python's ``random``, NumPy's legacy global generator and torch's CPU and CUDA
generators. The states are stored as plain tensors and numbers so that a checkpoint holding them
loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["SEED_LIMIT", "check_seed", "seed_everything", "capture_rng_state", "restore_rng_state"]

# Seeds are 0 <= S < SEED_LIMIT: torch.Generator.manual_seed stores a signed 64-bit integer.
SEED_LIMIT = 2**63


def check_seed(seed: int) -> int:
    """Checks that ``seed`` is a usable seed: an integer with ``0 <= seed < 2**63``.

    Every ``--seed`` of the command lines goes through here, so all of them accept the same range.

    Args:
        seed: the seed.

    Returns:
        ``seed`` unchanged.

    Raises:
        ValueError: not an integer, or out of range (one line naming the value).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed {seed!r}: not an integer")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed {seed}: out of range; seeds are integers 0 <= S < 2**63")
    return seed


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (all devices).

    Args:
        seed: any non-negative integer (NumPy gets it modulo 2**32).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """States of Python's ``random``, NumPy's global RNG, torch's CPU and current CUDA RNG."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # Plain tensors and numbers only, so that checkpoints load with weights_only=True.
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (the CUDA state only where CUDA is in use)."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
