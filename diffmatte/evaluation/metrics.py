"""Composition-1k matting errors (SAD, MSE, Grad, Conn), equal to the official evaluation.

The definitions are those of the Deep Image Matting evaluation code (Xu et al., "Deep Image
Matting", CVPR 2017; MATLAB files ``evaluate.m``, ``compute_sad_loss.m``, ``compute_mse_loss.m``,
``compute_gradient_loss.m``, ``compute_connectivity_error.m`` by Ning Xu, and ``gaussgradient.m``
by Guanglei Xiong), which implement the gradient and connectivity errors of Rhemann et al.,
"A Perceptually Motivated Online Benchmark for Image Matting", CVPR 2009. Every number returned
here is the single-precision value that code returns under GNU Octave (bit for bit on all the
reference cases): the arithmetic below follows the code's own float32/float64 steps and
Octave's summation order, while the work is organised for speed (lookup tables, separable
filters, OpenCV connected components, and only the pixels that can change a result).

Conventions shared by all four errors:

* ``pred``, ``gt`` and ``trimap`` are uint8 arrays of shape (H, W); alpha is 0..255.
* Only trimap pixels EXACTLY equal to 128 are "unknown" and counted. Every other value (0, 255,
  or any other grey level such as 127, 129 or 200) is left out of all four sums, including the
  pixel count of MSE. The trimap is used for nothing else (no rounding, no thresholding).
* ``trimap=None`` is the whole-image mode (every pixel counts, as for Distinctions-646); it gives
  the same numbers as a trimap that is 128 everywhere.
* ``S(X)`` is Octave's ``sum(sum(X))`` of a float32 array: each column is summed top to bottom
  in float32, then the column sums left to right in float32 (:func:`octave_sum`).
* Units are those the official ``evaluate.m`` prints: SAD, Grad and Conn are divided by 1000;
  MSE is not scaled (many papers print MSE x 1e3; say so in a table header).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import cv2
import numpy as np

__all__ = [
    "METRIC_NAMES",
    "UNKNOWN_VALUE",
    "MetricInputError",
    "compute_all",
    "compute_conn",
    "compute_grad",
    "compute_mse",
    "compute_sad",
    "octave_sum",
]

METRIC_NAMES: tuple[str, ...] = ("SAD", "MSE", "Grad", "Conn")
UNKNOWN_VALUE = 128

_F32 = np.float32
# single(v) / 255 for every uint8 value v (a correctly rounded float32 division).
_ALPHA_F32 = np.arange(256, dtype=_F32) / _F32(255)
# ((single(p) - single(g)) / 255) .^ 2 as a function of |p - g| (the sign does not change it).
_SQUARED_ERROR_F32 = _ALPHA_F32 * _ALPHA_F32
_SCALE = _F32(1000)

# gaussgradient.m: sigma 1.4, epsilon 0.01 (a 9x9 kernel).
_GRAD_SIGMA = 1.4
_GRAD_EPSILON = 0.01
# compute_connectivity_error.m: threshold step 0.1 (passed by evaluate.m), theta 0.15.
_CONN_STEP = 0.1
_CONN_THETA = 0.15


class MetricInputError(ValueError):
    """Raised when the arrays given to a metric are not uint8 (H, W) arrays of one shape."""


# ----------------------------------------------------------------------------------------------
# Octave arithmetic
# ----------------------------------------------------------------------------------------------


def octave_sum(x: np.ndarray) -> np.float32:
    """``sum(sum(x))`` of a float32 matrix exactly as Octave computes it.

    Octave sums a float32 matrix sequentially in float32: down each column, then the row of
    column sums from left to right. numpy's default (pairwise) sum, or a float64 sum, differs by
    up to ~3e-6 relative, so the order is emulated: a reduction over axis 0 of a C-contiguous
    array adds the rows one after another (sequential per column, vectorised across columns);
    a single column would take numpy's pairwise path, so it goes through ``cumsum`` instead.

    Zeros may be dropped or added anywhere without changing the result (``s + 0 == s``), which
    is why the callers only sum the bounding box of the unknown region.

    Args:
        x: float32 array of shape (H, W).

    Returns:
        The float32 sum (0 for an empty array).
    """
    x = np.ascontiguousarray(x, dtype=_F32)
    if x.ndim != 2:
        raise MetricInputError(f"octave_sum expects a 2-D array, got shape {x.shape}")
    if x.size == 0:
        return _F32(0)
    if x.shape[1] == 1:
        column_sums = np.cumsum(x, axis=0, dtype=_F32)[-1]
    else:
        column_sums = np.add.reduce(x, axis=0, dtype=_F32)
    return np.cumsum(column_sums, dtype=_F32)[-1]


class _Region(NamedTuple):
    """The pixels that are summed: a bounding box and the unknown mask inside it.

    ``mask`` is None in the whole-image mode (every pixel of the box counts). ``count`` is
    ``sum(sum(single(trimap == 128)))`` in float32.
    """

    top: int
    bottom: int
    left: int
    right: int
    mask: np.ndarray | None
    count: np.float32

    @property
    def empty(self) -> bool:
        return self.bottom == self.top

    def crop(self, x: np.ndarray) -> np.ndarray:
        return x[self.top : self.bottom, self.left : self.right]

    def masked(self, values: np.ndarray) -> np.ndarray:
        """``values .* single(trimap == 128)`` inside the box (exact: products with 1 or 0)."""
        if self.mask is None:
            return values
        return np.multiply(values, self.mask, dtype=_F32)


def _region(shape: tuple[int, int], trimap: np.ndarray | None) -> _Region:
    height, width = shape
    if trimap is None:
        # Column sums of single(ones) are exact; Octave then adds them in float32.
        count = np.cumsum(np.full(width, height, dtype=_F32), dtype=_F32)[-1]
        return _Region(0, height, 0, width, None, count)
    unknown = (trimap == UNKNOWN_VALUE).view(np.uint8)
    left, top, w, h = cv2.boundingRect(unknown)
    mask = unknown[top : top + h, left : left + w].view(bool)
    column_counts = np.count_nonzero(mask, axis=0).astype(_F32)
    count = np.cumsum(column_counts, dtype=_F32)[-1] if w else _F32(0)
    return _Region(top, top + h, left, left + w, mask, count)


# ----------------------------------------------------------------------------------------------
# Grad: mat2gray, gaussgradient.m, amplitudes
# ----------------------------------------------------------------------------------------------


def _gauss_gradient_kernels() -> tuple[np.ndarray, np.ndarray]:
    """1-D factors of gaussgradient.m's 9x9 kernel ``hx(i, j) = G(i) dG(j) / ||G dG||``.

    ``G(u) = exp(-u^2 / (2 sigma^2)) / (sigma sqrt(2 pi))`` and ``dG(u) = -u G(u) / sigma^2``
    for u = -4..4; the norm is ``sqrt(sum(sum(hx.^2)))``; ``hy = hx'``.

    Returns:
        The smoothing factor ``G`` and the derivative factor ``dG / norm``, both float64 (9,)
        and reversed, so that OpenCV's correlation performs the code's true convolution.
    """
    sigma = _GRAD_SIGMA
    halfsize = math.ceil(
        sigma * math.sqrt(-2.0 * math.log(math.sqrt(2.0 * math.pi) * sigma * _GRAD_EPSILON))
    )
    u = np.arange(-halfsize, halfsize + 1, dtype=np.float64)
    gauss = np.array(
        [math.exp(-(v * v) / (2.0 * sigma * sigma)) / (sigma * math.sqrt(2.0 * math.pi)) for v in u]
    )
    dgauss = -u * gauss / (sigma * sigma)
    # Octave's sum(sum(hx.^2)): each column in order, then the column sums in order.
    squares = np.outer(gauss, dgauss) ** 2
    total = 0.0
    for column in squares.T:
        column_sum = 0.0
        for value in column:
            column_sum += float(value)
        total += column_sum
    norm = math.sqrt(total)
    return np.ascontiguousarray(gauss[::-1]), np.ascontiguousarray(dgauss[::-1] / norm)


_GAUSS_1D, _DGAUSS_1D = _gauss_gradient_kernels()
_GRAD_HALFSIZE = len(_GAUSS_1D) // 2


def _gradient_amplitude_f32(x: np.ndarray, region: _Region) -> np.ndarray | None:
    """``single(sqrt(gx.^2 + gy.^2))`` of ``mat2gray(x)`` inside the region's box.

    ``mat2gray`` (Octave: ``(1/(max-min)) * (x - min)`` in float64) uses the minimum and maximum
    of the WHOLE image. ``gx = imfilter(x, hx, 'replicate', 'conv')``, ``gy`` likewise with
    ``hy``, in float64. The 9x9 kernel is separable, so two 1-D passes per direction are used,
    on the box plus a 4-pixel margin (the replicated border only where the margin reaches the
    image edge). The products are added in another order than Octave's ``conv2``, which changes
    the float64 values by ~1e-16 relative; the cast to float32 removes that (bit-exact on every
    reference case).

    Args:
        x: uint8 (H, W) matte.
        region: the box to return.

    Returns:
        float32 (box height, box width), or None for a constant image, whose gradient is zero
        (``mat2gray`` leaves a constant image unscaled).
    """
    lo, hi = cv2.minMaxLoc(x)[:2]
    if lo == hi:
        return None
    height, width = x.shape
    margin = _GRAD_HALFSIZE
    top, left = max(region.top - margin, 0), max(region.left - margin, 0)
    bottom, right = min(region.bottom + margin, height), min(region.right + margin, width)
    lut = (1.0 / (hi - lo)) * (np.arange(256, dtype=np.float64) - lo)
    scaled = cv2.LUT(x[top:bottom, left:right], lut)
    border = cv2.BORDER_REPLICATE
    # hx(i, j) = G(i) dG(j): derivative along x (columns), smoothing along y (rows).
    gx = cv2.sepFilter2D(scaled, cv2.CV_64F, _DGAUSS_1D, _GAUSS_1D, borderType=border)
    gy = cv2.sepFilter2D(scaled, cv2.CV_64F, _GAUSS_1D, _DGAUSS_1D, borderType=border)
    amplitude = cv2.magnitude(gx, gy)
    inner = amplitude[
        region.top - top : region.bottom - top, region.left - left : region.right - left
    ]
    return inner.astype(_F32)


# ----------------------------------------------------------------------------------------------
# Conn: thresholds, largest components, levels
# ----------------------------------------------------------------------------------------------


def _conn_tables() -> tuple[np.ndarray, np.ndarray, np.float32]:
    """Thresholds ``t = 0:0.1:1`` as uint8 cut-offs, the float32 levels, and theta.

    Returns:
        cutoffs: int (10,), the smallest uint8 value v with ``single(v)/255 >= t(k)`` for
            k = 2..11 (the float32 alpha compared with the float64 threshold, as the code
            does: 153/255 in float32 is 0.6000000238 and passes 0.6000000000000001).
        levels: float32 LUT (256,), ``single(t(j+1))`` at index j = 0..10, zeros after.
        theta: the float32 ``c`` with ``d >= c  <=>  double(d) >= 0.15`` for every float32 d.
    """
    # Octave's range 0:0.1:1 holds base + k * increment (0.6000000000000001 for k = 6).
    thresholds = [k * _CONN_STEP for k in range(round(1.0 / _CONN_STEP) + 1)]
    alpha64 = _ALPHA_F32.astype(np.float64)
    cutoffs = np.array([int(np.argmax(alpha64 >= t)) for t in thresholds[1:]])
    levels = np.zeros(256, dtype=_F32)
    # single - double converts the double to single first, then subtracts in float32.
    levels[: len(thresholds)] = np.array(thresholds, dtype=_F32)
    theta = _F32(_CONN_THETA)
    if float(theta) < _CONN_THETA:
        theta = np.nextafter(theta, _F32(np.inf))
    return cutoffs, levels, theta


_CONN_CUTOFFS, _CONN_LEVELS_F32, _CONN_THETA_F32 = _conn_tables()
# Stride of the subsample used to guess the largest component before counting it exactly.
_GUESS_STRIDE = 8


def _largest_component(mask: np.ndarray, true_count: int) -> np.ndarray:
    """The largest 4-connected component of the true pixels of ``mask``.

    Matches ``bwconncomp(mask, 4)`` followed by ``max`` of the component sizes: the background
    is never a candidate, and a tie goes to the component whose first pixel in column-major
    (MATLAB linear index) order comes first.

    Args:
        mask: uint8 (h, w) with values 0/1 and at least one 1.
        true_count: the number of 1s in ``mask``.

    Returns:
        bool (h, w), the component's pixels.
    """
    count, labels = cv2.connectedComponents(mask, connectivity=4, ltype=cv2.CV_32S)
    if count == 2:
        return mask.view(bool)
    # A component holding more than half of the true pixels is the largest, and uniquely so.
    # Guess it from a subsample and check that exactly; count all labels only if that fails.
    sample_counts = np.bincount(labels[::_GUESS_STRIDE, ::_GUESS_STRIDE].ravel(), minlength=count)
    sample_counts[0] = 0
    guess = int(np.argmax(sample_counts))
    if guess > 0:
        omega = labels == guess
        if 2 * np.count_nonzero(omega) > true_count:
            return omega
    areas = np.bincount(labels.ravel(), minlength=count)
    areas[0] = 0
    candidates = np.flatnonzero(areas == areas.max())
    best = int(candidates[0])
    if len(candidates) > 1:
        best = _first_in_column_major(labels, candidates)
    return labels == best


def _first_in_column_major(labels: np.ndarray, candidates: np.ndarray) -> int:
    """Among tied labels, the one whose first pixel in column-major order comes first."""
    best, best_key = -1, (math.inf, math.inf)
    for label in candidates:
        rows, cols = np.nonzero(labels == label)
        col = int(cols.min())
        key = (col, int(rows[cols == col].min()))
        if key < best_key:
            best, best_key = int(label), key
    return best


def _conn_levels(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Index j of the level ``l = t(j+1)`` that compute_connectivity_error.m gives each pixel.

    For k = 2..11, ``B = (p >= t(k)) & (g >= t(k))`` equals ``min(pred, gt) >= cutoff(k)``. A
    pixel keeps level ``t(k-1)`` for the first k whose largest component omits it, and 1 if no
    component ever does; so j is the number of leading thresholds whose largest components all
    hold the pixel. The sets B shrink with k, so each step only labels the bounding box of its
    B, and a step whose B did not change reuses the previous component.

    Returns:
        uint8 (H, W) with values 0..10.
    """
    both = cv2.min(pred, gt)
    levels = np.zeros(pred.shape, dtype=np.uint8)
    # alive: pixels in the largest component of every threshold so far, held for the box
    # (top, left) + alive.shape; no pixel outside the box is alive.
    top, left = 0, 0
    alive = np.ones(pred.shape, dtype=bool)
    previous_count = -1
    for cutoff in _CONN_CUTOFFS:
        height, width = alive.shape
        mask = (both[top : top + height, left : left + width] >= cutoff).view(np.uint8)
        true_count = cv2.countNonZero(mask)
        if true_count == 0:
            break
        # B only shrinks, so an unchanged count means an unchanged B and component.
        if true_count != previous_count:
            x, y, w, h = cv2.boundingRect(mask)
            omega = _largest_component(mask[y : y + h, x : x + w], true_count)
            alive = np.logical_and(alive[y : y + h, x : x + w], omega)
            top, left = top + y, left + x
            height, width = alive.shape
            previous_count = true_count
        levels[top : top + height, left : left + width] += alive.view(np.uint8)
    return levels


