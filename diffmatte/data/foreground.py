"""Foreground colours for composition: reading a foreground and its alpha, Blur-Fusion estimation.

Sources of the facts:

* Forte & Pitie, "Approximate Fast Foreground Colour Estimation", ICIP 2021: the two-pass
  Blur-Fusion estimator used when a set only has photographs and alphas.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from diffmatte.data.sources import ForegroundFiles
from diffmatte.utils.image_io import ImageReadError, read_gray, read_image

__all__ = ["BLUR_FUSION_SIZES", "estimate_foreground", "load_foreground"]

# Blur-Fusion x2 box sizes (Forte & Pitie 2021): a wide pass, then a narrow refinement.
BLUR_FUSION_SIZES = (90, 6)


def _blur_fusion_pass(
    image: np.ndarray, fg: np.ndarray, bg: np.ndarray, alpha: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One Blur-Fusion pass: local means of F and B, then the compositing residual added to F."""
    a = cv2.merge([alpha, alpha, alpha])
    one_minus_a = 1.0 - a
    blurred_alpha = cv2.blur(a, (size, size))
    mean_fg = cv2.blur(fg * a, (size, size))
    mean_fg /= blurred_alpha + 1e-5
    mean_bg = cv2.blur(bg * one_minus_a, (size, size))
    mean_bg /= (1.0 + 1e-5) - blurred_alpha
    # F = F_hat + alpha * (I - alpha * F_hat - (1 - alpha) * B_hat) (the paper's update).
    new_fg = image - a * mean_fg
    new_fg -= one_minus_a * mean_bg
    new_fg *= a
    new_fg += mean_fg
    return np.clip(new_fg, 0.0, 1.0, out=new_fg), mean_bg


def estimate_foreground(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Estimates foreground colours from a photograph and its alpha (Blur-Fusion x2).

    Forte & Pitie 2021: starting from F = B = I, one pass with a 90-pixel box filter, then one
    with a 6-pixel box filter fed with the first pass's F and local background means. Fast
    (a few box filters), no linear system; good enough to re-composite onto new backgrounds.

    Args:
        image: float32 (H, W, 3) RGB in [0, 1].
        alpha: float32 (H, W) in [0, 1].

    Returns:
        float32 (H, W, 3) foreground colours in [0, 1].
    """
    image = np.asarray(image, dtype=np.float32)
    alpha = np.asarray(alpha, dtype=np.float32)
    fg, bg = image, image
    for size in BLUR_FUSION_SIZES:
        fg, bg = _blur_fusion_pass(image, fg, bg, alpha, size)
    return fg.astype(np.float32)


def _read_alpha(path: Path) -> np.ndarray:
    gray = read_gray(path)
    scale = 65535.0 if gray.dtype == np.uint16 else 255.0
    return gray.astype(np.float32) / np.float32(scale)


def load_foreground(
    files: ForegroundFiles, estimation: str = "blur_fusion"
) -> tuple[np.ndarray, np.ndarray]:
    """Reads one foreground and its alpha.

    Args:
        files: the foreground's files (:func:`diffmatte.data.sources.find_foregrounds`).
        estimation: for photographs (``files.image_path``): ``"blur_fusion"`` estimates the
            foreground colours (:func:`estimate_foreground`); ``"image"`` uses the photograph
            itself (its old background then bleeds into the soft regions).

    Returns:
        ``(fg, alpha)``: float32 (H, W, 3) RGB in [0, 1] and float32 (H, W) in [0, 1].

    Raises:
        ImageReadError: a file is unreadable or the alpha's size differs from the colours'.
    """
    if estimation not in ("blur_fusion", "image"):
        raise ValueError(f"estimation must be 'blur_fusion' or 'image', got {estimation!r}")
    colour_path = files.fg_path if files.fg_path is not None else files.image_path
    if colour_path is None:
        raise ValueError(f"{files.alpha_path}: neither a foreground nor an image path is set")
    colours = read_image(colour_path)
    alpha = _read_alpha(files.alpha_path)
    if alpha.shape != colours.shape[:2]:
        raise ImageReadError(
            files.alpha_path,
            f"size {alpha.shape[1]}x{alpha.shape[0]} does not match {colour_path.name} "
            f"({colours.shape[1]}x{colours.shape[0]})",
        )
    if files.fg_path is None and estimation == "blur_fusion":
        colours = estimate_foreground(colours, alpha)
    return colours, alpha
