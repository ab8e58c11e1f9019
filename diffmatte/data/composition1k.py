"""Reader for Composition-1k-style test folders (images, trimaps, optional alphas, by file stem).

Composition-1k (Xu et al., "Deep Image Matting", CVPR 2017) as prepared by GCA-Matting's
``Composition_code.py`` / ``copy_testing_alpha.sh`` and used by the DiffMatte release is::

    root/merged/<name>.png       composite images (RGB)
    root/trimaps/<name>.png      trimaps, 0 = background, 128 = unknown, 255 = foreground
    root/alpha_copy/<name>.png   ground-truth alpha (optional: not needed for inference)

Files are matched by stem, so ``merged/x.jpg`` pairs with ``trimaps/x.png``. The flat layout of
many small matting sets (``image/``, ``trimap/``, ``alpha/``) is recognised as well.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from diffmatte.utils.image_io import ImageReadError, read_gray, read_image, to_uint8

__all__ = [
    "IMAGE_EXTENSIONS",
    "COMPOSITION1K_LAYOUT",
    "FLAT_LAYOUT",
    "DatasetError",
    "MattingPair",
    "MattingSample",
    "PairListing",
    "detect_layout",
    "list_pairs",
    "read_sample",
    "Composition1kDataset",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# (image folder, trimap folder, alpha folder) of the Composition-1k test set.
COMPOSITION1K_LAYOUT = ("merged", "trimaps", "alpha_copy")
# (image folder, trimap folder, alpha folder) of flat sets such as alphamatting.com's.
FLAT_LAYOUT = ("image", "trimap", "alpha")
# How many file names a one-line report spells out before summarising the rest.
_NAMES_SHOWN = 5


class DatasetError(ValueError):
    """A dataset folder cannot be used at all (missing folder); the message is one line."""


@dataclass(frozen=True)
class MattingPair:
    """The files of one sample.

    Attributes:
        name: the common file stem.
        image_path: the composite image.
        trimap_path: its trimap.
        alpha_path: its ground-truth alpha, or None.
    """

    name: str
    image_path: Path
    trimap_path: Path
    alpha_path: Path | None = None


@dataclass
class MattingSample:
    """One loaded sample.

    Attributes:
        name: the common file stem.
        image: float32 (H, W, 3) RGB in [0, 1].
        trimap: uint8 (H, W), as stored (0..255; 16-bit files are brought to 0..255).
        alpha: uint8 (H, W) ground truth, or None.
    """

    name: str
    image: np.ndarray
    trimap: np.ndarray
    alpha: np.ndarray | None = None


def _format_names(paths: list[Path]) -> str:
    shown = ", ".join(path.name for path in paths[:_NAMES_SHOWN])
    if len(paths) > _NAMES_SHOWN:
        shown += f" and {len(paths) - _NAMES_SHOWN} more"
    return shown


@dataclass
class PairListing:
    """Result of :func:`list_pairs`: matched samples plus what could not be matched.

    Attributes:
        pairs: matched samples, sorted by name.
        missing_trimaps: image files without a trimap (these samples cannot be used).
        unused_trimaps: trimap files without an image (ignored).
        missing_alphas: image files without an alpha, when an alpha folder exists.
        ambiguous: image files sharing a stem with another image file (all skipped).
    """

    pairs: list[MattingPair] = field(default_factory=list)
    missing_trimaps: list[Path] = field(default_factory=list)
    unused_trimaps: list[Path] = field(default_factory=list)
    missing_alphas: list[Path] = field(default_factory=list)
    ambiguous: list[Path] = field(default_factory=list)
    image_dir: Path | None = None
    trimap_dir: Path | None = None
    alpha_dir: Path | None = None

    @property
    def num_unusable(self) -> int:
        """Number of image files that give no sample (no trimap, or an ambiguous stem)."""
        return len(self.missing_trimaps) + len(self.ambiguous)

    def problems(self) -> list[str]:
        """One line per kind of mismatch found (empty when everything matched)."""
        lines = []
        if self.missing_trimaps:
            lines.append(
                f"{self.image_dir}: {len(self.missing_trimaps)} image(s) without a trimap in "
                f"{self.trimap_dir}: {_format_names(self.missing_trimaps)}"
            )
        if self.ambiguous:
            lines.append(
                f"{self.image_dir}: {len(self.ambiguous)} image file(s) share a name with "
                f"another image and are skipped: {_format_names(self.ambiguous)}"
            )
        if self.unused_trimaps:
            lines.append(
                f"{self.trimap_dir}: {len(self.unused_trimaps)} trimap(s) without an image in "
                f"{self.image_dir}: {_format_names(self.unused_trimaps)}"
            )
        if self.missing_alphas:
            lines.append(
                f"{self.alpha_dir}: no alpha for {len(self.missing_alphas)} image(s): "
                f"{_format_names(self.missing_alphas)}"
            )
        return lines


def detect_layout(root: str | os.PathLike) -> tuple[str, str, str]:
    """Picks the folder names of a dataset root.

    Args:
        root: dataset folder.

    Returns:
        :data:`COMPOSITION1K_LAYOUT` if ``root/merged`` exists, else :data:`FLAT_LAYOUT` if
        ``root/image`` exists.

    Raises:
        DatasetError: ``root`` is missing or has neither folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found")
    for layout in (COMPOSITION1K_LAYOUT, FLAT_LAYOUT):
        if (root / layout[0]).is_dir():
            return layout
    raise DatasetError(
        f"{root}: no '{COMPOSITION1K_LAYOUT[0]}/' folder (nor '{FLAT_LAYOUT[0]}/'); "
        "expected a Composition-1k-style folder with merged/ and trimaps/"
    )