def _phi(alpha_u8: np.ndarray, levels_f32: np.ndarray) -> np.ndarray:
    """``1 - d .* single(d >= 0.15)`` with ``d = single(alpha)/255 - single(l)``, in float32."""
    d = cv2.LUT(alpha_u8, _ALPHA_F32)
    np.subtract(d, levels_f32, out=d)
    d *= d >= _CONN_THETA_F32
    return np.subtract(_F32(1), d, out=d)


# ----------------------------------------------------------------------------------------------
# The four errors
# ----------------------------------------------------------------------------------------------


def _check_inputs(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray | None) -> None:
    arrays = {"pred": pred, "gt": gt}
    if trimap is not None:
        arrays["trimap"] = trimap
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise MetricInputError(f"{name} must be a numpy array, got {type(array).__name__}")
        if array.dtype != np.uint8 or array.ndim != 2:
            raise MetricInputError(
                f"{name} must be a uint8 array of shape (H, W), "
                f"got {array.dtype} of shape {array.shape}"
            )
        if array.size == 0:
            raise MetricInputError(f"{name} is empty (shape {array.shape})")
    shapes = {name: array.shape for name, array in arrays.items()}
    if len(set(shapes.values())) != 1:
        listed = ", ".join(f"{name} {h}x{w}" for name, (h, w) in shapes.items())
        raise MetricInputError(f"sizes differ: {listed}")


