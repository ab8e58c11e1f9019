"""The interactive app's logic, free of any user-interface library.

Everything the page does goes through here: finding checkpoints, keeping one
:class:`~diffmatte.inference.Predictor` loaded, building the trimap from whichever source the
person chose, running the prediction and turning the alpha into pictures and files. The page
(:mod:`diffmatte.app.ui`) only lays out controls and calls these functions, so the alpha it
shows is the predictor's alpha for the same inputs as ``run_one_image.py`` (same image reader,
same trimap reader and snapping, same quantisation).

Every problem with the inputs raises :class:`AppInputError` with one line for the page.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from diffmatte.config import ConfigError
from diffmatte.data.augmentations import composite
from diffmatte.data.testset import fit_background
from diffmatte.data.trimaps import (
    BACKGROUND,
    UNKNOWN,
    TrimapError,
    TrimapSummary,
    check_trimap,
    trimap_from_mask,
    trimap_from_scribbles,
)
from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.checkpoint import CheckpointError
from diffmatte.inference import InferenceOptions, Predictor
from diffmatte.inference.functional import resolve_config_file, resolve_device
from diffmatte.utils.image_io import (
    ImageReadError,
    alpha_to_uint8,
    read_gray,
    read_image,
    save_npy_atomic,
    to_uint8,
    write_png_atomic,
)

__all__ = [
    "AppInputError",
    "CheckpointChoice",
    "MattingResult",
    "ModelCache",
    "STRATEGIES",
    "TRIMAP_SOURCES",
    "checkerboard",
    "find_checkpoints",
    "guess_config",
    "list_configs",
    "over_background",
    "painted_trimap",
    "read_trimap",
    "run_matting",
    "trimap_overlay",
]

logger = logging.getLogger(__name__)

STRATEGIES = [f"ddim{n}" for n in range(1, 21)] + [f"ddpm{n}" for n in (1, 2, 5, 10, 20, 50)]
TRIMAP_SOURCES = ("upload", "paint", "mask")
# The quickstart's trained weights and their config, relative to the working directory.
QUICKSTART_CHECKPOINT = Path("output/quickstart/train/model_final.pth")
QUICKSTART_CONFIG = Path("configs/quickstart.py")
# Files that hold untrained weights by construction (the quickstart's initialisation).
UNTRAINED_NAMES = ("model_init.pth",)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")
PREVIEW_MAX_SIDE = 1600


class AppInputError(ValueError):
    """A problem with what the person gave the app; ``str(err)`` is one line for the page."""


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointChoice:
    """A checkpoint file the app offers, with the config it most likely belongs to."""

    label: str
    checkpoint: Path
    config: str | None


def list_configs(root: str | os.PathLike = ".") -> list[str]:
    """The variant configs under ``<root>/configs`` (not ``configs/common``), as paths."""
    folder = Path(root) / "configs"
    return sorted(str(path) for path in folder.glob("*.py") if not path.name.startswith("_"))


def guess_config(checkpoint: str | os.PathLike, configs: Sequence[str]) -> str | None:
    """The config whose file name is the checkpoint's stem (``ViTS.pth`` -> ``ViTS.py``)."""
    stem = Path(checkpoint).stem.lower()
    for config in configs:
        if Path(config).stem.lower() == stem:
            return config
    return None


def find_checkpoints(
    checkpoints_dir: str | os.PathLike = "checkpoints", root: str | os.PathLike = "."
) -> list[CheckpointChoice]:
    """Checkpoint files in ``checkpoints_dir`` (recursively), then the quickstart's trained
    weights if ``tools/quickstart.py`` has been run in ``root``. Known untrained files are left
    out."""
    configs = list_configs(root)
    choices = []
    folder = Path(checkpoints_dir)
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.suffix in CHECKPOINT_SUFFIXES and path.name not in UNTRAINED_NAMES:
                label = f"{folder.name}/{path.relative_to(folder).as_posix()}"
                choices.append(CheckpointChoice(label, path, guess_config(path, configs)))
    quickstart = Path(root) / QUICKSTART_CHECKPOINT
    if quickstart.is_file():
        choices.append(
            CheckpointChoice(
                "quickstart (small model trained on synthetic data)",
                quickstart,
                str(Path(root) / QUICKSTART_CONFIG),
            )
        )
    return choices


