"""DIM-style training data: foregrounds composited on the fly onto background photographs.

Sources of the facts:

* Xu et al., "Deep Image Matting", CVPR 2017: composition ``I = F * alpha + B * (1 - alpha)``
  of Adobe foregrounds onto COCO / PASCAL VOC backgrounds.
* The augmentation chain of GCA-Matting (Li & Lu, AAAI 2020, ``dataloader/data_generator.py``),
  which ViTMatte and the DiffMatte release (Hu et al. 2023, ``data/dim_dataset.py``) reuse
  unchanged: two-foreground mixing, random affine, random eroded trimaps, crops around the
  unknown region, HSV jitter of the foreground, composition. The order and the constants below
  are the ones the original trainer ran (see the project's training recipe, section 7).
* Forte & Pitie, "Approximate Fast Foreground Colour Estimation", ICIP 2021: the two-pass
  Blur-Fusion estimator used when a set only has photographs and alphas.

Deliberate differences from the original, none of which changes what DiffMatte reads:
the pipeline works on float32 RGB in [0, 1] throughout (the original truncates the mixed
foreground to uint8); CutMask and GenMask's discarded first erosion are left out (they only touch
a ``mask`` entry DiffMatte never reads, or are thrown away); values are clipped to [0, 1] after
each geometric step rather than only at composition (the thresholds and masks that follow are
unchanged by this); randomness comes from one ``numpy.random.Generator`` per sample, seeded by
``(seed, epoch, index)``, so a sample does not depend on the worker that builds it.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from diffmatte.data.composition1k import DatasetError
from diffmatte.data.sources import ForegroundFiles, find_foregrounds, list_images
from diffmatte.modeling.trimap import trimap_from_uint8
from diffmatte.utils.distributed import get_rank, get_world_size
from diffmatte.utils.image_io import ImageReadError, read_gray, read_image
from diffmatte.utils.rng import capture_rng_state, restore_rng_state

__all__ = [
    "INTERPOLATIONS",
    "DIMDataset",
    "StreamDataset",
    "TrainingSampler",
    "build_train_loader",
    "composite",
    "dilated_trimap",
    "estimate_foreground",
    "load_foreground",
    "mix_foregrounds",
    "random_affine",
    "random_crop",
    "random_jitter",
    "random_trimap",
]

# OpenCV flags drawn from when ``random_interp`` is on (nearest, bilinear, bicubic, Lanczos).
INTERPOLATIONS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)
# Side of the square on which random trimaps are drawn, and the largest erosion kernel.
TRIMAP_WORK_SIZE = 640
MAX_EROSION_KERNEL = 29
# Fg + alpha are resized to this square with probability RESIZE_PROB before the chain.
RESIZE_SIZE = 640
RESIZE_PROB = 0.25
MIX_PROB = 0.5
# Blur-Fusion x2 box sizes (Forte & Pitie 2021): a wide pass, then a narrow refinement.
BLUR_FUSION_SIZES = (90, 6)

_ELLIPSES = {
    size: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    for size in range(1, MAX_EROSION_KERNEL + 1)
}


def _interp(rng: np.random.Generator, random_interp: bool, default: int) -> int:
    """An OpenCV interpolation flag: random among INTERPOLATIONS, or ``default``."""
    if random_interp:
        return INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))]
    return default


def _resize(array: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """Resizes to ``size`` = (width, height) and clips to [0, 1] (cubic/Lanczos overshoot)."""
    resized = cv2.resize(array, size, interpolation=interpolation)
    return np.clip(resized, 0.0, 1.0, out=resized)


# ---------------------------------------------------------------------------------------------
# Foreground estimation, loading, composition, trimaps
# ---------------------------------------------------------------------------------------------


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


def composite(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Composites ``I = F * alpha + B * (1 - alpha)`` (Xu et al. 2017, eq. 1).

    Args:
        fg: float (H, W, 3) in [0, 1].
        alpha: float (H, W) in [0, 1].
        bg: float (H, W, 3) in [0, 1].

    Returns:
        float32 (H, W, 3) in [0, 1].
    """
    a = np.clip(alpha, 0.0, 1.0)[:, :, None]
    image = np.clip(fg, 0.0, 1.0) * a + np.clip(bg, 0.0, 1.0) * (1.0 - a)
    return image.astype(np.float32)