def _prepare(
    pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, _Region]:
    _check_inputs(pred, gt, trimap)
    trimap = None if trimap is None else np.ascontiguousarray(trimap)
    return np.ascontiguousarray(pred), np.ascontiguousarray(gt), _region(pred.shape, trimap)


def _absdiff(pred: np.ndarray, gt: np.ndarray, region: _Region) -> np.ndarray:
    """``|pred - gt|`` (uint8) in the box, 0 outside the unknown mask (both LUTs map 0 to 0)."""
    if region.empty:
        return np.zeros((0, 0), dtype=np.uint8)
    absdiff = cv2.absdiff(region.crop(pred), region.crop(gt))
    if region.mask is not None:
        absdiff *= region.mask
    return absdiff


def _sad(absdiff: np.ndarray) -> float:
    if absdiff.size == 0:
        return 0.0
    return float(octave_sum(cv2.LUT(absdiff, _ALPHA_F32)) / _SCALE)


def _mse(absdiff: np.ndarray, region: _Region) -> float:
    if region.count == 0:
        warnings.warn(
            "MSE of an empty unknown region (no trimap pixel equals 128) is 0/0 = NaN, "
            "as in the official evaluation",
            RuntimeWarning,
            stacklevel=3,
        )
        return math.nan
    return float(octave_sum(cv2.LUT(absdiff, _SQUARED_ERROR_F32)) / region.count)


