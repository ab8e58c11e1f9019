"""The Predictor: a model loaded once, its inference options, and prediction of images.

    predictor = Predictor.from_config("configs/ViTS.py", "ViTS.pth")
    prediction = predictor.predict(image, trimap, strategy="ddim10", seed=8282)
    prediction.alpha  # float32 (H, W) in [0, 1]

Every image's initial noise is ``torch.randn(1, 1, H, W,
generator=torch.Generator().manual_seed(seed))``, so a result depends only on the image, the
weights, the strategy and the seed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from diffmatte.diffusion.samplers import Sampler
from diffmatte.inference import folder as _folder
from diffmatte.inference import functional as _functional
from diffmatte.inference.functional import DEFAULT_SEED, Prediction
from diffmatte.inference.model import InferenceModel, build_inference_model
from diffmatte.inference.options import InferenceOptions
from diffmatte.utils.memory import release_free_memory

__all__ = ["Predictor", "ProgressFn"]

# progress(step, steps): called after each sampling step.
ProgressFn = Callable[[int, int], None]


def _as_sampler(strategy: str | Sampler | None, model: nn.Module) -> Sampler:
    if strategy is None:
        return model.sampler
    if isinstance(strategy, Sampler):
        return strategy
    return Sampler.from_strategy(strategy)


def _trimap_tensor(trimap: np.ndarray | torch.Tensor, thresholds: str) -> torch.Tensor:
    """A uint8 0..255 trimap (mapped with ``thresholds``) or float levels {0, 0.5, 1}."""
    if isinstance(trimap, np.ndarray) and trimap.dtype == np.uint8:
        return _functional.trimap_to_model(trimap, thresholds)
    return torch.as_tensor(trimap, dtype=torch.float32)


class Predictor:
    """A DiffMatte model ready for inference, kept loaded between calls.

    Args:
        model: a trained :class:`~diffmatte.modeling.diffmatte.DiffMatte`; it is moved to
            ``device`` and put in evaluation mode, and otherwise not modified.
        options: inference options; defaults to ``InferenceOptions()``.
        device: where to run; "auto" picks CUDA when available.

    Attributes:
        model: the trained model.
        options: the inference options.
        device: the device it runs on.
        inference_model: its :class:`~diffmatte.inference.model.InferenceModel` under
            ``options``, built once here and used by every prediction.
    """

    def __init__(
        self,
        model: nn.Module,
        options: InferenceOptions | None = None,
        device: str | torch.device = "auto",
    ) -> None:
        self.options = InferenceOptions() if options is None else options
        self.device = _functional.resolve_device(device)
        self.options.check_device(self.device)
        self.model = model.to(self.device).eval()
        self.inference_model: InferenceModel = build_inference_model(self.model, self.options)

    @classmethod
    def from_config(
        cls,
        config_file: str | os.PathLike,
        checkpoint: str | os.PathLike,
        options: InferenceOptions | None = None,
        device: str | torch.device = "auto",
        overrides: Sequence[str] = (),
    ) -> Predictor:
        """Builds the config's model and loads a checkpoint into it (strictly).

        Raises:
            diffmatte.config.ConfigError: bad config file or override.
            diffmatte.engine.checkpoint.CheckpointError: missing, unreadable or mismatched
                weights.
            ValueError: options the device cannot run.
        """
        resolved = _functional.resolve_device(device)
        (options or InferenceOptions()).check_device(resolved)
        config = _functional.resolve_config_file(config_file)
        model = _functional.load_model(config, checkpoint, overrides, resolved)
        return cls(model, options, resolved)

    def predict(
        self,
        image: np.ndarray,
        trimap: np.ndarray | torch.Tensor,
        strategy: str | Sampler | None = None,
        seed: int = DEFAULT_SEED,
        return_trajectory: bool = False,
        trimap_thresholds: str = "composition1k",
        progress: ProgressFn | None = None,
    ) -> Prediction:
        """Alpha matte of one image.

        Args:
            image: float32 (H, W, 3) RGB in [0, 1].
            trimap: uint8 (H, W) 0..255 (mapped with ``trimap_thresholds``, see
                :func:`~diffmatte.inference.functional.trimap_to_model`) or float levels
                {0, 0.5, 1} of shape (H, W).
            strategy: "ddimN" / "ddpmN" or a Sampler; None uses the config's sampler.
            seed: fixes the initial noise and the DDPM step noise.
            return_trajectory: also return the x0 prediction of every step.
            trimap_thresholds: "composition1k" or "demo", for uint8 trimaps.
            progress: ``progress(step, steps)`` after each sampling step.

        Returns:
            The :class:`~diffmatte.inference.functional.Prediction` (numpy arrays on the CPU).
        """
        sampler = _as_sampler(strategy, self.model)
        callback = None if progress is None else (lambda step, steps, _x0: progress(step, steps))
        prediction = _functional.predict_alpha(
            self.inference_model,
            image,
            _trimap_tensor(trimap, trimap_thresholds),
            sampler,
            seed,
            self.device,
            return_trajectory,
            callback=callback,
        )
        # A long-running process stays flat: nothing of this image's size stays mapped.
        release_free_memory()
        return prediction

    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        trimaps: Sequence[np.ndarray | torch.Tensor],
        strategy: str | Sampler | None = None,
        seed: int = DEFAULT_SEED,
        trimap_thresholds: str = "composition1k",
    ) -> list[Prediction]:
        """Alpha mattes of same-size images in one batch; each equals :meth:`predict` of that
        image alone up to float rounding (multi-step DDPM runs one image at a time)."""
        sampler = _as_sampler(strategy, self.model)
        tensors = [_trimap_tensor(trimap, trimap_thresholds) for trimap in trimaps]
        predictions = _functional.predict_alphas(
            self.inference_model, images, tensors, sampler, seed, self.device
        )
        release_free_memory()
        return predictions

    def predict_folder(
        self,
        data_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        strategy: str | Sampler | None = None,
        seed: int = DEFAULT_SEED,
        overwrite: bool = False,
        on_error: _folder.ErrorFn | None = None,
        on_progress: _folder.ProgressFn | None = None,
    ) -> _folder.FolderSummary:
        """Alpha mattes of a Composition-1k-style folder, written as ``<output_dir>/<stem>.png``.

        Resumable (existing outputs are skipped unless ``overwrite``), sharded across
        ``torchrun`` processes, batched by ``options.batch_size``, with atomic writes; see
        :mod:`diffmatte.inference.folder`.

        Args:
            data_dir: folder with ``merged/`` and ``trimaps/`` (or ``image/`` and ``trimap/``).
            output_dir: folder for the alphas, created when the first one is written.
            strategy: "ddimN" / "ddpmN" or a Sampler; None uses the config's sampler.
            seed: seed of every image's noise.
            overwrite: predict images whose output already exists.
            on_error: receives one line per problem; defaults to ``logging.error``.
            on_progress: ``on_progress(count)`` when ``count`` more images are done.

        Returns:
            The :class:`~diffmatte.inference.folder.FolderSummary`.
        """
        return _folder.predict_folder(
            self, data_dir, output_dir, strategy, seed, overwrite, on_error, on_progress
        )
