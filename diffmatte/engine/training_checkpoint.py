"""Training checkpoints: periodic, atomic, bounded in number, resumable.

A training checkpoint is one ``torch.save`` file holding ``{"model": state dict, "optimizer",
"scheduler", "grad_scaler", "iteration", "rng"}`` (``"rng"``: the global RNG states of every
process, :func:`diffmatte.utils.rng.capture_rng_state`). Its ``"model"`` entry is the plain
state dict of the DiffMatte module, so :func:`diffmatte.engine.checkpoint.load_checkpoint` (and
therefore ``inference.py``) reads a training checkpoint like a released one. The file
``last_checkpoint`` in the same folder names the newest checkpoint (detectron2's convention) and
is what ``--resume`` reads. ``iteration`` is the number of finished iterations, i.e. where a
resumed run starts.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from diffmatte.engine.checkpoint import read_checkpoint
from diffmatte.utils.fileio import atomic_torch_save, atomic_write_text

__all__ = [
    "LAST_CHECKPOINT_FILE",
    "TrainingCheckpointError",
    "TrainingCheckpointer",
]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT_FILE = "last_checkpoint"
_PERIODIC = re.compile(r"^model_(\d{7})\.pth$")


class TrainingCheckpointError(RuntimeError):
    """A training checkpoint cannot be read or does not fit; the message is one line."""


class TrainingCheckpointer:
    """Write and find training checkpoints in one folder.

    Periodic checkpoints are named ``model_<iteration:07d>.pth``; only the newest
    ``max_to_keep`` of them are kept. Other names (``model_final.pth``, ``model_best.pth``) are
    never pruned.

    Args:
        directory: the training output folder.
        max_to_keep: number of periodic checkpoints kept; None keeps all.
    """

    def __init__(self, directory: str | Path, max_to_keep: int | None = None) -> None:
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be at least 1 or None, got {max_to_keep}")
        self.directory = Path(directory)
        self.max_to_keep = max_to_keep

    @staticmethod
    def periodic_name(iteration: int) -> str:
        """File name of the periodic checkpoint after ``iteration`` finished iterations."""
        return f"model_{iteration:07d}.pth"

    def save(self, name: str, state: dict[str, Any], tag_last: bool = True) -> Path:
        """Write ``state`` atomically as ``name`` and prune old periodic checkpoints.

        Args:
            name: file name inside the folder.
            state: the checkpoint content.
            tag_last: make ``last_checkpoint`` point at this file.

        Returns:
            The written path.
        """
        path = self.directory / name
        atomic_torch_save(state, path)
        if tag_last:
            atomic_write_text(self.directory / LAST_CHECKPOINT_FILE, name)
        logger.info("saved checkpoint %s", path)
        self._prune()
        return path

    def _prune(self) -> None:
        if self.max_to_keep is None:
            return
        periodic = sorted(p for p in self.directory.iterdir() if _PERIODIC.match(p.name))
        last = self.last_checkpoint()
        for path in periodic[: max(0, len(periodic) - self.max_to_keep)]:
            if last is not None and path == last:
                continue
            path.unlink(missing_ok=True)
            logger.debug("removed old checkpoint %s", path)

    def checkpoints_newest_first(self) -> list[Path]:
        """The periodic checkpoints of the folder, newest first, then ``model_final.pth``."""
        if not self.directory.is_dir():
            return []
        periodic = sorted(
            (p for p in self.directory.iterdir() if _PERIODIC.match(p.name)), reverse=True
        )
        final = self.directory / "model_final.pth"
        return periodic + ([final] if final.is_file() else [])

    def last_checkpoint(self) -> Path | None:
        """The checkpoint named by ``last_checkpoint``, or None when there is none."""
        marker = self.directory / LAST_CHECKPOINT_FILE
        if not marker.is_file():
            return None
        path = self.directory / marker.read_text(encoding="utf-8").strip()
        if not path.is_file():
            raise TrainingCheckpointError(
                f"{marker} names {path.name}, which does not exist; remove the marker or "
                "restore the file"
            )
        return path

    @staticmethod
    def load(path: str | Path) -> dict[str, Any]:
        """Read a training checkpoint written by :meth:`save`.

        Raises:
            CheckpointError: missing or unreadable file
                (:func:`~diffmatte.engine.checkpoint.read_checkpoint`).
            TrainingCheckpointError: not a training checkpoint.
        """
        path = Path(path)
        state = read_checkpoint(path)
        if not isinstance(state, dict) or "model" not in state or "iteration" not in state:
            raise TrainingCheckpointError(
                f"{path}: not a training checkpoint (needs 'model' and 'iteration' entries)"
            )
        return state