def _grad(pred: np.ndarray, gt: np.ndarray, region: _Region) -> float:
    if region.empty:
        return 0.0
    amp_pred = _gradient_amplitude_f32(pred, region)
    amp_gt = _gradient_amplitude_f32(gt, region)
    if amp_pred is None and amp_gt is None:
        return 0.0
    if amp_pred is None or amp_gt is None:
        # A constant matte has zero gradient: (0 - a)^2 = a^2.
        error = amp_gt if amp_pred is None else amp_pred
        error = error * error
    else:
        error = np.subtract(amp_pred, amp_gt, out=amp_pred)
        np.multiply(error, error, out=error)
    return float(octave_sum(region.masked(error)) / _SCALE)


def _conn(pred: np.ndarray, gt: np.ndarray, region: _Region) -> float:
    if region.empty:
        return 0.0
    levels = cv2.LUT(region.crop(_conn_levels(pred, gt)), _CONN_LEVELS_F32)
    error = cv2.absdiff(_phi(region.crop(pred), levels), _phi(region.crop(gt), levels))
    return float(octave_sum(region.masked(error)) / _SCALE)


def compute_sad(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray | None) -> float:
    """Sum of absolute differences over the unknown region, in thousands.

    ``sum(sum(abs(single(pred) - single(gt))/255 .* single(trimap == 128))) / 1000`` in float32
    (compute_sad_loss.m, which divides by 1000 itself).

    Args:
        pred: uint8 (H, W) predicted alpha, 0..255.
        gt: uint8 (H, W) ground-truth alpha, 0..255.
        trimap: uint8 (H, W); only pixels equal to 128 count (other values, including grey
            levels such as 127 or 200, are ignored). None: every pixel counts (whole image).

    Returns:
        SAD / 1000 (the number papers print); exactly 0 for an empty unknown region or
        pred == gt.

    Raises:
        MetricInputError: an input is not a uint8 (H, W) array, or the shapes differ.
    """
    pred, gt, region = _prepare(pred, gt, trimap)
    return _sad(_absdiff(pred, gt, region))


