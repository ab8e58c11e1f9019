"""Making and checking trimaps: plain functions of numpy arrays.

A trimap here is a uint8 (H, W) map with three values: 0 background, 128 unknown, 255
foreground. The functions make one from what people usually have at hand:

- a rough mask (a segmentation or a selection, binary or soft): :func:`trimap_from_mask` puts an
  unknown band around the mask's boundary by erosion and dilation;
- a ground-truth alpha: :func:`trimap_from_alpha`, the Composition-1k rule of the data pipeline
  (:func:`diffmatte.data.dim.dilated_trimap`);
- foreground and background strokes: :func:`trimap_from_scribbles`;

and :func:`check_trimap` validates a given one, snapping its grey levels with the thresholds of
the original demo (those of ``run_one_image.py``).

Bands are drawn with elliptical (disc) kernels, and erosion does not shrink a region at the
image border, as in :func:`~diffmatte.data.dim.dilated_trimap`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from diffmatte.data.augmentations import dilated_trimap
from diffmatte.modeling.trimap import trimap_from_gray_demo, trimap_from_uint8
from diffmatte.utils.image_io import alpha_to_uint8, to_uint8

__all__ = [
    "BACKGROUND",
    "FOREGROUND",
    "TrimapError",
    "TrimapSummary",
    "UNKNOWN",
    "check_trimap",
    "mask_to_bool",
    "object_size",
    "parse_width",
    "snap_trimap",
    "trimap_from_alpha",
    "trimap_from_mask",
    "trimap_from_scribbles",
    "width_in_pixels",
]

BACKGROUND, UNKNOWN, FOREGROUND = 0, 128, 255


class TrimapError(ValueError):
    """A trimap (or its source) cannot be used; ``str(err)`` is one line."""


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _erode(region: np.ndarray, radius: int) -> np.ndarray:
    """Pixels of ``region`` whose whole disc of ``radius`` lies in ``region`` (bool)."""
    if radius == 0:
        return region.copy()
    return cv2.erode(region.astype(np.uint8), _disc(radius)).astype(bool)


def _dilate(region: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` of ``region`` (bool)."""
    if radius == 0:
        return region.copy()
    return cv2.dilate(region.astype(np.uint8), _disc(radius)).astype(bool)


