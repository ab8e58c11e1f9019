"""Files made from a prediction: the 8-bit alpha, the float alpha, an RGBA cut-out, the steps."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from diffmatte.inference.functional import Prediction
from diffmatte.utils.image_io import alpha_to_uint8, save_npy_atomic, write_png_atomic

__all__ = ["IMAGE_SUFFIXES", "alpha_output_path", "write_prediction"]

# Suffixes that make an output path a file rather than a folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def alpha_output_path(output: str | os.PathLike, image: str | os.PathLike) -> Path:
    """Where an image's alpha PNG goes: ``output`` itself if it names an image file (the original
    demo's ``--output-dir demo/result.png``), else ``output/<image stem>.png``."""
    output = Path(output)
    if output.suffix.lower() in IMAGE_SUFFIXES:
        return output
    return output / f"{Path(image).stem}.png"


def write_prediction(
    prediction: Prediction,
    image: np.ndarray,
    alpha_path: str | os.PathLike,
    npy_path: str | os.PathLike | None = None,
    rgba_path: str | os.PathLike | None = None,
    trajectory_path: str | os.PathLike | None = None,
) -> list[Path]:
    """Writes a prediction's files, each atomically (folders are created as needed).

    Args:
        prediction: the prediction; ``trajectory`` is needed for ``trajectory_path``.
        image: float32 (H, W, 3) RGB in [0, 1], the colours of the cut-out.
        alpha_path: 8-bit single-channel PNG of ``round(alpha * 255)``.
        npy_path: float32 (H, W) alpha in [0, 1] before rounding (``np.save``).
        rgba_path: RGBA PNG: the image's 8-bit colours with the alpha as A.
        trajectory_path: grey PNG of size H x (steps * W), each step's alpha left to right.

    Returns:
        The paths written, in the order of the arguments.

    Raises:
        OSError: a file cannot be written (the files before it stay written).
    """
    alpha_u8 = alpha_to_uint8(prediction.alpha)
    written = [write_png_atomic(alpha_path, alpha_u8)]
    if npy_path is not None:
        written.append(save_npy_atomic(npy_path, prediction.alpha.astype(np.float32)))
    if rgba_path is not None:
        written.append(write_png_atomic(rgba_path, np.dstack([alpha_to_uint8(image), alpha_u8])))
    if trajectory_path is not None:
        if prediction.trajectory is None:
            raise ValueError("the prediction has no trajectory (predict with return_trajectory)")
        strip = np.concatenate([alpha_to_uint8(step) for step in prediction.trajectory], axis=1)
        written.append(write_png_atomic(trajectory_path, strip))
    return written
