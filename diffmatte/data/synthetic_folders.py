"""Synthetic data folders that a config can name and that are made when missing.

``configs/quickstart.py`` trains on synthetic foregrounds (:mod:`diffmatte.data.synthetic`)
and validates on a test set composed from other synthetic foregrounds on the bundled
backgrounds (:mod:`diffmatte.data.testset`). Its data paths are nodes of these functions, so a
fresh clone trains without a preparation step: the first run writes the folder, later runs
find it. Each folder is written under a temporary name and renamed when complete, so an
interrupted run never leaves a half-made folder that a later run would take as complete, and
two processes (ranks of one run) making the same folder at once both end with the same result.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from diffmatte.data.sources import bundled_backgrounds
from diffmatte.data.synthetic import write_foregrounds
from diffmatte.data.testset import compose_testset

__all__ = ["synthetic_foreground_folder", "synthetic_testset_folder"]

logger = logging.getLogger(__name__)


def _make_folder(folder: Path, write: Callable[[Path], object]) -> Path:
    """Runs ``write(partial_folder)`` and renames the result to ``folder`` unless it exists."""
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.partial")
    try:
        write(partial)
        try:
            os.rename(partial, folder)
        except OSError:
            if not folder.is_dir():
                raise
            # Another process finished the same folder first; its content is identical.
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def synthetic_foreground_folder(
    folder: str | os.PathLike, num: int, size: int = 256, seed: int = 0
) -> str:
    """A DIM-style foreground folder (``fg/``, ``alpha/``) of ``num`` synthetic foregrounds.

    Made with :func:`diffmatte.data.synthetic.write_foregrounds` when ``folder`` does not exist;
    an existing folder is used as it is.

    Args:
        folder: the folder.
        num: number of foregrounds.
        size: side of each foreground in pixels.
        seed: base seed (foreground ``i`` uses ``[seed, i]``).

    Returns:
        ``folder`` as a string, for :class:`~diffmatte.data.dim.DIMDataset`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        logger.info("making %d synthetic training foregrounds in %s", num, folder)
    _make_folder(folder, lambda partial: write_foregrounds(partial, num, size=size, seed=seed))
    return str(folder)


def synthetic_testset_folder(
    folder: str | os.PathLike,
    num_foregrounds: int,
    size: int = 256,
    seed: int = 1,
    bgs_per_fg: int = 2,
) -> str:
    """A Composition-1k-style test folder (``merged/``, ``trimaps/``, ``alpha_copy/``).

    When ``folder`` does not exist, ``num_foregrounds`` synthetic foregrounds (named
    ``test_<i>``) are each composed onto ``bgs_per_fg`` bundled backgrounds with
    :func:`diffmatte.data.testset.compose_testset`; an existing folder is used as it is.

    Args:
        folder: the folder.
        num_foregrounds: number of synthetic foregrounds.
        size: side of each foreground in pixels.
        seed: base seed of the foregrounds.
        bgs_per_fg: composites per foreground.

    Returns:
        ``folder`` as a string, for :class:`~diffmatte.data.composition1k.Composition1kDataset`.
    """
    folder = Path(folder)

    def write(partial: Path) -> None:
        foregrounds = partial / "foregrounds"
        write_foregrounds(foregrounds, num_foregrounds, size=size, seed=seed, prefix="test")
        compose_testset(foregrounds, bundled_backgrounds(), partial, bgs_per_fg=bgs_per_fg)
        shutil.rmtree(foregrounds)

    if not folder.is_dir():
        logger.info("making a synthetic test set of %d images in %s", num_foregrounds, folder)
    _make_folder(folder, write)
    return str(folder)
