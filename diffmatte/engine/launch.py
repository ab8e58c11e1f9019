"""Starting training processes: one, several on this machine, or those ``torchrun`` started.

Three ways to run ``tools/train_net.py``, all ending in the same function on every process:

* one process (``--num-gpus 1``, the default);
* ``--num-gpus K``: :func:`launch` spawns K processes on this machine and gives each the
  environment ``torchrun`` would (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
  ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` on a free local port);
* ``torchrun`` (one or several machines): the processes exist already and the environment says
  so (``WORLD_SIZE``), so :func:`launch` runs the function once, in this process.

Each process then joins the process group (:func:`diffmatte.utils.distributed.init_process_group`,
NCCL on GPUs, gloo on the CPU), wraps the model with :func:`wrap_ddp` and, on the CPU, sets its
compute threads with :func:`set_cpu_threads`. The same roles as detectron2's
``engine/launch.py`` (Apache-2.0), written for this project.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["launch", "set_cpu_threads", "under_torchrun", "wrap_ddp"]

logger = logging.getLogger(__name__)


def under_torchrun() -> bool:
    """True when a launcher (``torchrun``, or :func:`launch` itself) started this process."""
    return "WORLD_SIZE" in os.environ


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawned(
    local_rank: int,
    main_fn: Callable[..., int],
    world_size: int,
    port: int,
    args: Sequence[Any],
) -> None:
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    code = main_fn(*args)
    if code:
        raise SystemExit(code)


def launch(main_fn: Callable[..., int], num_processes: int, args: Sequence[Any] = ()) -> int:
    """Run ``main_fn(*args)`` on ``num_processes`` processes of this machine.

    Under ``torchrun`` (or with one process) it runs once, here: the launcher has started the
    other processes. Otherwise it spawns ``num_processes`` processes with the environment of a
    ``torchrun`` launch and waits for them; when one fails, the others are stopped.

    Args:
        main_fn: the work of one process; returns its exit status. It must be importable (a
            module-level function), as spawned processes import it.
        num_processes: processes to start on this machine, at least 1.
        args: positional arguments of ``main_fn`` (picklable).

    Returns:
        The exit status: ``main_fn``'s, or for spawned processes 0 when all succeeded, else the
        status of the first that failed.
    """
    if num_processes < 1:
        raise ValueError(f"the number of processes must be at least 1, got {num_processes}")
    if num_processes == 1 or under_torchrun():
        return main_fn(*args)
    try:
        torch.multiprocessing.spawn(
            _spawned,
            args=(main_fn, num_processes, _free_port(), tuple(args)),
            nprocs=num_processes,
        )
    except torch.multiprocessing.ProcessExitedException as exc:
        # The failing process has reported its own error.
        return exc.exit_code or 1
    return 0


def set_cpu_threads(loader_workers: int) -> int:
    """Set this process's compute threads for CPU training so that cores are not oversubscribed.

    With ``OMP_NUM_THREADS`` set (by the user, or by ``torchrun`` for several processes) that
    count is kept. Otherwise each process gets the cores this machine gives it, divided among
    its processes (``LOCAL_WORLD_SIZE``), less one per data-loading worker, and at least one:
    threads that wait for a core are many times slower than fewer threads (OpenMP spins).

    Args:
        loader_workers: data-loading processes of this process (``dataloader.train.num_workers``).

    Returns:
        The number of compute threads; the choice and its reason are logged.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        threads = torch.get_num_threads()
        reason = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    else:
        threads = max(1, cores // processes - loader_workers)
        torch.set_num_threads(threads)
        reason = (
            f"{cores} cores for {processes} process(es) with {loader_workers} loader worker(s) "
            "each; set OMP_NUM_THREADS to choose"
        )
    logger.info("CPU training: %d compute thread(s) per process (%s)", threads, reason)
    return threads


def wrap_ddp(
    model: nn.Module,
    device: torch.device,
    broadcast_buffers: bool = True,
    find_unused_parameters: bool = False,
    fp16_compression: bool = False,
) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` (the process group must be joined).

    Args:
        model: the model, on ``device``.
        device: this process's device.
        broadcast_buffers: send rank 0's buffers (BatchNorm statistics) to every rank before
            each forward, as the original did.
        find_unused_parameters: search the graph for parameters without gradient each step.
        fp16_compression: send gradients as fp16 (CUDA only; ignored on the CPU).

    Returns:
        The wrapped model.
    """
    options: dict[str, Any] = {"find_unused_parameters": find_unused_parameters}
    # Newer torch names broadcast_buffers forward_sync_buffers.
    parameters = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    sync_key = (
        "forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers"
    )
    options[sync_key] = broadcast_buffers
    if device.type == "cpu":
        # Gradients written straight into the communication buckets: no copy of each gradient
        # into its bucket, the step where DDP warns when their strides differ.
        options["gradient_as_bucket_view"] = True
    wrapped = nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, **options
    )
    if fp16_compression and device.type == "cuda":
        from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks

        wrapped.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
    return wrapped
