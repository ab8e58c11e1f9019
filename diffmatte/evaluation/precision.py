"""Accuracy of a lower inference precision against float32: same weights, same noise.

Each image is predicted twice by the inference forms of one trained model (default
:class:`~diffmatte.inference.options.InferenceOptions`), in float32 and in the precision under
test, from the same seed (so the same initial and step noise). The two alphas are compared
directly (maximum and mean ``|Δα|`` and the share of 8-bit levels changed, over the trimap's
unknown region: the known regions are forced to 0 / 1 in both) and through the matting errors
against the ground truth (SAD, MSE, Grad, Conn of :mod:`diffmatte.evaluation.metrics` on the
8-bit alphas as saved).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np
from torch import nn

from diffmatte.data.composition1k import MattingSample
from diffmatte.diffusion.samplers import Sampler
from diffmatte.evaluation.metrics import compute_all
from diffmatte.inference.functional import DEFAULT_SEED, predict_alpha, trimap_to_model
from diffmatte.inference.model import build_inference_model
from diffmatte.inference.options import InferenceOptions
from diffmatte.utils.image_io import alpha_to_uint8

__all__ = ["METRICS", "ImageDifference", "PrecisionReport", "compare_precision", "downscale"]

METRICS = ("SAD", "MSE", "Grad", "Conn")


@dataclass
class ImageDifference:
    """Lower precision against float32 on one image.

    Attributes:
        name: the sample's name.
        unknown_pixels: pixels of the trimap's unknown region (where the two alphas can differ).
        max_abs: maximum ``|Δα|`` (alpha in [0, 1]).
        sum_abs: sum of ``|Δα|`` over the unknown region.
        levels_changed: unknown pixels whose 8-bit alpha differs.
        reference: SAD/MSE/Grad/Conn of the float32 alpha against the ground truth.
        lower: the same errors of the lower-precision alpha.
    """

    name: str
    unknown_pixels: int
    max_abs: float
    sum_abs: float
    levels_changed: int
    reference: dict[str, float] = field(default_factory=dict)
    lower: dict[str, float] = field(default_factory=dict)


@dataclass
class PrecisionReport:
    """Lower precision against float32 over a set of images (pixel-weighted where it applies)."""

    precision: str
    images: list[ImageDifference]

    @property
    def max_abs(self) -> float:
        """Largest ``|Δα|`` of any pixel."""
        return max((image.max_abs for image in self.images), default=0.0)

    @property
    def mean_abs(self) -> float:
        """Mean ``|Δα|`` over all unknown pixels."""
        pixels = sum(image.unknown_pixels for image in self.images)
        return sum(image.sum_abs for image in self.images) / max(pixels, 1)

    @property
    def levels_changed(self) -> float:
        """Share of unknown pixels whose 8-bit alpha changed."""
        pixels = sum(image.unknown_pixels for image in self.images)
        return sum(image.levels_changed for image in self.images) / max(pixels, 1)

    def metric_means(self) -> tuple[dict[str, float], dict[str, float]]:
        """Mean SAD/MSE/Grad/Conn over the images with ground truth: (float32, lower)."""
        rows = [image for image in self.images if image.reference]
        means = []
        for side in ("reference", "lower"):
            means.append(
                {
                    key: float(np.mean([getattr(row, side)[key] for row in rows]))
                    if rows
                    else math.nan
                    for key in METRICS
                }
            )
        return means[0], means[1]

    def metric_changes(self) -> dict[str, float]:
        """Relative change of each mean error, ``lower / float32 - 1`` (NaN without GT)."""
        reference, lower = self.metric_means()
        return {
            key: lower[key] / reference[key] - 1 if reference[key] else math.nan for key in METRICS
        }


def downscale(sample: MattingSample, max_side: int | None) -> MattingSample:
    """The sample with its long side at most ``max_side`` (area filter for the image and alpha,
    nearest for the trimap so that its levels stay); unchanged when already small enough."""
    height, width = sample.image.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return sample
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    alpha = None
    if sample.alpha is not None:
        alpha = cv2.resize(sample.alpha, size, interpolation=cv2.INTER_AREA)
    return MattingSample(
        sample.name,
        cv2.resize(sample.image, size, interpolation=cv2.INTER_AREA),
        cv2.resize(sample.trimap, size, interpolation=cv2.INTER_NEAREST),
        alpha,
    )


def _difference(
    name: str,
    reference: np.ndarray,
    lower: np.ndarray,
    trimap: np.ndarray,
    gt: np.ndarray | None,
) -> ImageDifference:
    unknown = (trimap >= 85) & (trimap < 170)
    delta = np.abs(lower.astype(np.float64) - reference.astype(np.float64))
    reference_u8, lower_u8 = alpha_to_uint8(reference), alpha_to_uint8(lower)
    result = ImageDifference(
        name=name,
        unknown_pixels=int(unknown.sum()),
        max_abs=float(delta.max()) if delta.size else 0.0,
        sum_abs=float(delta[unknown].sum()),
        levels_changed=int((reference_u8 != lower_u8)[unknown].sum()),
    )
    if gt is not None:
        result.reference = compute_all(reference_u8, gt, trimap)
        result.lower = compute_all(lower_u8, gt, trimap)
    return result


def compare_precision(
    model: nn.Module,
    samples: Iterable[MattingSample],
    precision: str,
    sampler: Sampler | None = None,
    seed: int = DEFAULT_SEED,
    options: InferenceOptions | None = None,
) -> PrecisionReport:
    """Predicts every sample in float32 and in ``precision`` and compares the alphas.

    Args:
        model: a trained DiffMatte in eval mode (not modified).
        samples: images with uint8 0..255 trimaps (Composition-1k thresholds) and, optionally,
            ground-truth alphas.
        precision: "bf16" or "fp16" (the model's device must accept it, see
            :meth:`InferenceOptions.check_device`).
        sampler: sampling strategy; None uses the model's.
        seed: the noise seed of both runs.
        options: the other inference options of both runs; ``InferenceOptions()`` when None.

    Returns:
        The :class:`PrecisionReport`.

    Raises:
        ValueError: a precision the model's device cannot run.
    """
    options = InferenceOptions() if options is None else options
    forms = [
        build_inference_model(model, options.replace(precision=run)) for run in ("fp32", precision)
    ]
    images = []
    for sample in samples:
        trimap = trimap_to_model(sample.trimap)
        alphas = [predict_alpha(form, sample.image, trimap, sampler, seed).alpha for form in forms]
        images.append(_difference(sample.name, *alphas, sample.trimap, sample.alpha))
    return PrecisionReport(precision, images)