def compute_mse(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray | None) -> float:
    """Mean squared alpha error over the unknown region (alpha in [0, 1]), unscaled.

    ``sum(sum(((single(pred) - single(gt))/255).^2 .* U)) / sum(sum(U))`` with
    ``U = single(trimap == 128)``, in float32 (compute_mse_loss.m). Papers often print it x 1e3.

    An empty unknown region (no pixel equals 128) gives 0/0 = NaN, as the official code does:
    a ``RuntimeWarning`` is emitted and NaN is returned (never 0). A mean over a set that
    includes such an image is NaN as well (see ``MattingEvaluator``).

    Args:
        pred: uint8 (H, W) predicted alpha, 0..255.
        gt: uint8 (H, W) ground-truth alpha, 0..255.
        trimap: uint8 (H, W); only pixels equal to 128 count, also in the pixel count.
            None: every pixel counts (whole image).

    Returns:
        The MSE, or NaN for an empty unknown region.

    Raises:
        MetricInputError: an input is not a uint8 (H, W) array, or the shapes differ.
    """
    pred, gt, region = _prepare(pred, gt, trimap)
    return _mse(_absdiff(pred, gt, region), region)


def compute_grad(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray | None) -> float:
    """Gradient error over the unknown region, in thousands (compute_gradient_loss.m).

    Each matte is min-max normalised on its own (``mat2gray``: ``(x - min)/(max - min)`` in
    float64, NOT ``x / 255``), differentiated with the Gaussian-derivative filters of
    gaussgradient.m (sigma 1.4, 9x9, replicated border, true convolution) on the WHOLE image,
    and the float32 amplitudes are compared: ``sum(sum((single(|grad p|) - single(|grad g|)).^2
    .* single(trimap == 128))) / 1000``. The trimap only selects the summed pixels.

    A constant pred or gt (all 0, all 255, ...) is not rescaled by ``mat2gray`` and has zero
    gradient. When the two amplitudes agree up to rounding (pred = 255 - gt, or an affine map
    of gt that ``mat2gray`` undoes), the official result is a rounding residue (order 1e-30, or
    exactly 0) rather than a meaningful number; this function then returns a residue of the
    same tiny order, not necessarily the same one.

    Args:
        pred: uint8 (H, W) predicted alpha, 0..255.
        gt: uint8 (H, W) ground-truth alpha, 0..255.
        trimap: uint8 (H, W); only pixels equal to 128 are summed. None: whole image.

    Returns:
        Grad / 1000; exactly 0 for an empty unknown region.

    Raises:
        MetricInputError: an input is not a uint8 (H, W) array, or the shapes differ.
    """
    pred, gt, region = _prepare(pred, gt, trimap)
    return _grad(pred, gt, region)