def device_choices() -> list[str]:
    """Devices this machine can run on."""
    return ["auto", "cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def precision_choices(device: str) -> list[str]:
    """Compute precisions the device supports (reduced precision needs CUDA)."""
    return ["fp32", "fp16", "bf16"] if resolve_device(device).type == "cuda" else ["fp32"]


class ModelCache:
    """Keeps the last loaded predictor; loads again only when the config, the checkpoint (path
    or modification time), the options or the device change. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._predictor: Predictor | None = None
        self.loads = 0

    def get(
        self, config: str, checkpoint: str, options: InferenceOptions, device: str
    ) -> tuple[Predictor, float]:
        """The predictor for these settings and the seconds spent loading it (0 if cached).

        Raises:
            AppInputError: a missing file, a bad config, weights that do not fit the config,
                or options the device cannot run.
        """
        if not checkpoint:
            raise AppInputError(
                "no checkpoint chosen: put a trained .pth in checkpoints/ or give its path"
            )
        checkpoint_path = Path(checkpoint).expanduser()
        if not checkpoint_path.is_file():
            raise AppInputError(f"{checkpoint}: checkpoint file not found")
        if not config:
            raise AppInputError("no config chosen: pick the config the checkpoint was trained with")
        config_path = resolve_config_file(config)
        if not config_path.is_file():
            raise AppInputError(f"{config}: config file not found")
        key = (
            str(config_path.resolve()),
            config_path.stat().st_mtime_ns,
            str(checkpoint_path.resolve()),
            checkpoint_path.stat().st_mtime_ns,
            options,
            device,
        )
        with self._lock:
            if key == self._key and self._predictor is not None:
                return self._predictor, 0.0
            start = time.perf_counter()
            try:
                predictor = Predictor.from_config(config_path, checkpoint_path, options, device)
            except CheckpointError as err:
                raise AppInputError(
                    f"{checkpoint_path.name} does not fit {config_path.name} (a checkpoint of "
                    f"another config?): {_one_line(err)}"
                ) from None
            except (ConfigError, ValueError) as err:
                raise AppInputError(_one_line(err)) from None
            self._key, self._predictor = key, predictor
            self.loads += 1
            logger.info("loaded %s with %s", checkpoint_path, config_path)
            return predictor, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Trimaps
# ---------------------------------------------------------------------------------------------


def _read_gray_u8(path: str | os.PathLike, what: str) -> np.ndarray:
    try:
        return to_uint8(read_gray(path))
    except ImageReadError as err:
        raise AppInputError(f"{what}: {err}") from None


def painted_trimap(layer: np.ndarray, shape: tuple[int, int], grow: int = 0) -> np.ndarray:
    """The trimap of strokes painted over the image.

    Strokes are read by brightness: white (>= 192) foreground, black (<= 64) background, grey
    unknown; unpainted pixels (alpha < 128) are unknown. With ``grow`` a band of that many
    pixels around foreground and background strokes takes their label; grey strokes then
    re-mark pixels as unknown.

    Args:
        layer: uint8 (h, w, 4) RGBA paint layer; resized (nearest) to ``shape`` if needed.
        shape: the image's (H, W).
        grow: band around the strokes in pixels.

    Returns:
        uint8 (H, W) in {0, 128, 255}.
    """
    layer = np.asarray(layer)
    if layer.ndim != 3 or layer.shape[2] != 4:
        raise AppInputError("paint layer: expected an RGBA layer")
    if layer.shape[:2] != tuple(shape):
        layer = cv2.resize(layer, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    painted = layer[:, :, 3] >= 128
    brightness = layer[:, :, :3].astype(np.float32).mean(axis=2)
    unknown_strokes = painted & (brightness > 64) & (brightness < 192)
    trimap = trimap_from_scribbles(
        painted & (brightness >= 192), painted & (brightness <= 64), grow
    )
    trimap[unknown_strokes] = UNKNOWN
    return trimap


def read_trimap(
    source: str,
    image_shape: tuple[int, ...],
    trimap_file: str | None = None,
    paint_layer: np.ndarray | None = None,
    mask_file: str | None = None,
    band_width: int = 10,
    inside_width: int | None = None,
    grow: int = 0,
) -> tuple[TrimapSummary, np.ndarray]:
    """The trimap from the chosen source, checked and snapped as ``run_one_image.py`` does.

    Args:
        source: "upload" (``trimap_file``), "paint" (``paint_layer``) or "mask" (``mask_file``
            with an unknown band of ``band_width`` px outside, ``inside_width`` px inside).
        image_shape: the image's shape (H, W, ...).
        grow: band around painted strokes in pixels.

    Returns:
        The check's summary and the grey trimap before snapping (uint8 (H, W)).

    Raises:
        AppInputError: missing or unreadable input, wrong size, no unknown or no foreground.
    """
    try:
        return _read_trimap(
            source, image_shape, trimap_file, paint_layer, mask_file, band_width, inside_width, grow
        )
    except TrimapError as err:
        raise AppInputError(f"{source} trimap: {err}") from None


def _read_trimap(
    source, image_shape, trimap_file, paint_layer, mask_file, band_width, inside_width, grow
) -> tuple[TrimapSummary, np.ndarray]:
    height, width = image_shape[:2]
    if source == "upload":
        if not trimap_file:
            raise AppInputError("trimap: upload a trimap file, or choose another trimap source")
        gray = _read_gray_u8(trimap_file, "trimap")
    elif source == "paint":
        if paint_layer is None:
            raise AppInputError("painted trimap: paint foreground and background strokes first")
        gray = painted_trimap(paint_layer, (height, width), grow)
    elif source == "mask":
        if not mask_file:
            raise AppInputError("mask: upload a rough mask to generate the trimap from")
        mask = _read_gray_u8(mask_file, "mask")
        if mask.shape != (height, width):
            raise AppInputError(
                f"mask: size {mask.shape[1]}x{mask.shape[0]} does not match the image "
                f"({width}x{height})"
            )
        gray = trimap_from_mask(
            mask, int(band_width), None if inside_width is None else int(inside_width)
        )
    else:
        raise AppInputError(f"unknown trimap source {source!r} (use one of {TRIMAP_SOURCES})")
    return check_trimap(gray, image_shape), gray


def _preview_scale(height: int, width: int) -> float:
    return min(1.0, PREVIEW_MAX_SIDE / max(height, width))


def trimap_overlay(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """A preview of the trimap over the image (scaled down to 1600 px at most): background
    darkened, unknown tinted red, foreground as is.

    Args:
        image: float32 (H, W, 3) in [0, 1].
        trimap: uint8 (H, W) in {0, 128, 255}.

    Returns:
        uint8 (h, w, 3).
    """
    view = image.copy()
    view[trimap == BACKGROUND] *= 0.25
    unknown = trimap == UNKNOWN
    view[unknown] = 0.5 * view[unknown] + 0.5 * np.array([1.0, 0.1, 0.1], np.float32)
    scale = _preview_scale(*trimap.shape)
    if scale < 1.0:
        view = cv2.resize(view, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return alpha_to_uint8(view)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


def checkerboard(height: int, width: int, square: int = 16) -> np.ndarray:
    """Light and mid grey squares, float32 (H, W, 3) in [0, 1]."""
    rows = (np.arange(height) // square)[:, None]
    cols = (np.arange(width) // square)[None, :]
    board = np.where((rows + cols) % 2 == 0, 0.8, 0.55).astype(np.float32)
    return np.repeat(board[:, :, None], 3, axis=2)


def parse_colour(colour: str) -> np.ndarray:
    """``"#rrggbb"`` (or ``rgb(r, g, b)`` / ``rgba(...)``) as float32 RGB in [0, 1]."""
    text = (colour or "").strip()
    try:
        if text.startswith("#") and len(text) in (7, 9):
            values = [int(text[i : i + 2], 16) for i in (1, 3, 5)]
        elif text.startswith("rgb"):
            values = [round(float(v)) for v in text[text.index("(") + 1 : -1].split(",")[:3]]
        else:
            raise ValueError
    except ValueError:
        raise AppInputError(f"colour {colour!r}: expected #rrggbb") from None
    return np.clip(np.array(values, np.float32), 0, 255) / 255


def over_background(image: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The image cut out by the alpha over a background (colours of the image used as the
    foreground, ``I = F alpha + B (1 - alpha)``).

    Args:
        image: float32 (H, W, 3) in [0, 1].
        alpha: float32 (H, W) in [0, 1].
        background: float32 (3,) colour, or float32 (h, w, 3) image (scaled to cover, centred).

    Returns:
        uint8 (H, W, 3).
    """
    height, width = alpha.shape
    if background.ndim == 1:
        background = np.broadcast_to(background, (height, width, 3))
    elif background.shape[:2] != (height, width):
        background = fit_background(background, height, width, "cover")
    return alpha_to_uint8(composite(image, alpha, background))


@dataclass
class MattingResult:
    """Everything the page shows after a run.

    Attributes:
        alpha: float32 (H, W) in [0, 1], the predictor's output.
        alpha_png: uint8 (H, W), as ``run_one_image.py`` writes it.
        rgba: uint8 (H, W, 4), the image's colours with the alpha.
        over_checkerboard: uint8 (H, W, 3).
        over_background: uint8 (H, W, 3), over the chosen colour or background image.
        trajectory: uint8 (H, W) x0 prediction of every step.
        files: the alpha PNG, the RGBA PNG and the float alpha ``.npy``.
        timings: seconds per phase ("load model", "predict", "outputs").
        summary: the checked trimap.
    """

    alpha: np.ndarray
    alpha_png: np.ndarray
    rgba: np.ndarray
    over_checkerboard: np.ndarray
    over_background: np.ndarray
    trajectory: list[np.ndarray]
    files: list[Path]
    timings: dict[str, float]
    summary: TrimapSummary

    def describe_timings(self) -> str:
        """One line, e.g. ``load model 0.00 s (cached) | predict 1.23 s | outputs 0.05 s``."""
        parts = []
        for name, seconds in self.timings.items():
            cached = " (cached)" if name == "load model" and seconds == 0.0 else ""
            parts.append(f"{name} {seconds:.2f} s{cached}")
        return " | ".join(parts)


def read_input_image(path: str | None, what: str = "image") -> np.ndarray:
    """The image as ``run_one_image.py`` reads it: float32 (H, W, 3) RGB in [0, 1]."""
    if not path:
        raise AppInputError(f"{what}: upload an image (or pick the lemur example)")
    try:
        return read_image(path)
    except ImageReadError as err:
        raise AppInputError(f"{what}: {err}") from None


def run_matting(
    predictor: Predictor,
    image: np.ndarray,
    summary: TrimapSummary,
    strategy: str,
    seed: int,
    background: np.ndarray,
    output_dir: str | os.PathLike | None = None,
    stem: str = "image",
    progress: Callable[[int, int], None] | None = None,
) -> MattingResult:
    """Predicts the alpha at full resolution and makes the pictures and files of a result.

    Args:
        predictor: the loaded model.
        image: float32 (H, W, 3) in [0, 1].
        summary: the checked trimap (:func:`read_trimap`).
        strategy: "ddimN" or "ddpmN".
        seed: seed of the initial noise.
        background: colour (3,) or image (h, w, 3), float32 in [0, 1].
        output_dir: where the downloads go (a new temporary folder if None).
        stem: file name stem of the downloads.
        progress: ``progress(step, steps)`` after each sampling step.

    Returns:
        The :class:`MattingResult`.
    """
    try:
        Sampler.from_strategy(strategy)
    except ValueError as err:
        raise AppInputError(f"strategy: {_one_line(err)}") from None
    if isinstance(seed, float) and not seed.is_integer():
        raise AppInputError(f"seed must be a whole number, got {seed}")
    start = time.perf_counter()
    prediction = predictor.predict(
        image,
        summary.trimap,
        strategy=strategy,
        seed=int(seed),
        return_trajectory=True,
        trimap_thresholds="demo",
        progress=progress,
    )
    predicted = time.perf_counter()
    alpha = prediction.alpha.astype(np.float32)
    alpha_png = alpha_to_uint8(alpha)
    rgba = np.dstack([alpha_to_uint8(image), alpha_png])
    height, width = alpha.shape
    folder = Path(tempfile.mkdtemp(prefix="diffmatte-app-") if output_dir is None else output_dir)
    files = [
        write_png_atomic(folder / f"{stem}_alpha.png", alpha_png),
        write_png_atomic(folder / f"{stem}_rgba.png", rgba),
        save_npy_atomic(folder / f"{stem}_alpha.npy", alpha),
    ]
    result = MattingResult(
        alpha=alpha,
        alpha_png=alpha_png,
        rgba=rgba,
        over_checkerboard=over_background(image, alpha, checkerboard(height, width)),
        over_background=over_background(image, alpha, background),
        trajectory=[alpha_to_uint8(step) for step in prediction.trajectory or []],
        files=files,
        timings={},
        summary=summary,
    )
    result.timings["predict"] = predicted - start
    result.timings["outputs"] = time.perf_counter() - predicted
    return result
