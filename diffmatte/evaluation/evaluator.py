"""Accumulate matting errors over a set of images, as the official ``evaluate.m`` does.

The per-image errors come from :mod:`diffmatte.evaluation.metrics` (SAD, MSE, Grad, Conn of the
Deep Image Matting evaluation, Xu et al., CVPR 2017). The set means follow ``evaluate.m``: a
running float32 total per error (each already in its reported unit), divided by the number of
images at the end. :class:`MattingEvaluator` is what training validation uses;
:func:`evaluate_folders` scores folders of PNGs in parallel for ``evaluation.py``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import multiprocessing
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from diffmatte.evaluation.metrics import METRIC_NAMES, MetricInputError, compute_all
from diffmatte.utils.fileio import atomic_write_text

__all__ = [
    "IMAGE_EXTENSIONS",
    "EvaluationError",
    "FolderEvaluation",
    "MattingEvaluator",
    "default_workers",
    "evaluate_folders",
    "format_means",
    "read_matte",
    "save_results",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
# Names listed in one-line messages before "... and N more".
_LISTED = 5


class EvaluationError(Exception):
    """A problem with the evaluated files; ``str(err)`` is one line naming the file."""


def read_matte(path: str | os.PathLike) -> np.ndarray:
    """Read a matte or trimap file as uint8 (H, W), as ``evaluate.m`` sees it.

    Grayscale files are returned as stored. For a colour file the first channel in MATLAB's
    order (red) is taken, as ``evaluate.m`` does with ``gt(:,:,1)``; an alpha channel is
    ignored. Only 8-bit files are accepted: the official code would treat 16-bit values as
    0..255 alphas.

    Args:
        path: image file (PNG or anything OpenCV decodes).

    Returns:
        uint8 array (H, W).

    Raises:
        EvaluationError: the file is missing, unreadable, not 8-bit, or empty.
    """
    path = Path(path)
    try:
        buffer = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise EvaluationError(f"{path}: cannot read file ({err.strerror or err})") from None
    array = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if array is None:
        raise EvaluationError(f"{path}: not a readable image")
    if array.dtype != np.uint8:
        raise EvaluationError(f"{path}: {array.dtype} pixels; expected an 8-bit image")
    if array.ndim == 3:
        # OpenCV decodes colour as BGR(A): index 2 is MATLAB's first channel (red).
        array = array[:, :, 0] if array.shape[2] == 1 else array[:, :, 2]
    if array.size == 0:
        raise EvaluationError(f"{path}: empty image")
    return np.ascontiguousarray(array)


class MattingEvaluator:
    """Per-image SAD, MSE, Grad and Conn, and their means over the images seen so far.

    Units are the official ones (:mod:`~diffmatte.evaluation.metrics`): SAD, Grad and Conn in
    thousands, MSE unscaled (tables usually print MSE x 1e3). The means are computed as
    ``evaluate.m`` computes them: a running float32 total per error, in the order the images
    were added, divided by the number of images. So one image whose unknown region is empty
    (MSE NaN) makes the mean MSE NaN, as in the official evaluation; such images are listed in
    :attr:`empty_unknown`.

    Example::

        evaluator = MattingEvaluator()
        for name, pred, gt, trimap in samples:
            evaluator.process(name, pred, gt, trimap)
        evaluator.summary()  # {"SAD": ..., "MSE": ..., "Grad": ..., "Conn": ...}
    """

    def __init__(self) -> None:
        self._per_image: dict[str, dict[str, float]] = {}
        self._totals: dict[str, np.float32] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every image."""
        self._per_image = {}
        self._totals = dict.fromkeys(METRIC_NAMES, np.float32(0))

    def process(
        self, name: str, pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray | None
    ) -> dict[str, float]:
        """Score one image and add it to the set.

        Args:
            name: unique image name (e.g. the file name).
            pred: uint8 (H, W) predicted alpha, 0..255.
            gt: uint8 (H, W) ground-truth alpha, 0..255.
            trimap: uint8 (H, W) (only 128 is unknown), or None to count every pixel.

        Returns:
            This image's errors, keyed by :data:`~diffmatte.evaluation.metrics.METRIC_NAMES`.

        Raises:
            EvaluationError: bad arrays (dtype, dimensions, sizes) or a repeated name.
        """
        if name in self._per_image:
            raise EvaluationError(f"{name}: image evaluated twice")
        try:
            result = compute_all(pred, gt, trimap)
        except MetricInputError as err:
            raise EvaluationError(f"{name}: {err}") from None
        self.add(name, result)
        return result

    def add(self, name: str, result: Mapping[str, float]) -> None:
        """Add an image whose errors were computed elsewhere (e.g. in a worker process).

        Args:
            name: unique image name.
            result: the four errors, as returned by ``compute_all``.

        Raises:
            EvaluationError: a repeated name.
        """
        if name in self._per_image:
            raise EvaluationError(f"{name}: image evaluated twice")
        values = {key: float(result[key]) for key in METRIC_NAMES}
        self._per_image[name] = values
        for key in METRIC_NAMES:
            self._totals[key] = np.float32(self._totals[key] + np.float32(values[key]))

    @property
    def num_images(self) -> int:
        """How many images were added."""
        return len(self._per_image)

    @property
    def per_image(self) -> dict[str, dict[str, float]]:
        """``{name: {"SAD": ..., "MSE": ..., "Grad": ..., "Conn": ...}}`` in processing order."""
        return {name: dict(values) for name, values in self._per_image.items()}

    @property
    def empty_unknown(self) -> list[str]:
        """Names of the images without unknown pixels (their MSE is NaN)."""
        return [name for name, values in self._per_image.items() if math.isnan(values["MSE"])]

    def summary(self) -> dict[str, float]:
        """Means over the images: ``{"SAD", "MSE", "Grad", "Conn"}`` in the official units.

        Returns:
            float32 running totals divided by the image count (as ``evaluate.m``), as floats.

        Raises:
            EvaluationError: no image was added.
        """
        if not self._per_image:
            raise EvaluationError("no image was evaluated")
        count = np.float32(len(self._per_image))
        return {key: float(np.float32(self._totals[key] / count)) for key in METRIC_NAMES}


