"""Building Composition-1k-style test folders from foregrounds and backgrounds.

Composition-1k (Xu et al., "Deep Image Matting", CVPR 2017) composites each of 50 test
foregrounds onto 20 PASCAL VOC backgrounds with the compositing script distributed with the
dataset. Its rules, reproduced here:

* backgrounds are taken in sequence, each used once while enough remain;
* a background smaller than the foreground is enlarged with bicubic interpolation by the larger
  of ``w_fg / w_bg`` and ``h_fg / h_bg`` (sizes rounded up), then cropped at the top-left corner
  to the foreground's size;
* ``I = alpha F + (1 - alpha) B`` on 8-bit values with ``alpha = a / 255``, truncated to an
  integer (pixels with alpha 255 keep the foreground value, alpha 0 the background value);
* outputs are named ``<fg stem>_<k>.png``, k = 0 .. N-1.

Here the background order is a seeded permutation (repeated when there are fewer backgrounds
than composites), ``bg_fit="cover"`` optionally scales every background to cover the
foreground and centre-crops it (useful for large photographs), and the trimaps, which the
benchmark ships ready-made, are computed with
:func:`diffmatte.data.augmentations.dilated_trimap`: the alpha's transition band dilated by an
elliptical kernel of size ``2 r + 1``, with ``r`` drawn once per foreground, uniformly from
``trimap_radius`` (inclusive).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from diffmatte.data.augmentations import dilated_trimap
from diffmatte.data.composition1k import COMPOSITION1K_LAYOUT, DatasetError
from diffmatte.data.dim import _as_float_image
from diffmatte.data.foreground import load_foreground
from diffmatte.data.sources import ForegroundFiles, find_foregrounds, list_images
from diffmatte.utils.fileio import atomic_write_text, check_writable_folder
from diffmatte.utils.image_io import alpha_to_uint8, read_image, write_png_atomic
from diffmatte.utils.rng import check_seed

__all__ = ["BG_FITS", "compose_testset", "fit_background"]

BG_FITS = ("dim", "cover")
# Name of the file recording what was composed (seed, options, background of each composite).
RECORD_NAME = "composition.json"


def fit_background(
    background: np.ndarray, height: int, width: int, mode: str = "dim"
) -> np.ndarray:
    """Brings a background to the foreground's size.

    Args:
        background: float32 (h, w, 3) RGB in [0, 1].
        height, width: the foreground's size.
        mode: ``"dim"``: enlarge (bicubic) only when smaller, crop the top-left corner, as the
            Composition-1k script; ``"cover"``: scale up or down (area when shrinking) so it just
            covers, then crop the centre.

    Returns:
        float32 (height, width, 3) RGB in [0, 1].
    """
    if mode not in BG_FITS:
        raise ValueError(f"bg_fit must be one of {BG_FITS}, got {mode!r}")
    bg_height, bg_width = background.shape[:2]
    ratio = max(width / bg_width, height / bg_height)
    if ratio > 1 or mode == "cover":
        size = (
            max(width, math.ceil(bg_width * ratio)),
            max(height, math.ceil(bg_height * ratio)),
        )
        interpolation = cv2.INTER_CUBIC if ratio > 1 else cv2.INTER_AREA
        background = np.clip(cv2.resize(background, size, interpolation=interpolation), 0.0, 1.0)
    top, left = 0, 0
    if mode == "cover":
        top = (background.shape[0] - height) // 2
        left = (background.shape[1] - width) // 2
    return background[top : top + height, left : left + width]


def _composite_uint8(fg: np.ndarray, alpha_u8: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """8-bit composite truncated to integers, as the Composition-1k script."""
    a = (alpha_u8.astype(np.float64) / 255.0)[:, :, None]
    value = (a * fg.astype(np.float64) + (1.0 - a) * bg.astype(np.float64)) * 255.0
    # The small offset keeps exact integers (alpha 0 or 255 on 8-bit inputs) from truncating down.
    return np.floor(np.clip(value + 1e-4, 0.0, 255.0)).astype(np.uint8)


def _background_order(count: int, total: int, seed: int) -> list[int]:
    """``total`` background indices: seeded permutations of ``range(count)``, concatenated."""
    order: list[int] = []
    repeat = 0
    while len(order) < total:
        order.extend(np.random.default_rng([seed, 1, repeat]).permutation(count).tolist())
        repeat += 1
    return order[:total]


def compose_testset(
    foregrounds: str | os.PathLike | Sequence,
    backgrounds: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    bgs_per_fg: int = 20,
    seed: int = 0,
    trimap_radius: tuple[int, int] = (10, 20),
    bg_fit: str = "dim",
    write_fg_bg: bool = False,
    foreground_estimation: str = "blur_fusion",
    progress: bool = False,
) -> list[str]:
    """Composites every foreground onto ``bgs_per_fg`` backgrounds, Composition-1k style.

    Writes, all as 8-bit PNG with the same names ``<fg stem>_<k>.png``: ``merged/`` (RGB
    composites), ``alpha_copy/`` (the alpha), ``trimaps/`` ({0, 128, 255}), and with
    ``write_fg_bg`` also ``fg/`` and ``bg/`` (the foreground colours and the fitted background
    of each composite). ``composition.json`` records the options and, per composite, the
    foreground, the background file name and the trimap radius. Every file is written
    atomically; the same inputs and seed give byte-identical outputs.

    Args:
        foregrounds: a DIM-style folder (``alpha/`` with ``fg/`` or ``image/``, see
            :func:`diffmatte.data.sources.find_foregrounds`), a sequence of such folders or of
            ``ForegroundFiles``, or a sequence of in-memory ``(name, fg, alpha)`` triples (fg
            float (H, W, 3) RGB in [0, 1], alpha float (H, W) in [0, 1] or uint8).
        backgrounds: a folder, an image file, or a sequence of them.
        output_dir: destination folder (created; existing files of the same names are replaced).
        bgs_per_fg: composites per foreground (Composition-1k: 20).
        seed: seed of the background order and the trimap radii.
        trimap_radius: inclusive range of the trimap dilation radius in pixels.
        bg_fit: ``"dim"`` or ``"cover"`` (see :func:`fit_background`).
        write_fg_bg: also write ``fg/`` and ``bg/``.
        foreground_estimation: for ``image/`` folders, ``"blur_fusion"`` or ``"image"``.
        progress: show a progress bar.

    Returns:
        The composite names, in order.

    Raises:
        DatasetError: a folder is missing or empty, or foreground names collide.
        ImageReadError: an input file is unreadable or inconsistent.
        ValueError: a bad option or seed, or ``output_dir`` cannot be written (checked before
            anything is written).
    """
    if bgs_per_fg < 1:
        raise ValueError(f"bgs_per_fg must be positive, got {bgs_per_fg}")
    low, high = trimap_radius
    if not 0 <= low <= high:
        raise ValueError(f"trimap_radius must satisfy 0 <= low <= high, got {trimap_radius}")
    if bg_fit not in BG_FITS:
        raise ValueError(f"bg_fit must be one of {BG_FITS}, got {bg_fit!r}")
    check_seed(seed)

    items = _foreground_items(foregrounds, foreground_estimation)
    bg_paths = list_images(backgrounds)
    output_dir = check_writable_folder(output_dir)
    merged_dir, trimap_dir, alpha_dir = (output_dir / name for name in COMPOSITION1K_LAYOUT)
    order = _background_order(len(bg_paths), len(items) * bgs_per_fg, seed)

    names: list[str] = []
    record: dict[str, dict[str, object]] = {}
    with tqdm(total=len(order), desc="composites", disable=not progress) as bar:
        for fg_index, (stem, load) in enumerate(items):
            fg, alpha = load()
            alpha_u8 = alpha if alpha.dtype == np.uint8 else alpha_to_uint8(alpha)
            height, width = alpha_u8.shape
            radius = int(np.random.default_rng([seed, 2, fg_index]).integers(low, high + 1))
            trimap = dilated_trimap(alpha_u8, radius)
            fg_u8 = alpha_to_uint8(fg)
            for k in range(bgs_per_fg):
                bg_path = bg_paths[order[fg_index * bgs_per_fg + k]]
                bg = fit_background(read_image(bg_path), height, width, bg_fit)
                name = f"{stem}_{k}"
                png = f"{name}.png"
                write_png_atomic(merged_dir / png, _composite_uint8(fg, alpha_u8, bg))
                write_png_atomic(alpha_dir / png, alpha_u8)
                write_png_atomic(trimap_dir / png, trimap)
                if write_fg_bg:
                    write_png_atomic(output_dir / "fg" / png, fg_u8)
                    write_png_atomic(output_dir / "bg" / png, alpha_to_uint8(bg))
                record[name] = {"foreground": stem, "background": bg_path.name, "radius": radius}
                names.append(name)
                bar.update(1)

    summary = {
        "seed": seed,
        "bgs_per_fg": bgs_per_fg,
        "trimap_radius": [low, high],
        "bg_fit": bg_fit,
        "composites": record,
    }
    text = json.dumps(summary, indent=1, sort_keys=True) + "\n"
    atomic_write_text(output_dir / RECORD_NAME, text)
    return names


Loader = Callable[[], tuple[np.ndarray, np.ndarray]]


def _foreground_items(foregrounds: object, estimation: str) -> list[tuple[str, Loader]]:
    """(stem, loader) per foreground; loaders return (fg float32, alpha float32 or uint8)."""
    if isinstance(foregrounds, (str, os.PathLike)):
        foregrounds = find_foregrounds(foregrounds)
    items: list[tuple[str, Loader]] = []
    for entry in foregrounds:  # type: ignore[attr-defined]
        if isinstance(entry, (str, os.PathLike)):
            items.extend(_foreground_items(find_foregrounds(entry), estimation))
        elif isinstance(entry, ForegroundFiles):
            items.append((entry.name, lambda files=entry: load_foreground(files, estimation)))
        else:
            name, fg, alpha = entry
            fg = _as_float_image(fg, f"foreground {name}")
            alpha = np.asarray(alpha)
            if alpha.dtype != np.uint8:
                alpha = _as_float_image(alpha, f"alpha {name}")
            items.append((str(name), lambda pair=(fg, alpha): pair))
    if not items:
        raise DatasetError("no foregrounds given")
    stems = [stem for stem, _ in items]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise DatasetError(f"foreground names occur more than once: {', '.join(duplicates[:5])}")
    return items