def compute_conn(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray | None) -> float:
    """Connectivity error over the unknown region, in thousands (compute_connectivity_error.m).

    With ``p = single(pred)/255``, ``g = single(gt)/255`` and thresholds ``t = 0:0.1:1``: for
    k = 2..11, omega is the largest 4-connected component of ``(p >= t(k)) & (g >= t(k))``,
    found on the whole image among the true pixels only (the background never wins; a tie goes
    to the component that comes first in column-major order; no true pixel: omega is empty).
    Each pixel not yet given a level and outside omega gets ``l = t(k-1)``; the rest end at 1.
    Then ``d = x - single(l)`` and ``phi = 1 - d .* (d >= 0.15)`` for both mattes, and the error
    is ``sum(sum(abs(phi_p - phi_g) .* single(trimap == 128))) / 1000``, all in float32. The
    float32 alphas are compared with the float64 thresholds (153/255 passes 0.6).

    Edge cases: an all-0 pred (or gt) makes every set empty, so every level is 0; pred == gt
    gives exactly 0. The official code also computes distance maps that never enter its result;
    they are not computed here.

    Args:
        pred: uint8 (H, W) predicted alpha, 0..255.
        gt: uint8 (H, W) ground-truth alpha, 0..255.
        trimap: uint8 (H, W); only pixels equal to 128 are summed (components are always found
            on the whole image). None: whole image.

    Returns:
        Conn / 1000; exactly 0 for an empty unknown region.

    Raises:
        MetricInputError: an input is not a uint8 (H, W) array, or the shapes differ.
    """
    pred, gt, region = _prepare(pred, gt, trimap)
    return _conn(pred, gt, region)


def compute_all(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray | None) -> dict[str, float]:
    """All four errors at once, sharing the input checks, the unknown region and ``|pred - gt|``.

    Args:
        pred: uint8 (H, W) predicted alpha, 0..255.
        gt: uint8 (H, W) ground-truth alpha, 0..255.
        trimap: uint8 (H, W) (only 128 is unknown), or None for the whole image.

    Returns:
        ``{"SAD": ..., "MSE": ..., "Grad": ..., "Conn": ...}`` in the official units (SAD, Grad,
        Conn / 1000; MSE unscaled, NaN with a ``RuntimeWarning`` for an empty unknown region).
        See the single-metric functions for the definitions and edge cases.

    Raises:
        MetricInputError: an input is not a uint8 (H, W) array, or the shapes differ.
    """
    pred, gt, region = _prepare(pred, gt, trimap)
    absdiff = _absdiff(pred, gt, region)
    return {
        "SAD": _sad(absdiff),
        "MSE": _mse(absdiff, region),
        "Grad": _grad(pred, gt, region),
        "Conn": _conn(pred, gt, region),
    }
