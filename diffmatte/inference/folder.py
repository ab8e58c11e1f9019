"""Prediction of a whole Composition-1k-style folder, resumable and shardable.

Reads ``<data_dir>/merged/*.{png,jpg,jpeg}`` with ``<data_dir>/trimaps/<stem>.png`` (or
``image/`` + ``trimap/``) and writes ``<output_dir>/<stem>.png``, 8-bit single-channel alphas:

    predictor = Predictor.from_config("configs/ViTS.py", "ViTS.pth")
    summary = predictor.predict_folder("Composition-1k-testset", "pred", strategy="ddim10")
    print(summary)  # "1000 written, 0 skipped, 0 failed"

A run happens in two parts. :func:`plan_folder` lists the images, checks the output folder and
picks this process's share, before any model is loaded; :func:`run_folder` predicts and writes.

- **Resume.** Images whose output exists are skipped unless ``overwrite``.
- **Atomic writes.** Every file is written under a temporary name and renamed, so an interrupted
  run leaves no partial file; the output folder is created only when the first file is written.
- **Sharding.** Under ``torchrun`` (``RANK`` / ``WORLD_SIZE``) each process takes every
  ``WORLD_SIZE``-th image from its rank. The initial noise does not depend on the process.
- **Batching.** With ``InferenceOptions.batch_size`` > 1, images of the same size are predicted
  together (same results up to float rounding; multi-step DDPM runs one by one). Out of GPU
  memory, a batch is retried one image at a time.
- **Bad images** (unreadable, trimap of another size) are reported through ``on_error`` with one
  line each, counted as failed, and the run goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from diffmatte.data.composition1k import (
    MattingPair,
    MattingSample,
    detect_layout,
    list_pairs,
    read_sample,
)
from diffmatte.diffusion.samplers import Sampler
from diffmatte.inference.checks import check_sampling
from diffmatte.inference.functional import DEFAULT_SEED, Prediction, batchable
from diffmatte.utils.distributed import get_rank, get_world_size, shard
from diffmatte.utils.fileio import check_writable_folder
from diffmatte.utils.image_io import ImageReadError, alpha_to_uint8, write_png_atomic

if TYPE_CHECKING:
    from diffmatte.inference.predictor import Predictor

__all__ = ["FolderPlan", "FolderSummary", "plan_folder", "predict_folder", "run_folder"]

logger = logging.getLogger(__name__)

# on_error(message): one line naming the file and the problem.
ErrorFn = Callable[[str], None]
# on_progress(count): ``count`` more images are done (written or failed).
ProgressFn = Callable[[int], None]


@dataclass
class FolderSummary:
    """What a folder run did; ``str()`` gives the summary line ``N written, N skipped, N failed``.

    Attributes:
        written: alphas written.
        skipped: images whose output already existed (resume without ``overwrite``).
        failed: images that gave no output: unmatched, unreadable, or failed to predict or write.
    """

    written: int = 0
    skipped: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return f"{self.written} written, {self.skipped} skipped, {self.failed} failed"


@dataclass
class FolderPlan:
    """The work of one process, decided before any model is loaded.

    Attributes:
        output_dir: where the alphas go (not created yet).
        todo: this process's images still to predict, in listing order.
        skipped: this process's images whose output already exists.
        problems: one line per listing problem (images without a trimap, ambiguous stems,
            trimaps without an image); reported by rank 0 only, empty on other ranks.
        unusable: images that can give no output (counted as failed by rank 0 only).
    """

    output_dir: Path
    todo: list[MattingPair]
    skipped: int
    problems: list[str] = field(default_factory=list)
    unusable: int = 0


def plan_folder(
    data_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
) -> FolderPlan:
    """Lists a folder's images, checks the output folder and picks this process's share.

    Args:
        data_dir: folder with ``merged/`` and ``trimaps/`` (or ``image/`` and ``trimap/``).
        output_dir: folder for ``<stem>.png``; it may not exist yet, and is not created here.
        overwrite: predict images whose output already exists.
        rank: this process's rank; defaults to ``$RANK`` (0 without torchrun).
        world_size: number of processes; defaults to ``$WORLD_SIZE`` (1).

    Returns:
        The :class:`FolderPlan`.

    Raises:
        diffmatte.data.composition1k.DatasetError: the data folder cannot be used.
        ValueError: no usable image, or the output folder is an input folder or not writable.
    """
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    image_dir, trimap_dir, _ = detect_layout(data_dir)
    listing = list_pairs(data_dir, image_dir, trimap_dir, alpha_dir=None)
    if not listing.pairs:
        raise ValueError(f"{listing.image_dir}: no usable images (.png, .jpg, .jpeg with a trimap)")
    output_dir = check_writable_folder(output_dir, inputs=(listing.image_dir, listing.trimap_dir))
    pairs = shard(listing.pairs, rank, world_size)
    todo = [pair for pair in pairs if overwrite or not (output_dir / f"{pair.name}.png").exists()]
    # Every process sees the same listing; one of them reports it.
    first = rank == 0
    return FolderPlan(
        output_dir=output_dir,
        todo=todo,
        skipped=len(pairs) - len(todo),
        problems=listing.problems() if first else [],
        unusable=listing.num_unusable if first else 0,
    )


class _Runner:
    """Predicts and writes the images of a plan, reporting each failure on one line."""

    def __init__(
        self,
        predictor: Predictor,
        plan: FolderPlan,
        sampler: Sampler | None,
        seed: int,
        on_error: ErrorFn,
        on_progress: ProgressFn | None,
    ) -> None:
        self.predictor, self.plan, self.sampler, self.seed = predictor, plan, sampler, seed
        self.on_error, self.on_progress = on_error, on_progress
        self.summary = FolderSummary(skipped=plan.skipped, failed=plan.unusable)

    def _done(self, count: int) -> None:
        if self.on_progress is not None:
            self.on_progress(count)

    def _write(self, pair: MattingPair, prediction: Prediction) -> None:
        output = self.plan.output_dir / f"{pair.name}.png"
        try:
            write_png_atomic(output, alpha_to_uint8(prediction.alpha))
            self.summary.written += 1
        except OSError as err:
            self.on_error(f"{output}: cannot write ({err.strerror or err})")
            self.summary.failed += 1

    def one(self, pair: MattingPair, sample: MattingSample | None = None) -> None:
        """Reads (unless given), predicts and writes one image."""
        try:
            sample = read_sample(pair) if sample is None else sample
            prediction = self.predictor.predict(
                sample.image, sample.trimap, self.sampler, self.seed
            )
        except ImageReadError as err:
            self.on_error(str(err))
            self.summary.failed += 1
        except ValueError as err:  # e.g. larger than exported graphs admit
            self.on_error(f"{pair.image_path}: {' '.join(str(err).split())}")
            self.summary.failed += 1
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            height, width = sample.image.shape[:2]
            self.on_error(f"{pair.image_path}: out of GPU memory for a {width}x{height} image")
            self.summary.failed += 1
        else:
            self._write(pair, prediction)
        self._done(1)

    def group(self, group: list[tuple[MattingPair, MattingSample]]) -> None:
        """Predicts same-size images in one batch; one by one after running out of memory."""
        try:
            predictions = self.predictor.predict_batch(
                [sample.image for _, sample in group],
                [sample.trimap for _, sample in group],
                self.sampler,
                self.seed,
            )
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            for pair, sample in group:
                self.one(pair, sample)
            return
        for (pair, _), prediction in zip(group, predictions, strict=True):
            self._write(pair, prediction)
        self._done(len(group))

    def batched(self, batch_size: int) -> None:
        """Groups images by size into batches of up to ``batch_size``. At most twice that many
        images wait in memory (the largest group runs early)."""
        pending: dict[tuple[int, int], list[tuple[MattingPair, MattingSample]]] = {}
        for pair in self.plan.todo:
            try:
                sample = read_sample(pair)
            except ImageReadError as err:
                self.on_error(str(err))
                self.summary.failed += 1
                self._done(1)
                continue
            size = sample.image.shape[:2]
            pending.setdefault(size, []).append((pair, sample))
            if len(pending[size]) >= batch_size:
                self.group(pending.pop(size))
            elif sum(len(group) for group in pending.values()) >= 2 * batch_size:
                self.group(pending.pop(max(pending, key=lambda key: len(pending[key]))))
        for size in list(pending):
            self.group(pending.pop(size))


def run_folder(
    predictor: Predictor,
    plan: FolderPlan,
    strategy: str | Sampler | None = None,
    seed: int = DEFAULT_SEED,
    on_error: ErrorFn | None = None,
    on_progress: ProgressFn | None = None,
) -> FolderSummary:
    """Predicts and writes the images of a plan (see :func:`plan_folder`).

    Args:
        predictor: the loaded model; its ``options.batch_size`` sets the batch size.
        plan: what this process does.
        strategy: "ddimN" / "ddpmN" or a Sampler; None uses the config's sampler.
        seed: seed of every image's noise, ``0 <= seed < 2**63``.
        on_error: receives one line per image that fails; defaults to ``logging.error``.
        on_progress: ``on_progress(count)`` when ``count`` more images are done.

    Returns:
        The :class:`FolderSummary` (listing problems of the plan count as failed).

    Raises:
        ValueError: a bad strategy or seed (checked before any image is read).
    """
    sampler = check_sampling(strategy, seed)
    runner = _Runner(predictor, plan, sampler, seed, on_error or logger.error, on_progress)
    # Any predictor with predict/predict_batch runs here (onnxruntime's: one image at a time).
    options = getattr(predictor, "options", None)
    batch_size = options.batch_size if options is not None else 1
    if batch_size > 1 and batchable(predictor.model, sampler):
        runner.batched(batch_size)
    else:
        for pair in plan.todo:
            runner.one(pair)
    return runner.summary


def predict_folder(
    predictor: Predictor,
    data_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    strategy: str | Sampler | None = None,
    seed: int = DEFAULT_SEED,
    overwrite: bool = False,
    on_error: ErrorFn | None = None,
    on_progress: ProgressFn | None = None,
) -> FolderSummary:
    """:func:`plan_folder` then :func:`run_folder`; listing problems go to ``on_error``.

    Raises:
        diffmatte.data.composition1k.DatasetError: the data folder cannot be used.
        ValueError: no usable image, an unusable output folder, a bad strategy or seed.
    """
    check_sampling(strategy, seed)
    plan = plan_folder(data_dir, output_dir, overwrite)
    for line in plan.problems:
        (on_error or logger.error)(line)
    return run_folder(predictor, plan, strategy, seed, on_error, on_progress)
