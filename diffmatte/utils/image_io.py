"""Image reading and atomic writing for matting inputs and outputs.

Facts followed (DiffMatte, Hu et al. 2023, original release as described in the project's
behaviour sheet): images enter the network as RGB floats in [0, 1] (8-bit / 255), and the
released scripts save the float alpha map ``alpha * 255`` through OpenCV, which stores it as 8-bit
with round-to-nearest and saturation. ``alpha_to_uint8`` reproduces exactly that conversion.

Every reading problem raises :class:`ImageReadError` whose message is one line,
``"<path>: <problem>"``, so command-line tools can report it without a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from diffmatte.utils.fileio import atomic_write

__all__ = [
    "ImageReadError",
    "read_image",
    "read_gray",
    "to_uint8",
    "alpha_to_uint8",
    "write_png_atomic",
    "write_image_atomic",
    "save_npy_atomic",
]


class ImageReadError(ValueError):
    """A file could not be used as an image; ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def _decode(path: str | os.PathLike) -> np.ndarray:
    """Decodes a file with OpenCV, keeping bit depth and channels (BGR / BGRA order)."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if not path.is_file():
        raise ImageReadError(path, "not a file")
    try:
        # imdecode on the raw bytes also works for non-ASCII paths, unlike cv2.imread on Windows.
        buffer = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImageReadError(path, f"cannot read file ({err.strerror or err})") from None
    if buffer.size == 0:
        raise ImageReadError(path, "empty file")
    array = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageReadError(path, "not a readable image (unknown format or corrupt data)")
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(path, f"unsupported pixel type {array.dtype} (expected 8 or 16 bit)")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] not in (3, 4):
        raise ImageReadError(
            path, f"unsupported number of channels {array.shape[2]} (expected 1, 3 or 4)"
        )
    if array.ndim not in (2, 3):
        raise ImageReadError(path, f"unsupported array shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(path, "image has zero size")
    return array


def _max_value(dtype: np.dtype) -> float:
    return 65535.0 if dtype == np.uint16 else 255.0


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as RGB floats.

    Grayscale files are replicated to three channels, an alpha channel is dropped, 8-bit values
    are divided by 255 and 16-bit values by 65535 (in float32, as the original scripts do).

    Args:
        path: image file (PNG, JPEG, or anything OpenCV decodes).

    Returns:
        float32 array of shape (H, W, 3), RGB, values in [0, 1].

    Raises:
        ImageReadError: the file is missing, unreadable, or has an unsupported layout.
    """
    array = _decode(path)
    scale = np.float32(_max_value(array.dtype))
    if array.ndim == 2:
        rgb = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        rgb = cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    else:
        rgb = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb).astype(np.float32) / scale


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """Reads a single-channel map (trimap or alpha) at its stored bit depth.

    Colour files whose three channels are equal (grey stored as RGB, common for trimaps) give
    that channel; other colour files are converted with OpenCV's luma weights, as
    ``cv2.imread(path, 0)`` does. An alpha channel is ignored.

    Args:
        path: image file.

    Returns:
        2-D array of shape (H, W), dtype uint8 (0..255) or uint16 (0..65535) as stored.

    Raises:
        ImageReadError: the file is missing, unreadable, or has an unsupported layout.
    """
    array = _decode(path)
    if array.ndim == 2:
        return array
    bgr = array[:, :, :3]
    if np.array_equal(bgr[:, :, 0], bgr[:, :, 1]) and np.array_equal(bgr[:, :, 0], bgr[:, :, 2]):
        return np.ascontiguousarray(bgr[:, :, 0])
    return cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2GRAY)


def to_uint8(gray: np.ndarray) -> np.ndarray:
    """Brings an 8- or 16-bit integer map to 0..255 (16-bit: round(v / 257)).

    Args:
        gray: uint8 or uint16 array of any shape.

    Returns:
        uint8 array of the same shape; uint8 input is returned unchanged.
    """
    if gray.dtype == np.uint8:
        return gray
    if gray.dtype != np.uint16:
        raise TypeError(f"expected a uint8 or uint16 array, got {gray.dtype}")
    # 257 maps 0..65535 onto 0..255 exactly for values written as v * 257 by 8-to-16-bit tools.
    return np.rint(gray.astype(np.float64) / 257.0).astype(np.uint8)


def alpha_to_uint8(alpha: np.ndarray) -> np.ndarray:
    """Quantises an alpha map the way the original scripts' OpenCV save does.

    ``alpha * 255`` is computed in float32, rounded to the nearest integer (ties to even, as
    OpenCV's saturate_cast) and saturated to 0..255; NaN becomes 0.

    Args:
        alpha: float array of any shape, nominally in [0, 1].

    Returns:
        uint8 array of the same shape.
    """
    scaled = np.asarray(alpha, dtype=np.float32) * np.float32(255.0)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _encode(array: np.ndarray, extension: str) -> np.ndarray:
    """Encodes an RGB(A) or grey integer array into the bytes of an image file."""
    if array.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"expected a uint8 or uint16 array, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    elif array.ndim != 2:
        raise ValueError(f"expected (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    ok, encoded = cv2.imencode(extension, np.ascontiguousarray(array))
    if not ok:
        raise ValueError(f"OpenCV cannot encode this array as '{extension}'")
    return encoded


def write_png_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Writes a PNG atomically, whatever the file extension.

    Parent directories are created and the file is written as
    :func:`diffmatte.utils.fileio.atomic_write` does, so a reader never sees a partial file.

    Args:
        path: destination file.
        array: uint8 or uint16 array, (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA.

    Returns:
        The written path.
    """
    encoded = _encode(array, ".png")
    return atomic_write(path, lambda handle: handle.write(encoded.tobytes()))


def write_image_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Like :func:`write_png_atomic`, but the format follows the extension (PNG if none).

    Args:
        path: destination file; ``.png``, ``.tif``, ``.jpg``, ... (JPEG is lossy).
        array: uint8 or uint16 array, (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA.

    Returns:
        The written path.
    """
    encoded = _encode(array, Path(path).suffix.lower() or ".png")
    return atomic_write(path, lambda handle: handle.write(encoded.tobytes()))


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Saves an array with ``np.save`` atomically, at exactly ``path`` (no ``.npy`` appended).

    Args:
        path: destination file.
        array: any numpy array.

    Returns:
        The written path.
    """
    return atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))