def random_trimap(
    alpha: np.ndarray, rng: np.random.Generator, random_interp: bool = True
) -> np.ndarray:
    """Random training trimap from eroded alpha (GenMask of GCA-Matting / DiffMatte).

    The alpha is resized to 640x640; definite foreground (alpha >= 1) and definite background
    (alpha <= 0) are each eroded by an elliptical kernel of independent random size 1..29; the
    rest is unknown (128); the result is resized back with nearest neighbour.

    Args:
        alpha: float32 (H, W) in [0, 1].
        rng: the sample's generator.
        random_interp: draw the interpolation of the 640x640 resize (else nearest).

    Returns:
        uint8 (H, W) with values in {0, 128, 255}.
    """
    height, width = alpha.shape
    work = TRIMAP_WORK_SIZE
    small = cv2.resize(
        alpha, (work, work), interpolation=_interp(rng, random_interp, cv2.INTER_NEAREST)
    )
    # Tolerance 1e-5 as the original's int(alpha + 1e-5) test.
    fg_mask = (small >= 1.0 - 1e-5).astype(np.uint8)
    bg_mask = (small <= 1e-5).astype(np.uint8)
    fg_mask = cv2.erode(fg_mask, _ELLIPSES[int(rng.integers(1, MAX_EROSION_KERNEL + 1))])
    bg_mask = cv2.erode(bg_mask, _ELLIPSES[int(rng.integers(1, MAX_EROSION_KERNEL + 1))])
    trimap = np.full((work, work), 128, dtype=np.uint8)
    trimap[fg_mask == 1] = 255
    trimap[bg_mask == 1] = 0
    return cv2.resize(trimap, (width, height), interpolation=cv2.INTER_NEAREST)


