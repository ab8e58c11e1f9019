"""Process rank and world size, from ``torch.distributed`` or the ``torchrun`` environment.

``torchrun --nproc_per_node K script.py`` starts K processes and sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK`` in each (PyTorch elastic launch documentation). Work that needs no
communication, such as inference over a folder, only has to read these variables: each process
takes every K-th item starting at its rank.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

import torch.distributed as dist

__all__ = [
    "get_rank",
    "get_world_size",
    "get_local_rank",
    "is_main_process",
    "shard",
    "init_process_group",
    "destroy_process_group",
]

T = TypeVar("T")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None
    if number < 0:
        raise ValueError(f"environment variable {name}={value!r} must not be negative")
    return number


def get_world_size() -> int:
    """Number of processes: the process group's size, else ``$WORLD_SIZE``, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size < 1:
        raise ValueError(f"environment variable WORLD_SIZE={world_size} must be at least 1")
    return world_size


def get_rank() -> int:
    """This process's global rank: the process group's, else ``$RANK``, else 0.

    Raises:
        ValueError: ``$RANK`` is not an integer in ``[0, world size)``.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    rank = _env_int("RANK", 0)
    world_size = get_world_size()
    if rank >= world_size:
        raise ValueError(f"environment variable RANK={rank} is not below WORLD_SIZE={world_size}")
    return rank


def get_local_rank() -> int:
    """This process's rank on its machine (``$LOCAL_RANK``, else 0); picks the GPU."""
    return _env_int("LOCAL_RANK", 0)


def is_main_process() -> bool:
    """True for rank 0, the process that logs and writes shared files."""
    return get_rank() == 0


def shard(items: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """This process's share of ``items``: every ``world_size``-th item from index ``rank``.

    The shares of all ranks are disjoint and together cover ``items``.

    Args:
        items: the full, identically ordered list every process sees.
        rank: defaults to :func:`get_rank`.
        world_size: defaults to :func:`get_world_size`.

    Returns:
        ``list(items[rank::world_size])``.
    """
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world size {world_size}")
    return list(items[rank::world_size])


def init_process_group(device_type: str) -> bool:
    """Join the process group described by the torchrun environment, if there is one.

    NCCL is used for CUDA training, gloo on the CPU. On CUDA the process's GPU is
    ``$LOCAL_RANK`` (modulo the number of visible GPUs). ``MASTER_ADDR`` / ``MASTER_PORT`` come
    from the environment (torchrun sets them).

    Args:
        device_type: "cuda" or "cpu".

    Returns:
        True when running distributed (``$WORLD_SIZE`` > 1), False for a single process.
    """
    if get_world_size() <= 1:
        return False
    if dist.is_initialized():
        return True
    if device_type == "cuda":
        import torch

        torch.cuda.set_device(get_local_rank() % torch.cuda.device_count())
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return True


def destroy_process_group() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