# ----------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------


@dataclass
class FolderEvaluation:
    """Result of :func:`evaluate_folders`.

    Attributes:
        evaluator: the images present in every folder, scored in sorted name order.
        skipped: ``{file name: folders that lack it}`` for the files not present in every
            folder (roles "pred", "label", "trimap").
        whole_image: True when no trimap was used.
    """

    evaluator: MattingEvaluator
    skipped: dict[str, list[str]] = field(default_factory=dict)
    whole_image: bool = False

    def notes(self) -> list[str]:
        """One line per problem worth a warning: skipped files, images without unknown pixels."""
        lines = []
        if self.skipped:
            items = [f"{name} (no {', '.join(roles)})" for name, roles in self.skipped.items()]
            lines.append(
                f"skipped {len(items)} file(s) not present in every folder: {_first_few(items)}"
            )
        empty = self.evaluator.empty_unknown
        if empty:
            lines.append(
                f"{len(empty)} image(s) have no unknown pixel, so their MSE and the mean MSE are "
                f"NaN (as in evaluate.m): {_first_few(empty)}"
            )
        return lines


def _first_few(items: list[str]) -> str:
    more = f", ... and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return ", ".join(items[:_LISTED]) + more


def default_workers() -> int:
    """Every core this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _list_images(folder: Path, role: str) -> set[str]:
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: {role} folder not found")
    return {
        entry.name
        for entry in folder.iterdir()
        if entry.suffix.lower() in IMAGE_EXTENSIONS and entry.is_file()
    }


_Task = tuple[str, Path, Path, Path | None]


def _evaluate_file(task: _Task) -> tuple[str, dict[str, float]]:
    """Read and score one image (runs in a worker process)."""
    name, pred_path, label_path, trimap_path = task
    pred = read_matte(pred_path)
    gt = read_matte(label_path)
    trimap = None if trimap_path is None else read_matte(trimap_path)
    with warnings.catch_warnings():
        # Empty unknown regions are reported once for the whole set by the caller.
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            return name, compute_all(pred, gt, trimap)
        except MetricInputError as err:
            raise EvaluationError(f"{name}: {err}") from None


def _init_worker() -> None:
    # One OpenCV thread per process: the pool already uses every core.
    cv2.setNumThreads(1)


def _run(tasks: list[_Task], workers: int) -> Iterator[tuple[str, dict[str, float]]]:
    if workers <= 1:
        yield from map(_evaluate_file, tasks)
        return
    chunksize = max(1, min(8, len(tasks) // (8 * workers)))
    # Fresh interpreters: a forked child can hang on OpenCV's thread pool inherited from a
    # parent that already ran OpenCV code (e.g. a training process validating).
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap(_evaluate_file, tasks, chunksize=chunksize)


def evaluate_folders(
    pred_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    trimap_dir: str | os.PathLike | None,
    workers: int | None = None,
    progress: bool = True,
) -> FolderEvaluation:
    """Score every image whose file name is present in all the folders.

    Files are matched by exact name, as ``evaluate.m`` does, and scored in sorted name order
    (which fixes the float32 running totals of the means). Images are read with
    :func:`read_matte`.

    Args:
        pred_dir: predicted mattes.
        label_dir: ground-truth mattes.
        trimap_dir: trimaps (only 128 is unknown); None for whole-image evaluation.
        workers: processes to use; None: every core; 1: no extra process.
        progress: show a progress bar on stderr.

    Returns:
        The scored images and the files that were skipped.

    Raises:
        EvaluationError: a folder is missing, no name is present in every folder, or a file is
            unreadable or differs in size from its counterparts (the message names it).
    """
    folders = {"pred": Path(pred_dir), "label": Path(label_dir)}
    if trimap_dir is not None:
        folders["trimap"] = Path(trimap_dir)
    listed = {role: _list_images(folder, role) for role, folder in folders.items()}
    names = sorted(set.intersection(*listed.values()))
    everything = set.union(*listed.values())
    skipped = {
        name: [role for role, files in listed.items() if name not in files]
        for name in sorted(everything - set(names))
    }
    if not names:
        counts = ", ".join(f"{role} {len(files)}" for role, files in listed.items())
        raise EvaluationError(f"no image name is present in every folder (image files: {counts})")

    tasks: list[_Task] = [
        (
            name,
            folders["pred"] / name,
            folders["label"] / name,
            folders["trimap"] / name if trimap_dir is not None else None,
        )
        for name in names
    ]
    workers = min(default_workers() if workers is None else max(1, workers), len(tasks))
    evaluator = MattingEvaluator()
    with tqdm(total=len(tasks), desc="evaluating", unit="img", disable=not progress) as bar:
        for name, result in _run(tasks, workers):
            evaluator.add(name, result)
            bar.update()
    return FolderEvaluation(evaluator, skipped, whole_image=trimap_dir is None)


def format_means(rows: Mapping[str, Mapping[str, float]], name_width: int = 12) -> str:
    """A plain-text table of mean errors, one row per model: SAD, MSE (x1e-3), Grad, Conn.

    SAD, Grad and Conn are in thousands as ``evaluate.m`` prints them (the units of
    :meth:`MattingEvaluator.summary`).

    Args:
        rows: model name -> means keyed "SAD", "MSE", "Grad", "Conn".
        name_width: width of the name column; longer names keep their last characters.

    Returns:
        The header, a rule and one line per row, joined by newlines.
    """
    header = f"{'model':<{name_width}} {'SAD':>9} {'MSE(e-3)':>9} {'Grad':>9} {'Conn':>9}"
    lines = [header, "-" * len(header)]
    for name, means in rows.items():
        lines.append(
            f"{name[-name_width:]:<{name_width}} {means['SAD']:>9.3f} "
            f"{means['MSE'] * 1e3:>9.3f} {means['Grad']:>9.3f} {means['Conn']:>9.3f}"
        )
    return "\n".join(lines)


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def save_results(path: str | os.PathLike, evaluation: FolderEvaluation) -> Path:
    """Write the per-image errors atomically as CSV or JSON (chosen by the file extension).

    CSV: a header ``name,SAD,MSE,Grad,Conn`` and one row per image (``nan`` for NaN). JSON:
    ``{"whole_image", "num_images", "mean", "per_image", "skipped"}``, NaN written as null.
    Values are the official units (MSE unscaled) at full float precision.

    Args:
        path: output file ending in ``.csv`` or ``.json``.
        evaluation: what :func:`evaluate_folders` returned.

    Returns:
        The written path.

    Raises:
        EvaluationError: an unknown extension or a folder that cannot be written.
    """
    path = Path(path)
    evaluator = evaluation.evaluator
    suffix = path.suffix.lower()
    if suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["name", *METRIC_NAMES])
        for name, values in evaluator.per_image.items():
            writer.writerow([name, *(repr(values[key]) for key in METRIC_NAMES)])
        text = buffer.getvalue()
    elif suffix == ".json":
        document = {
            "whole_image": evaluation.whole_image,
            "num_images": evaluator.num_images,
            "mean": {k: _json_number(v) for k, v in evaluator.summary().items()},
            "per_image": {
                name: {k: _json_number(v) for k, v in values.items()}
                for name, values in evaluator.per_image.items()
            },
            "skipped": evaluation.skipped,
        }
        text = json.dumps(document, indent=1, allow_nan=False) + "\n"
    else:
        raise EvaluationError(f"{path}: per-image output must end in .csv or .json")
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise EvaluationError(f"{path}: cannot write ({err.strerror or err})") from None
    logger.info("wrote per-image results to %s", path)
    return path