def mask_to_bool(mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The object of a binary or soft mask: pixels at or above ``threshold`` of full scale.

    Args:
        mask: (H, W) bool, uint8 (0..255), uint16 (0..65535) or float (0..1).
        threshold: fraction of full scale in (0, 1].

    Returns:
        bool (H, W).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise TrimapError(f"expected a 2-D mask, got shape {mask.shape}")
    if not 0.0 < threshold <= 1.0:
        raise TrimapError(f"threshold must be in (0, 1], got {threshold}")
    if mask.dtype == bool:
        return mask.copy()
    if mask.dtype in (np.uint8, np.uint16):
        full = 255.0 if mask.dtype == np.uint8 else 65535.0
        return mask.astype(np.float64) >= threshold * full
    if np.issubdtype(mask.dtype, np.floating):
        return np.nan_to_num(mask.astype(np.float64)) >= threshold
    raise TrimapError(f"unsupported mask type {mask.dtype} (bool, uint8, uint16 or float)")


def object_size(region: np.ndarray) -> float:
    """Size of an object in pixels: the side of a square of the same area, ``sqrt(area)``."""
    return float(np.sqrt(np.count_nonzero(region)))


def width_in_pixels(width: int | float, region: np.ndarray) -> int:
    """A band width as a whole number of pixels.

    Args:
        width: an int is pixels (>= 0); a float is a fraction of :func:`object_size` of
            ``region`` (>= 0), rounded to the nearest pixel.
        region: bool (H, W), the object the fraction refers to.

    Returns:
        The width in pixels (>= 0).
    """
    if isinstance(width, bool) or not isinstance(width, (int, float, np.integer, np.floating)):
        raise TrimapError(f"band width must be a number, got {width!r}")
    if width < 0:
        raise TrimapError(f"band width must be >= 0, got {width}")
    if isinstance(width, (int, np.integer)):
        return int(width)
    return int(round(float(width) * object_size(region)))


def parse_width(text: str) -> int | float:
    """Reads a band width: ``"12"`` (pixels, int) or ``"5%"`` (fraction of the object's size,
    float 0.05)."""
    value = text.strip()
    try:
        if value.endswith("%"):
            width: int | float = float(value[:-1]) / 100.0
        else:
            width = int(value)
    except ValueError:
        raise TrimapError(
            f"band width {text!r} is neither pixels (e.g. 12) nor a percentage (e.g. 5%)"
        ) from None
    if width < 0:
        raise TrimapError(f"band width must be >= 0, got {text!r}")
    return width


def trimap_from_mask(
    mask: np.ndarray,
    width: int | float,
    inside_width: int | float | None = None,
    threshold: float = 0.5,
) -> np.ndarray:
    """Trimap with an unknown band around the boundary of a rough mask.

    The object (``mask >= threshold``) eroded by ``inside_width`` is foreground, the rest of the
    image eroded by ``width`` (the object dilated by ``width``, inverted) is background, and the
    band between them is unknown.

    Args:
        mask: (H, W) bool, uint8, uint16 or float mask, see :func:`mask_to_bool`.
        width: band width outside the object: int pixels, or float fraction of the object's
            size (:func:`width_in_pixels`).
        inside_width: band width inside the object; None uses ``width``.
        threshold: object threshold as a fraction of full scale.

    Returns:
        uint8 (H, W) in {0, 128, 255}.
    """
    region = mask_to_bool(mask, threshold)
    outside = width_in_pixels(width, region)
    inside = outside if inside_width is None else width_in_pixels(inside_width, region)
    trimap = np.full(region.shape, UNKNOWN, dtype=np.uint8)
    trimap[_erode(region, inside)] = FOREGROUND
    trimap[_erode(~region, outside)] = BACKGROUND
    return trimap


def trimap_from_alpha(alpha: np.ndarray, radius: int) -> np.ndarray:
    """The Composition-1k trimap of a ground-truth alpha.

    Exactly :func:`diffmatte.data.dim.dilated_trimap` (the rule the test-set composer uses):
    pixels within ``radius`` of a fractional alpha or of a 0-to-255 edge are unknown.

    Args:
        alpha: uint8 (H, W) 0..255, uint16 (H, W) or float (H, W) in [0, 1] (quantised as the
            saved alphas are, :func:`~diffmatte.utils.image_io.alpha_to_uint8`).
        radius: band radius in pixels (>= 0).

    Returns:
        uint8 (H, W) in {0, 128, 255}.
    """
    alpha = np.asarray(alpha)
    if alpha.ndim != 2:
        raise TrimapError(f"expected a 2-D alpha, got shape {alpha.shape}")
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise TrimapError(f"radius must be an integer >= 0, got {radius!r}")
    if alpha.dtype in (np.uint8, np.uint16):
        alpha_u8 = to_uint8(alpha)
    elif np.issubdtype(alpha.dtype, np.floating):
        alpha_u8 = alpha_to_uint8(alpha)
    else:
        raise TrimapError(f"unsupported alpha type {alpha.dtype} (uint8, uint16 or float)")
    return dilated_trimap(alpha_u8, int(radius))


def trimap_from_scribbles(
    foreground: np.ndarray, background: np.ndarray, grow: int = 0
) -> np.ndarray:
    """Trimap from foreground and background strokes; everything unmarked is unknown.

    With ``grow > 0`` every pixel within ``grow`` pixels of a stroke takes that stroke's label,
    so thin strokes mark a band around them. Pixels claimed by both kinds stay unknown.

    Args:
        foreground: (H, W) stroke mask; nonzero (or True) pixels are foreground strokes.
        background: (H, W) stroke mask of the same shape; nonzero pixels are background strokes.
        grow: band around the strokes in pixels (>= 0).

    Returns:
        uint8 (H, W) in {0, 128, 255}.
    """
    foreground, background = np.asarray(foreground), np.asarray(background)
    if foreground.ndim != 2 or foreground.shape != background.shape:
        raise TrimapError(
            f"stroke masks must be 2-D and of one size, got {foreground.shape} and "
            f"{background.shape}"
        )
    if isinstance(grow, bool) or not isinstance(grow, (int, np.integer)) or grow < 0:
        raise TrimapError(f"grow must be an integer >= 0, got {grow!r}")
    fg = _dilate(foreground != 0, int(grow))
    bg = _dilate(background != 0, int(grow))
    trimap = np.full(fg.shape, UNKNOWN, dtype=np.uint8)
    trimap[fg & ~bg] = FOREGROUND
    trimap[bg & ~fg] = BACKGROUND
    return trimap


def snap_trimap(gray: np.ndarray, thresholds: str = "demo") -> np.ndarray:
    """Snaps a grey trimap to {0, 128, 255}.

    Args:
        gray: uint8 or uint16 (H, W).
        thresholds: ``"demo"`` (``run_one_image.py``: v / 255 below 0.1 background, above 0.9
            foreground) or ``"composition1k"`` (below 85 background, from 170 foreground); see
            :mod:`diffmatte.modeling.trimap`.

    Returns:
        uint8 (H, W) in {0, 128, 255}.
    """
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.dtype not in (np.uint8, np.uint16):
        raise TrimapError(
            f"expected a uint8 or uint16 (H, W) trimap, got {gray.dtype} {gray.shape}"
        )
    if thresholds == "demo":
        levels = trimap_from_gray_demo(to_uint8(gray)).numpy()
    elif thresholds == "composition1k":
        levels = trimap_from_uint8(to_uint8(gray)).numpy()
    else:
        raise TrimapError(f"unknown thresholds {thresholds!r} (use 'demo' or 'composition1k')")
    trimap = np.full(gray.shape, UNKNOWN, dtype=np.uint8)
    trimap[levels == 0.0] = BACKGROUND
    trimap[levels == 1.0] = FOREGROUND
    return trimap


@dataclass(frozen=True)
class TrimapSummary:
    """A checked trimap.

    Attributes:
        trimap: uint8 (H, W) in {0, 128, 255}, after snapping.
        grey_levels: number of distinct values of the given trimap.
        foreground: fraction of foreground pixels.
        background: fraction of background pixels.
        unknown: fraction of unknown pixels.
        snapped: whether the given trimap had values other than 0, 128 and 255.
    """

    trimap: np.ndarray
    grey_levels: int
    foreground: float
    background: float
    unknown: float
    snapped: bool

    def describe(self) -> str:
        """One line: the shares of the three regions."""
        return (
            f"{self.trimap.shape[1]}x{self.trimap.shape[0]}: foreground {self.foreground:.1%}, "
            f"unknown {self.unknown:.1%}, background {self.background:.1%}"
        )


def check_trimap(
    gray: np.ndarray,
    image_shape: tuple[int, ...] | None = None,
    thresholds: str = "demo",
    require_foreground: bool = True,
) -> TrimapSummary:
    """Validates a trimap and snaps it to three levels.

    Args:
        gray: uint8 or uint16 (H, W) grey trimap.
        image_shape: the image's shape (H, W, ...), to check the size against.
        thresholds: how grey levels are snapped, see :func:`snap_trimap`.
        require_foreground: a trimap without foreground pixels is an error.

    Returns:
        The :class:`TrimapSummary`.

    Raises:
        TrimapError: wrong type or size, no unknown pixel, or no foreground pixel.
    """
    gray = np.asarray(gray)
    trimap = snap_trimap(gray, thresholds)
    if image_shape is not None and tuple(image_shape[:2]) != trimap.shape:
        raise TrimapError(
            f"size {trimap.shape[1]}x{trimap.shape[0]} does not match the image "
            f"({image_shape[1]}x{image_shape[0]})"
        )
    total = trimap.size
    counts = {value: int(np.count_nonzero(trimap == value)) for value in (0, 128, 255)}
    if counts[UNKNOWN] == 0:
        raise TrimapError("no unknown pixel: the trimap leaves nothing to predict")
    if require_foreground and counts[FOREGROUND] == 0:
        raise TrimapError("no foreground pixel: mark some of the object as foreground")
    values = np.unique(gray)
    return TrimapSummary(
        trimap=trimap,
        grey_levels=len(values),
        foreground=counts[FOREGROUND] / total,
        background=counts[BACKGROUND] / total,
        unknown=counts[UNKNOWN] / total,
        snapped=not set(values.tolist()) <= {0, 128, 255},
    )
