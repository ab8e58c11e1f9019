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

__all__ = ["seed_everything", "capture_rng_state", "restore_rng_state"]


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
