"""Training hooks: timing, metric writers, checkpoints, validation with best-model tracking.

Same roles as detectron2's ``IterationTimer``, ``PeriodicWriter``, ``PeriodicCheckpointer`` and
``EvalHook`` (the original trainer registered those, docs/original_release.md#trainer), written for
this project's :class:`~diffmatte.engine.trainer.Trainer`. Validation runs the model's sampler on
a Composition-1k-style folder and scores it with the project's
:class:`~diffmatte.evaluation.evaluator.MattingEvaluator` (SAD, MSE, Grad, Conn).
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch import nn

from diffmatte.data.composition1k import DatasetError, MattingSample
from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.checkpoint import save_model_weights
from diffmatte.engine.trainer import HookBase
from diffmatte.engine.training_checkpoint import TrainingCheckpointer
from diffmatte.evaluation.evaluator import MattingEvaluator
from diffmatte.inference.functional import DEFAULT_SEED, predict_alpha, trimap_to_model
from diffmatte.inference.model import build_inference_model
from diffmatte.utils.distributed import get_world_size, is_main_process
from diffmatte.utils.image_io import alpha_to_uint8
from diffmatte.utils.logger import JSONWriter, TensorBoardWriter

__all__ = [
    "IterationTimer",
    "PeriodicWriter",
    "PeriodicCheckpointer",
    "EvalHook",
    "evaluate_dataset",
]

logger = logging.getLogger(__name__)


def _barrier() -> None:
    if get_world_size() > 1 and dist.is_initialized():
        dist.barrier()


class IterationTimer(HookBase):
    """Measures the time of every iteration ("time" scalar) and reports the total at the end.

    Args:
        warmup_iter: iterations excluded from the overall speed (start-up costs).
    """

    def __init__(self, warmup_iter: int = 3) -> None:
        self._warmup_iter = warmup_iter
        self._step_start = 0.0
        self._start = 0.0
        self._timed_start: float | None = None

    def before_train(self) -> None:
        self._start = time.perf_counter()
        self._timed_start = None

    def before_step(self) -> None:
        if self.trainer.iter == self.trainer.start_iter + self._warmup_iter:
            self._timed_start = time.perf_counter()
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("time", time.perf_counter() - self._step_start)

    def after_train(self) -> None:
        total = time.perf_counter() - self._start
        done = self.trainer.iter - self.trainer.start_iter
        timed = done - self._warmup_iter
        if self._timed_start is not None and timed > 0:
            speed = timed / (time.perf_counter() - self._timed_start)
            logger.info(
                "trained %d iterations in %s (%.2f it/s after warm-up)",
                done,
                datetime.timedelta(seconds=int(total)),
                speed,
            )
        else:
            logger.info("trained %d iterations in %.1f s", done, total)


_NOT_LOGGED = ("time", "data_time", "self_align_stage")


class PeriodicWriter(HookBase):
    """Writes scalars every ``period`` iterations (and at the last) to the console, a JSON-lines
    file and TensorBoard; images whenever the trainer stored some. Main process only.

    Loss-like scalars are averaged over the iterations since the previous write; ``lr`` is the
    latest value. The console line shows iteration speed and ETA.

    Args:
        output_dir: folder of ``metrics.json`` and the TensorBoard events; None: console only.
        period: write interval in iterations.
    """

    def __init__(self, output_dir: str | Path | None, period: int = 20) -> None:
        if period < 1:
            raise ValueError(f"log period must be positive, got {period}")
        self.period = period
        self.json = JSONWriter(Path(output_dir) / "metrics.json") if output_dir else None
        self.tensorboard = TensorBoardWriter(output_dir) if output_dir else None
        self._last_write = -1

    def before_train(self) -> None:
        self._last_write = self.trainer.start_iter - 1

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or it == self.trainer.max_iter - 1:
            self.write(it)

    def write(self, it: int) -> None:
        """Write everything recorded since the previous write, as iteration ``it`` (0-based)."""
        storage = self.trainer.storage
        first = self._last_write + 1
        self._last_write = it
        scalars: dict[str, float] = {}
        for name in storage.scalar_names():
            if name in ("lr", "loss_scale") or name.startswith("eval/"):
                value, value_iter = storage.latest()[name]
                if value_iter >= first or name in ("lr", "loss_scale"):
                    scalars[name] = value
            else:
                mean = storage.mean_since(name, first)
                if mean is not None:
                    scalars[name] = mean
        self._console(it, scalars)
        logged = {k: v for k, v in scalars.items() if k not in _NOT_LOGGED}
        if self.json is not None:
            self.json.write(it + 1, logged)
        if self.tensorboard is not None:
            self.tensorboard.write_scalars(it + 1, logged)
            images = storage.pop_images()
            if images:
                self.tensorboard.write_images(it + 1, images)

    def _console(self, it: int, scalars: dict[str, float]) -> None:
        parts = [f"iter: {it + 1}/{self.trainer.max_iter}"]
        step_time = scalars.get("time")
        if step_time:
            remaining = self.trainer.max_iter - it - 1
            eta = datetime.timedelta(seconds=int(step_time * remaining))
            parts.append(f"{1.0 / step_time:.2f} it/s  eta: {eta}")
        if "total_loss" in scalars:
            parts.append(f"total_loss: {scalars['total_loss']:.4g}")
        parts += [f"{k}: {v:.4g}" for k, v in sorted(scalars.items()) if k.startswith("loss_")]
        for key in ("grad_norm", "lr"):
            if key in scalars:
                parts.append(f"{key}: {scalars[key]:.3g}")
        parts += [f"{k}: {v:.4g}" for k, v in sorted(scalars.items()) if k.startswith("eval/")]
        if "data_time" in scalars:
            parts.append(f"data_time: {scalars['data_time']:.3f}s")
        logger.info("  ".join(parts))

    def after_train(self) -> None:
        # After an exception: flush what the interrupted period recorded.
        last_recorded = max((it for _, it in self.trainer.storage.latest().values()), default=-1)
        if last_recorded > self._last_write:
            self.write(last_recorded)
        if self.json is not None:
            self.json.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


class PeriodicCheckpointer(HookBase):
    """Saves a training checkpoint every ``period`` iterations and ``model_final.pth`` at the end.

    Must be registered on every process (the RNG states of all ranks are gathered); only the
    main process writes.

    Args:
        checkpointer: where and how many checkpoints to keep.
        period: checkpoint interval in iterations.
    """

    def __init__(self, checkpointer: TrainingCheckpointer, period: int) -> None:
        if period < 1:
            raise ValueError(f"checkpoint period must be positive, got {period}")
        self.checkpointer = checkpointer
        self.period = period

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done % self.period == 0 and done < self.trainer.max_iter:
            self._save(TrainingCheckpointer.periodic_name(done))
        elif done == self.trainer.max_iter:
            self._save("model_final.pth")

    def _save(self, name: str) -> None:
        state = self.trainer.state_dict()
        if is_main_process():
            self.checkpointer.save(name, state)
        _barrier()


class EvalHook(HookBase):
    """Runs ``eval_fn`` every ``period`` iterations and after the last one; logs its metrics as
    ``eval/<name>`` and keeps ``model_best.pth`` (released weight format) for the best value of
    ``metric``.

    ``eval_fn`` runs on the main process only (other ranks wait), with the model in eval mode.

    Args:
        period: evaluation interval in iterations (0: only at the end).
        eval_fn: ``() -> {metric name: value}``.
        output_dir: where ``model_best.pth`` goes; None: no best checkpoint.
        metric: the metric that decides the best checkpoint.
        lower_is_better: direction of ``metric``.
    """

    def __init__(
        self,
        period: int,
        eval_fn: Callable[[], dict[str, float]],
        output_dir: str | Path | None = None,
        metric: str = "SAD",
        lower_is_better: bool = True,
    ) -> None:
        self.period = period
        self.eval_fn = eval_fn
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.metric = metric
        self.sign = 1.0 if lower_is_better else -1.0
        self.best: float | None = None
        self.best_iter: int | None = None
        self.last_results: dict[str, float] = {}

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if (self.period > 0 and done % self.period == 0) or done == self.trainer.max_iter:
            self.evaluate(done)

    def evaluate(self, done: int) -> dict[str, float]:
        """Evaluate after ``done`` finished iterations; returns the metrics (main process)."""
        results: dict[str, float] = {}
        if is_main_process():
            model = self.trainer.unwrapped_model
            model.eval()
            try:
                results = self.eval_fn()
            finally:
                model.train()
            self.last_results = results
            self.trainer.storage.put_scalars(**{f"eval/{k}": v for k, v in results.items()})
            logger.info(
                "evaluation after %d iterations: %s",
                done,
                "  ".join(f"{k}: {v:.4f}" for k, v in results.items()),
            )
            self._update_best(results, done)
        _barrier()
        return results

    def _update_best(self, results: dict[str, float], done: int) -> None:
        value = results.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        if self.best is None or self.sign * value < self.sign * self.best:
            self.best, self.best_iter = value, done
            if self.output_dir is not None:
                save_model_weights(self.trainer.unwrapped_model, self.output_dir / "model_best.pth")
                logger.info("new best %s %.4f at iteration %d", self.metric, value, done)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_iter": self.best_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.best_iter = state.get("best_iter")


def evaluate_dataset(
    model: nn.Module,
    dataset: Iterable[MattingSample],
    sampler: Sampler | None = None,
    seed: int = DEFAULT_SEED,
) -> dict[str, float]:
    """Predict every sample with ground truth and score it with :class:`MattingEvaluator`.

    Each image is sampled with its own fixed noise (``predict_alpha`` with ``seed``), so the
    global RNG is not consumed and repeated evaluations are comparable. Sampling runs the model's
    inference form (default options), built from its current weights at each call. Predictions
    are quantised like the PNGs ``inference.py`` writes before scoring.

    Args:
        model: a DiffMatte module in eval mode.
        dataset: samples, e.g. a :class:`~diffmatte.data.composition1k.Composition1kDataset`;
            samples without alpha are skipped.
        sampler: sampling strategy (e.g. ``Sampler.from_strategy("ddim10")``); None: the
            model's default.
        seed: noise seed of every image.

    Returns:
        The evaluator's summary: mean "SAD", "MSE", "Grad", "Conn" over the images.

    Raises:
        DatasetError: no sample has a ground-truth alpha.
    """
    evaluator = MattingEvaluator()
    inference_model = build_inference_model(model)
    count = 0
    for sample in dataset:
        if sample.alpha is None:
            continue
        trimap = trimap_to_model(sample.trimap)
        prediction = predict_alpha(inference_model, sample.image, trimap, sampler, seed)
        evaluator.process(
            sample.name, alpha_to_uint8(prediction.alpha), sample.alpha, sample.trimap
        )
        count += 1
    if count == 0:
        raise DatasetError("the validation set has no image with a ground-truth alpha")
    return evaluator.summary()
