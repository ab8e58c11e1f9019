"""Logging setup and event writers (console, JSON lines, TensorBoard) for training.

The layout follows detectron2's conventions (``log.txt`` and ``metrics.json`` in the output
folder, TensorBoard event files beside them); only the main process writes shared files.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["setup_logger", "JSONWriter", "TensorBoardWriter"]

_FORMAT = "[%(asctime)s %(name)s] %(levelname)s: %(message)s"
_DATE_FORMAT = "%m/%d %H:%M:%S"


def setup_logger(
    output_dir: str | Path | None = None,
    rank: int = 0,
    name: str = "diffmatte",
    level: int = logging.INFO,
) -> logging.Logger:
    """Configure the package logger: console on the main process, a log file per process.

    Calling it again replaces the handlers it installed before, so it is safe to call once per
    run in the same interpreter (as tests do).

    Args:
        output_dir: folder for ``log.txt`` (``log.txt.rank<k>`` on other ranks); None: no file.
        rank: global rank of this process; ranks > 0 log only warnings to the console.
        name: logger name (the package's root logger by default).
        level: logging level.

    Returns:
        The configured logger.
    """
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        if getattr(handler, "_diffmatte_handler", False):
            logger.removeHandler(handler)
            handler.close()
    formatter = logging.Formatter(_FORMAT, datefmt=_DATE_FORMAT)
    console = logging.StreamHandler(stream=sys.stdout)
    console.setLevel(level if rank == 0 else logging.WARNING)
    console.setFormatter(formatter)
    console._diffmatte_handler = True  # type: ignore[attr-defined]
    logger.addHandler(console)
    if output_dir is not None:
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        filename = "log.txt" if rank == 0 else f"log.txt.rank{rank}"
        file_handler = logging.FileHandler(folder / filename)
        file_handler.setLevel(level)
        file_handler.setFormatter(formatter)
        file_handler._diffmatte_handler = True  # type: ignore[attr-defined]
        logger.addHandler(file_handler)
    return logger


class JSONWriter:
    """Append one JSON object per logged iteration to ``metrics.json`` (JSON lines).

    Args:
        path: the output file; it is opened in append mode so a resumed run continues it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, iteration: int, scalars: dict[str, float]) -> None:
        """Write ``{"iteration": iteration, **scalars}`` as one line and flush."""
        record = {"iteration": iteration, **{k: float(v) for k, v in scalars.items()}}
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def _to_image_batch(images: torch.Tensor) -> np.ndarray:
    """(N,C,H,W) float in [0, 1] with C in {1, 3} -> (N,3,H,W) float32 numpy, clamped."""
    images = images.detach().float().cpu().clamp(0.0, 1.0)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images.numpy()


class TensorBoardWriter:
    """Scalars and image grids in TensorBoard event files.

    The ``SummaryWriter`` is created on first use so that importing this module never pulls in
    TensorBoard.

    Args:
        log_dir: folder of the event files (the training output folder).
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    @property
    def writer(self) -> Any:
        """The underlying ``torch.utils.tensorboard.SummaryWriter``."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        return self._writer

    def write_scalars(self, iteration: int, scalars: dict[str, float]) -> None:
        """Add every scalar at step ``iteration``."""
        for key, value in scalars.items():
            self.writer.add_scalar(key, float(value), iteration)
        self.writer.flush()

    def write_images(self, iteration: int, images: dict[str, torch.Tensor]) -> None:
        """Add image batches (N,C,H,W) in [0, 1], C in {1, 3}, at step ``iteration``."""
        for key, batch in images.items():
            self.writer.add_images(key, _to_image_batch(batch), iteration, dataformats="NCHW")
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
