"""Checks an inference run makes before its expensive work.

The command lines call these before they load a model or read an image, so a run that cannot
finish fails at once, with one line, and leaves nothing behind: no output folder is created
until every check has passed (output paths are checked by ``check_writable_folder`` and
``check_writable_file`` of :mod:`diffmatte.utils.fileio`). Each raises ``ValueError`` with a
one-line message that begins with the path or value concerned.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from diffmatte.diffusion.samplers import Sampler
from diffmatte.inference.functional import resolve_device
from diffmatte.inference.options import InferenceOptions
from diffmatte.utils.rng import check_seed

__all__ = [
    "check_checkpoint_file",
    "check_run",
    "check_sampling",
]


def check_sampling(strategy: str | Sampler | None, seed: int) -> Sampler | None:
    """Parses a sampling strategy and checks a seed.

    Args:
        strategy: ``"ddimN"`` / ``"ddpmN"`` with ``1 <= N <= 1000``, a Sampler, or None (the
            config's sampler).
        seed: ``0 <= seed < 2**63``.

    Returns:
        The Sampler, or None when ``strategy`` is None.

    Raises:
        ValueError: a bad strategy, step count or seed.
    """
    check_seed(seed)
    if strategy is None or isinstance(strategy, Sampler):
        return strategy
    return Sampler.from_strategy(strategy)


def check_checkpoint_file(path: str | os.PathLike) -> Path:
    """Checks that a checkpoint file exists (its content is checked when it is loaded).

    Raises:
        ValueError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file not found")
    return path


def check_run(
    strategy: str | Sampler | None,
    seed: int,
    options: InferenceOptions,
    device: str | torch.device | None,
    checkpoint: str | os.PathLike | None,
) -> tuple[Sampler | None, torch.device]:
    """The checks of every inference command line, before it reads an image or loads a model.

    Args:
        strategy: see :func:`check_sampling`.
        seed: see :func:`check_sampling`.
        options: the inference options, checked against the device.
        device: a ``--device`` value (see :func:`~diffmatte.inference.functional.resolve_device`).
        checkpoint: the weights file, which must exist (None: a backend without one, e.g.
            onnxruntime on exported graphs).

    Returns:
        ``(sampler, device)``: the parsed strategy and the resolved device.

    Raises:
        ValueError: the first check that fails, on one line.
    """
    sampler = check_sampling(strategy, seed)
    resolved = resolve_device(device)
    options.check_device(resolved)
    if checkpoint is not None:
        check_checkpoint_file(checkpoint)
    return sampler, resolved