def dilated_trimap(alpha: np.ndarray, radius: int) -> np.ndarray:
    """Evaluation trimap: the transition band of the alpha, dilated by a disc.

    A pixel is definite foreground (255) when every pixel within the elliptical kernel of size
    ``2 * radius + 1`` around it has alpha 255, definite background (0) when every such pixel
    has alpha 0, and unknown (128) otherwise. This widens both the fractional band
    (0 < alpha < 255) and hard 0-to-255 edges by ``radius`` pixels on each side.

    Args:
        alpha: uint8 (H, W) alpha in 0..255.
        radius: kernel radius in pixels (>= 0; 0 marks exactly the fractional pixels unknown).

    Returns:
        uint8 (H, W) with values in {0, 128, 255}.
    """
    if alpha.dtype != np.uint8 or alpha.ndim != 2:
        raise ValueError(f"expected a uint8 (H, W) alpha, got {alpha.dtype} {alpha.shape}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    # Erosion's default border does not shrink masks at the image edge.
    definite_fg = cv2.erode((alpha == 255).astype(np.uint8), kernel)
    definite_bg = cv2.erode((alpha == 0).astype(np.uint8), kernel)
    trimap = np.full(alpha.shape, 128, dtype=np.uint8)
    trimap[definite_fg == 1] = 255
    trimap[definite_bg == 1] = 0
    return trimap


# ---------------------------------------------------------------------------------------------
# Augmentations (the order of DIMDataset.__getitem__)
# ---------------------------------------------------------------------------------------------


def mix_foregrounds(
    fg: np.ndarray,
    alpha: np.ndarray,
    fg2: np.ndarray,
    alpha2: np.ndarray,
    rng: np.random.Generator,
    random_interp: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Overlays a second foreground behind the first (GCA-Matting's two-foreground mixing).

    The second foreground is resized to the first's size; alpha = 1 - (1 - a1)(1 - a2) (two 50 %
    layers give 75 %) and colours = F1 * a1 + F2 * (1 - a1). When the combined alpha is 1
    everywhere the first foreground is returned unchanged.

    Args:
        fg, alpha: first foreground, float32 (H, W, 3) and (H, W) in [0, 1].
        fg2, alpha2: second foreground, float32 (h, w, 3) and (h, w) in [0, 1].
        rng: the sample's generator (interpolation choice).
        random_interp: draw the resize interpolations (else nearest).

    Returns:
        ``(fg, alpha)`` of the first foreground's size.
    """
    height, width = alpha.shape
    fg2 = _resize(fg2, (width, height), _interp(rng, random_interp, cv2.INTER_NEAREST))
    alpha2 = _resize(alpha2, (width, height), _interp(rng, random_interp, cv2.INTER_NEAREST))
    mixed_alpha = 1.0 - (1.0 - alpha) * (1.0 - alpha2)
    if not np.any(mixed_alpha < 1.0):
        return fg, alpha
    a = alpha[:, :, None]
    return (fg * a + fg2 * (1.0 - a)).astype(np.float32), mixed_alpha.astype(np.float32)


def random_affine(
    fg: np.ndarray,
    alpha: np.ndarray,
    rng: np.random.Generator,
    random_interp: bool = True,
    rotation_min_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation, anisotropic scale, shear and flips about the image centre.

    Parameters as GCA-Matting's RandomAffine in the DiffMatte release: angle U(-30, 30) degrees,
    but only when ``max(H, W) >= rotation_min_size`` (0 otherwise); scale U(0.8, 1.25) drawn
    per axis; x-shear U(-10, 10) degrees; each axis flipped with p = 0.5; no translation. The
    output keeps the input size (content leaving the frame is lost, new border is zero). Fg and
    alpha draw their interpolations independently.

    Args:
        fg: float32 (H, W, 3) in [0, 1].
        alpha: float32 (H, W) in [0, 1].
        rng: the sample's generator.
        random_interp: draw the interpolations (else nearest).
        rotation_min_size: smallest long side that gets rotated; 0 rotates every sample.

    Returns:
        ``(fg, alpha)``, same shapes.
    """
    height, width = alpha.shape
    angle = rng.uniform(-30.0, 30.0) if max(height, width) >= rotation_min_size else 0.0
    scale_x, scale_y = rng.uniform(0.8, 1.25, size=2)
    shear = rng.uniform(-10.0, 10.0)
    flip_x, flip_y = np.where(rng.random(2) < 0.5, -1.0, 1.0)
    theta, phi = math.radians(angle), math.radians(shear)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    shearing = np.array([[1.0, math.tan(phi)], [0.0, 1.0]])
    linear = rotation @ shearing @ np.diag([scale_x * flip_x, scale_y * flip_y])
    centre = np.array([(width - 1) * 0.5, (height - 1) * 0.5])
    matrix = np.hstack([linear, (centre - linear @ centre)[:, None]])
    warped = []
    for array in (fg, alpha):
        flags = _interp(rng, random_interp, cv2.INTER_NEAREST)
        out = cv2.warpAffine(array, matrix, (width, height), flags=flags, borderValue=0)
        warped.append(np.clip(out, 0.0, 1.0, out=out))
    return warped[0], warped[1]


def random_crop(
    fg: np.ndarray,
    alpha: np.ndarray,
    trimap: np.ndarray,
    bg: np.ndarray,
    crop_size: int,
    rng: np.random.Generator,
    random_interp: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Crops a ``crop_size`` square around a random unknown pixel (GCA-Matting's RandomCrop).

    The background is first resized to the foreground's size. A foreground not larger than the
    crop on both sides is enlarged by ``1.1 * crop / short side`` until it is. The top-left
    corner is ``4 *`` the position of a random unknown pixel of the 4x-subsampled trimap,
    searched inside a margin of half a crop, so that pixel lands near the crop centre. With
    fewer than 10 such pixels the crop is placed uniformly at random; when the trimap has no
    unknown pixel at all, everything is resized to the crop instead.

    Args:
        fg: float32 (H, W, 3) in [0, 1].
        alpha: float32 (H, W) in [0, 1].
        trimap: uint8 (H, W) in {0, 128, 255}.
        bg: float32 (h, w, 3) in [0, 1], any size.
        crop_size: side of the square crop in pixels.
        rng: the sample's generator.
        random_interp: draw the interpolations (defaults: nearest for fg/alpha, cubic for bg).

    Returns:
        ``(fg, alpha, trimap, bg)`` of size ``crop_size x crop_size``.
    """
    height, width = trimap.shape
    bg = _resize(bg, (width, height), _interp(rng, random_interp, cv2.INTER_CUBIC))
    if height <= crop_size or width <= crop_size:
        ratio = 1.1 * crop_size / min(height, width)
        while height <= crop_size or width <= crop_size:
            size = (int(width * ratio), int(height * ratio))
            fg = _resize(fg, size, _interp(rng, random_interp, cv2.INTER_NEAREST))
            alpha = _resize(alpha, size, _interp(rng, random_interp, cv2.INTER_NEAREST))
            trimap = cv2.resize(trimap, size, interpolation=cv2.INTER_NEAREST)
            bg = _resize(bg, size, _interp(rng, random_interp, cv2.INTER_CUBIC))
            height, width = trimap.shape

    if not np.any(trimap == 128):
        size = (crop_size, crop_size)
        return (
            _resize(fg, size, _interp(rng, random_interp, cv2.INTER_NEAREST)),
            _resize(alpha, size, _interp(rng, random_interp, cv2.INTER_NEAREST)),
            cv2.resize(trimap, size, interpolation=cv2.INTER_NEAREST),
            _resize(bg, size, _interp(rng, random_interp, cv2.INTER_CUBIC)),
        )

    margin = crop_size // 2
    small = cv2.resize(trimap, (width // 4, height // 4), interpolation=cv2.INTER_NEAREST)
    window = small[margin // 4 : (height - margin) // 4, margin // 4 : (width - margin) // 4]
    rows, cols = np.nonzero(window == 128)
    if len(rows) < 10:
        top = int(rng.integers(0, height - crop_size + 1))
        left = int(rng.integers(0, width - crop_size + 1))
    else:
        pick = int(rng.integers(len(rows)))
        top = min(int(rows[pick]) * 4, height - crop_size)
        left = min(int(cols[pick]) * 4, width - crop_size)
    rows_slice = slice(top, top + crop_size)
    cols_slice = slice(left, left + crop_size)
    return (
        fg[rows_slice, cols_slice],
        alpha[rows_slice, cols_slice],
        trimap[rows_slice, cols_slice],
        bg[rows_slice, cols_slice],
    )


def _reflected_jitter(channel: np.ndarray, mean: float, rng: np.random.Generator) -> np.ndarray:
    """Adds U(-(1.1 - mean) / 10, (1.1 - mean) / 10) and reflects the result into [0, 1]."""
    spread = (1.1 - mean) / 10.0
    jittered = np.abs(channel + rng.uniform(-spread, spread))
    return np.where(jittered > 1.0, 2.0 - jittered, jittered)


def random_jitter(fg: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """HSV colour jitter of the foreground (GCA-Matting's RandomJitter).

    Hue is shifted by a random integer in [-40, 40] degrees; saturation and value each get a
    uniform offset of at most ``(1.1 - m) / 10`` in magnitude, where m is the channel's mean
    over pixels with alpha > 0 (dull foregrounds move more), reflected back into [0, 1].
    Foregrounds with zero alpha everywhere are returned unchanged, as are results with NaNs.

    Args:
        fg: float32 (H, W, 3) RGB in [0, 1].
        alpha: float32 (H, W) in [0, 1].
        rng: the sample's generator.

    Returns:
        float32 (H, W, 3) RGB in [0, 1].
    """
    inside = alpha > 0
    if not np.any(inside):
        return fg
    hsv = cv2.cvtColor(np.ascontiguousarray(fg, dtype=np.float32), cv2.COLOR_RGB2HSV)
    # OpenCV float HSV: hue in degrees [0, 360), saturation and value in [0, 1].
    hsv[:, :, 0] = np.remainder(hsv[:, :, 0] + float(rng.integers(-40, 41)), 360.0)
    for channel in (1, 2):
        mean = float(hsv[:, :, channel][inside].mean())
        hsv[:, :, channel] = _reflected_jitter(hsv[:, :, channel], mean, rng)
    jittered = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if np.isnan(jittered).any():
        return fg
    return np.clip(jittered, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------

ForegroundSource = ForegroundFiles | tuple[np.ndarray, np.ndarray]
BackgroundSource = Path | np.ndarray


def _as_float_image(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(65535.0)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{what}: expected uint8, uint16 or float pixels, got {array.dtype}")
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def _in_memory_foreground(item: Sequence[np.ndarray], position: int) -> tuple[np.ndarray, ...]:
    if len(item) != 2:
        raise ValueError(f"foreground {position}: expected a (fg, alpha) pair")
    fg = _as_float_image(item[0], f"foreground {position}")
    alpha = _as_float_image(item[1], f"alpha {position}")
    if fg.ndim != 3 or fg.shape[2] != 3 or alpha.shape != fg.shape[:2]:
        raise ValueError(
            f"foreground {position}: expected fg (H, W, 3) and alpha (H, W), got "
            f"{fg.shape} and {alpha.shape}"
        )
    return fg, alpha


def _collect_foregrounds(foregrounds: object) -> list[ForegroundSource]:
    if isinstance(foregrounds, (str, os.PathLike)):
        return list(find_foregrounds(foregrounds))
    items = list(foregrounds)  # type: ignore[call-overload]
    if not items:
        raise DatasetError("no foregrounds given")
    collected: list[ForegroundSource] = []
    for position, item in enumerate(items):
        if isinstance(item, ForegroundFiles):
            collected.append(item)
        elif isinstance(item, (str, os.PathLike)):
            collected.extend(find_foregrounds(item))
        else:
            collected.append(_in_memory_foreground(item, position))
    return collected


def _collect_backgrounds(backgrounds: object) -> list[BackgroundSource]:
    if isinstance(backgrounds, (str, os.PathLike)):
        return list(list_images(backgrounds))
    items = list(backgrounds)  # type: ignore[call-overload]
    if not items:
        raise DatasetError("no backgrounds given")
    collected: list[BackgroundSource] = []
    for position, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            collected.extend(list_images(item))
        else:
            image = _as_float_image(item, f"background {position}")
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"background {position}: expected (H, W, 3), got {image.shape}")
            collected.append(image)
    return collected


class DIMDataset(Dataset):
    """DIM-style training set: foregrounds composited onto backgrounds with random augmentation.

    Per sample, in order: with p = 0.5 a second random foreground is mixed in
    (:func:`mix_foregrounds`); with p = 0.25 fg and alpha are resized to 640x640;
    :func:`random_affine`; :func:`random_trimap`; :func:`random_crop` to ``crop_size``;
    :func:`random_jitter`; :func:`composite`.

    Indexing follows the original: ``len(dataset)`` is the number of backgrounds (or
    ``samples_per_epoch``), sample ``j`` uses background ``j % #bg`` and foreground
    ``j % #fg``. Any index ``i >= 0`` is accepted and means sample ``i % len``; the randomness of
    a sample comes only from ``numpy.random.default_rng([seed, epoch, i])``, so ``i`` and
    ``i + len`` give different augmentations of the same pair (used by :class:`TrainingSampler`)
    and results never depend on the DataLoader worker count.

    Args:
        foregrounds: a DIM-style folder (``alpha/`` + ``fg/`` or ``image/``), a sequence of
            such folders or of :class:`~diffmatte.data.sources.ForegroundFiles`, or a sequence
            of in-memory ``(fg, alpha)`` pairs (fg (H, W, 3) RGB, alpha (H, W); uint8, uint16
            or float in [0, 1]).
        backgrounds: a folder or image file, a sequence of them, or in-memory (H, W, 3) RGB
            arrays.
        crop_size: side of the square training crop (no default: every config states it).
        seed: base seed of all randomness.
        samples_per_epoch: dataset length; default the number of backgrounds.
        foreground_estimation: for ``image/`` folders, ``"blur_fusion"`` or ``"image"``
            (see :func:`load_foreground`).
        random_interp: draw interpolations at random wherever the original does.
        rotation_min_size: long side from which :func:`random_affine` rotates (1024, as the
            original code does; 0 rotates every sample as the recipe's summary reads).
        cache: keep decoded foregrounds and backgrounds in memory (per worker process).
    """

    def __init__(
        self,
        foregrounds: str | os.PathLike | Sequence,
        backgrounds: str | os.PathLike | Sequence,
        crop_size: int,
        seed: int = 0,
        samples_per_epoch: int | None = None,
        foreground_estimation: str = "blur_fusion",
        random_interp: bool = True,
        rotation_min_size: int = 1024,
        cache: bool = False,
    ) -> None:
        if crop_size < 8:
            raise ValueError(f"crop_size must be at least 8, got {crop_size}")
        if foreground_estimation not in ("blur_fusion", "image"):
            raise ValueError(
                f"foreground_estimation must be 'blur_fusion' or 'image', "
                f"got {foreground_estimation!r}"
            )
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be positive, got {samples_per_epoch}")
        self.foregrounds = _collect_foregrounds(foregrounds)
        self.backgrounds = _collect_backgrounds(backgrounds)
        self.crop_size = int(crop_size)
        self.seed = int(seed)
        self.epoch = 0
        self.samples_per_epoch = samples_per_epoch
        self.foreground_estimation = foreground_estimation
        self.random_interp = random_interp
        self.rotation_min_size = rotation_min_size
        self.cache = cache
        self._fg_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._bg_cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        if self.samples_per_epoch is not None:
            return self.samples_per_epoch
        return len(self.backgrounds)

    def set_epoch(self, epoch: int) -> None:
        """Changes the augmentation stream (for epoch-based loaders; see build_train_loader)."""
        self.epoch = int(epoch)

    def _foreground(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        source = self.foregrounds[position]
        if not isinstance(source, ForegroundFiles):
            return source
        if position in self._fg_cache:
            return self._fg_cache[position]
        loaded = load_foreground(source, self.foreground_estimation)
        if self.cache:
            self._fg_cache[position] = loaded
        return loaded

    def _background(self, position: int) -> np.ndarray:
        source = self.backgrounds[position]
        if isinstance(source, np.ndarray):
            return source
        if position in self._bg_cache:
            return self._bg_cache[position]
        image = read_image(source)
        if self.cache:
            self._bg_cache[position] = image
        return image

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Builds one augmented training sample.

        Returns:
            dict with float32 tensors, C = crop_size:
            ``"image"`` (3, C, C) RGB composite in [0, 1]; ``"alpha"`` (1, C, C) in [0, 1];
            ``"trimap"`` (1, C, C) in {0, 0.5, 1}; ``"fg"`` and ``"bg"`` (3, C, C) in [0, 1].
        """
        index = int(index)
        if index < 0:
            raise IndexError(f"negative index {index}")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        position = index % len(self)
        fg, alpha = self._foreground(position % len(self.foregrounds))
        bg = self._background(position % len(self.backgrounds))

        if rng.random() < MIX_PROB:
            fg2, alpha2 = self._foreground(int(rng.integers(len(self.foregrounds))))
            fg, alpha = mix_foregrounds(fg, alpha, fg2, alpha2, rng, self.random_interp)
        if rng.random() < RESIZE_PROB:
            size = (RESIZE_SIZE, RESIZE_SIZE)
            fg = _resize(fg, size, _interp(rng, self.random_interp, cv2.INTER_NEAREST))
            alpha = _resize(alpha, size, _interp(rng, self.random_interp, cv2.INTER_NEAREST))
        fg, alpha = random_affine(fg, alpha, rng, self.random_interp, self.rotation_min_size)
        trimap = random_trimap(alpha, rng, self.random_interp)
        fg, alpha, trimap, bg = random_crop(
            fg, alpha, trimap, bg, self.crop_size, rng, self.random_interp
        )
        fg = random_jitter(fg, alpha, rng)
        image = composite(fg, alpha, bg)
        return {
            "image": _chw(image),
            "alpha": _chw(alpha),
            "trimap": trimap_from_uint8(trimap[None]),
            "fg": _chw(fg),
            "bg": _chw(bg),
        }


def _chw(array: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) numpy -> contiguous float32 (C, H, W) tensor."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


# ---------------------------------------------------------------------------------------------
# Sampling and loading
# ---------------------------------------------------------------------------------------------


class TrainingSampler(Sampler[int]):
    """Endless shuffled index stream, split across processes.

    The global stream is pass 0, pass 1, ... where pass ``e`` is
    ``e * size + permutation_e(size)`` (permutation seeded by ``(seed, e)``); rank ``r`` of
    ``W`` takes stream positions ``r, r + W, r + 2W, ...``, skipping its first ``start``. Indices
    of later passes exceed ``size`` on purpose: :class:`DIMDataset` maps them back to
    ``index % len`` and seeds the augmentation with the full index, so every pass is freshly
    augmented and a resumed run continues exactly where it stopped.

    Args:
        size: dataset length.
        seed: permutation seed, the same on every rank.
        rank: this process's rank.
        world_size: number of processes.
        start: number of this rank's indices to skip (resume at iteration k: k * batch size).
    """

    def __init__(
        self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0
    ) -> None:
        if size < 1:
            raise ValueError(f"cannot sample from an empty dataset (size {size})")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid rank {rank} for world size {world_size}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.size = size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start = start

    def __iter__(self) -> Iterator[int]:
        position = self.rank + self.start * self.world_size
        current_pass, permutation = -1, np.empty(0, dtype=np.int64)
        while True:
            pass_index, offset = divmod(position, self.size)
            if pass_index != current_pass:
                current_pass = pass_index
                permutation = np.random.default_rng([self.seed, pass_index]).permutation(self.size)
            yield pass_index * self.size + int(permutation[offset])
            position += self.world_size


class StreamDataset(Dataset):
    """Serves the endless index stream of :class:`TrainingSampler`.

    Stream index ``i`` (pass ``i // len`` of the dataset) is handed on unchanged to datasets that
    accept any index and derive their augmentation from it (:class:`DIMDataset`); other
    datasets get ``i % len``. Python's ``random``, NumPy's global RNG and torch's CPU RNG are
    seeded from (seed, i) first, so datasets that use the global RNGs are reproducible too; in
    the main process (``num_workers=0``) their previous states are put back afterwards, so data
    loading never shifts the training RNG.

    Args:
        dataset: map-style dataset returning a dict of tensors.
        seed: base seed of the global-RNG seeding.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.stream_indexed = isinstance(dataset, DIMDataset)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        in_main = torch.utils.data.get_worker_info() is None
        saved = capture_rng_state() if in_main else None
        sample_seed = int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0])
        random.seed(sample_seed)
        np.random.seed(sample_seed)
        torch.manual_seed(sample_seed)
        try:
            return self.dataset[index if self.stream_indexed else index % len(self)]
        finally:
            if saved is not None:
                restore_rng_state(saved)


def build_train_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    start_iter: int = 0,
    infinite: bool = True,
    pin_memory: bool = False,
) -> DataLoader:
    """DataLoader for training: shuffled, split across ranks, full batches only.

    The data of every process is split across the ranks of ``torch.distributed`` (or ``RANK`` /
    ``WORLD_SIZE`` from torchrun; one process otherwise). The loader has its own generator, so
    creating its iterator does not consume the global torch RNG (which would shift the noise of
    a resumed run).

    Args:
        dataset: the training set (typically a :class:`DIMDataset`).
        batch_size: samples per batch and per process.
        num_workers: loader processes (0 loads in the main process); results do not depend on it.
        seed: shuffling seed (the dataset keeps its own augmentation seed).
        start_iter: iterations already done; the infinite stream skips ``start_iter * batch_size``
            samples of this rank, so batch ``k`` is the same for any ``start_iter`` and a resumed
            run sees the batches it would have seen.
        infinite: True: one endless stream (:class:`TrainingSampler` through
            :class:`StreamDataset`), never exhausted. False: one epoch per iteration over the
            loader, through ``DistributedSampler`` (several processes) or ``RandomSampler``; call
            ``loader.sampler.set_epoch(e)`` (distributed) and ``dataset.set_epoch(e)`` before
            each epoch for new shuffles and augmentations.
        pin_memory: pin batches in page-locked memory (faster host-to-GPU copies).

    Returns:
        A DataLoader yielding dicts of batched tensors (``drop_last=True``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rank, world_size = get_rank(), get_world_size()
    sampler: Sampler[int]
    if infinite:
        sampler = TrainingSampler(len(dataset), seed, rank, world_size, start_iter * batch_size)
        dataset = StreamDataset(dataset, seed)
    else:
        if start_iter:
            raise ValueError("start_iter needs the infinite sampler (infinite=True)")
        if world_size > 1:
            sampler = DistributedSampler(
                dataset, world_size, rank, shuffle=True, seed=seed, drop_last=True
            )
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0 and infinite,
        generator=torch.Generator().manual_seed(int(seed)),
    )