def _index_by_stem(folder: Path) -> dict[str, list[Path]]:
    """Maps stem -> image files in ``folder``, sorted; hidden and temporary files are skipped."""
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.is_file():
            by_stem.setdefault(path.stem, []).append(path)
    return by_stem


def _pick_one(paths: list[Path]) -> Path:
    """Chooses among same-stem trimaps / alphas, preferring lossless PNG."""
    pngs = [path for path in paths if path.suffix.lower() == ".png"]
    return (pngs or paths)[0]


def list_pairs(
    root: str | os.PathLike,
    image_dir: str = COMPOSITION1K_LAYOUT[0],
    trimap_dir: str = COMPOSITION1K_LAYOUT[1],
    alpha_dir: str | None = COMPOSITION1K_LAYOUT[2],
) -> PairListing:
    """Matches images, trimaps and (optionally) alphas by file stem.

    Args:
        root: dataset folder.
        image_dir: sub-folder with the images (``.png``, ``.jpg``, ``.jpeg``).
        trimap_dir: sub-folder with the trimaps.
        alpha_dir: sub-folder with ground-truth alphas; None or a missing folder means none.

    Returns:
        A :class:`PairListing`; an empty image folder gives no pairs (no error).

    Raises:
        DatasetError: ``root``, its image folder or its trimap folder does not exist.
    """
    root = Path(root)
    images_path, trimaps_path = root / image_dir, root / trimap_dir
    for folder in (root, images_path, trimaps_path):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: folder not found")
    alphas_path = root / alpha_dir if alpha_dir is not None else None
    if alphas_path is not None and not alphas_path.is_dir():
        alphas_path = None

    images = _index_by_stem(images_path)
    trimaps = _index_by_stem(trimaps_path)
    alphas = _index_by_stem(alphas_path) if alphas_path is not None else {}
    listing = PairListing(image_dir=images_path, trimap_dir=trimaps_path, alpha_dir=alphas_path)
    for stem, files in images.items():
        if len(files) > 1:
            listing.ambiguous.extend(files)
            continue
        if stem not in trimaps:
            listing.missing_trimaps.append(files[0])
            continue
        alpha_path = _pick_one(alphas[stem]) if stem in alphas else None
        if alphas_path is not None and alpha_path is None:
            listing.missing_alphas.append(files[0])
        listing.pairs.append(MattingPair(stem, files[0], _pick_one(trimaps[stem]), alpha_path))
    listing.unused_trimaps = [
        _pick_one(files) for stem, files in trimaps.items() if stem not in images
    ]
    return listing


def _check_size(path: Path, array: np.ndarray, image_path: Path, image: np.ndarray) -> None:
    if array.shape[:2] != image.shape[:2]:
        height, width = array.shape[:2]
        raise ImageReadError(
            path,
            f"size {width}x{height} does not match the image {image_path.name} "
            f"({image.shape[1]}x{image.shape[0]})",
        )


def read_sample(pair: MattingPair) -> MattingSample:
    """Loads the files of one sample and checks that their sizes agree.

    Args:
        pair: the sample's files.

    Returns:
        The loaded :class:`MattingSample`.

    Raises:
        ImageReadError: a file is unreadable, or a trimap / alpha differs in size from the image.
    """
    image = read_image(pair.image_path)
    trimap = to_uint8(read_gray(pair.trimap_path))
    _check_size(pair.trimap_path, trimap, pair.image_path, image)
    alpha = None
    if pair.alpha_path is not None:
        alpha = to_uint8(read_gray(pair.alpha_path))
        _check_size(pair.alpha_path, alpha, pair.image_path, image)
    return MattingSample(pair.name, image, trimap, alpha)


class Composition1kDataset(Dataset):
    """Composition-1k-style test folder as a map-style dataset of :class:`MattingSample`.

    Args:
        root: dataset folder.
        image_dir: images sub-folder.
        trimap_dir: trimaps sub-folder.
        alpha_dir: alphas sub-folder, or None to ignore ground truth.

    Attributes:
        listing: the :class:`PairListing` (use ``listing.problems()`` to report mismatches).
        pairs: the matched samples, sorted by name.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_dir: str = COMPOSITION1K_LAYOUT[0],
        trimap_dir: str = COMPOSITION1K_LAYOUT[1],
        alpha_dir: str | None = COMPOSITION1K_LAYOUT[2],
    ) -> None:
        self.root = Path(root)
        self.listing = list_pairs(root, image_dir, trimap_dir, alpha_dir)
        self.pairs = self.listing.pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> MattingSample:
        return read_sample(self.pairs[index])
