"""Image operations of DIM-style composition: compositing, trimaps, random augmentations.

Sources of the facts:

* Xu et al., "Deep Image Matting", CVPR 2017: composition ``I = F * alpha + B * (1 - alpha)``
  of Adobe foregrounds onto COCO / PASCAL VOC backgrounds.
* The augmentation chain of GCA-Matting (Li & Lu, AAAI 2020, ``dataloader/data_generator.py``),
  which ViTMatte and the DiffMatte release (Hu et al. 2023, ``data/dim_dataset.py``) reuse
  unchanged: two-foreground mixing, random affine, random eroded trimaps, crops around the
  unknown region, HSV jitter of the foreground, composition. The constants below are the ones
  the original trainer ran (docs/original_release.md#training-data); the order in which they
  are applied is :class:`diffmatte.data.dim.DIMDataset`'s.

Every function works on float32 RGB in [0, 1] (the original truncates the mixed foreground to
uint8) and clips to [0, 1] after each geometric step rather than only at composition (the
thresholds and masks that follow are unchanged by this). Randomness comes from the sample's
``numpy.random.Generator``, passed in.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = [
    "INTERPOLATIONS",
    "composite",
    "dilated_trimap",
    "mix_foregrounds",
    "random_affine",
    "random_crop",
    "random_jitter",
    "random_trimap",
    "resize_foreground",
]

# OpenCV flags drawn from when ``random_interp`` is on (nearest, bilinear, bicubic, Lanczos).
INTERPOLATIONS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)
# Side of the square on which random trimaps are drawn, and the largest erosion kernel.
TRIMAP_WORK_SIZE = 640
MAX_EROSION_KERNEL = 29

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
# Composition and trimaps
# ---------------------------------------------------------------------------------------------


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
# Augmentations (in the order of DIMDataset.__getitem__)
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


def resize_foreground(
    fg: np.ndarray,
    alpha: np.ndarray,
    size: int,
    rng: np.random.Generator,
    random_interp: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Resizes a foreground and its alpha to a ``size`` square.

    Fg and alpha draw their interpolations independently, fg first.

    Args:
        fg: float32 (H, W, 3) in [0, 1].
        alpha: float32 (H, W) in [0, 1].
        size: side of the output square.
        rng: the sample's generator (interpolation choice).
        random_interp: draw the interpolations (else nearest).

    Returns:
        ``(fg, alpha)`` of shape (size, size, 3) and (size, size).
    """
    square = (size, size)
    fg = _resize(fg, square, _interp(rng, random_interp, cv2.INTER_NEAREST))
    alpha = _resize(alpha, square, _interp(rng, random_interp, cv2.INTER_NEAREST))
    return fg, alpha


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
