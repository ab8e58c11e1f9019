"""Finding training material: foreground/alpha folders, background folders, bundled assets.

Layouts follow the Adobe Deep Image Matting training set (Xu et al., "Deep Image Matting",
CVPR 2017): ``<root>/fg/<name>`` with ``<root>/alpha/<name>`` (the DIM training split has two
such roots, ``Adobe-licensed images`` and ``Other``), and the flat layout of alphamatting.com-style
sets, ``<root>/image/<name>`` with ``<root>/alpha/<name>``, where only the composite exists and the
foreground colour has to be estimated. Files are matched by stem, as in
:mod:`diffmatte.data.composition1k`.

The bundled assets (``diffmatte/assets``, see its ``SOURCES.md``) are public-domain / CC0 images
shipped with the package, so that a fresh checkout can compose data without downloads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from diffmatte.data.composition1k import IMAGE_EXTENSIONS, DatasetError

__all__ = [
    "ForegroundFiles",
    "bundled_backgrounds",
    "bundled_lemur_dir",
    "find_foregrounds",
    "list_images",
]

_ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"


@dataclass(frozen=True)
class ForegroundFiles:
    """The files of one training foreground.

    Exactly one of ``fg_path`` (true foreground colours) and ``image_path`` (a photograph whose
    foreground colours must be estimated) is set.

    Attributes:
        name: the common file stem.
        alpha_path: the alpha matte.
        fg_path: the foreground colour image, or None.
        image_path: the composite photograph, or None.
    """

    name: str
    alpha_path: Path
    fg_path: Path | None = None
    image_path: Path | None = None


def bundled_backgrounds() -> list[Path]:
    """The bundled background photographs, sorted by name (six files, see ``SOURCES.md``)."""
    return list_images(_ASSETS_DIR / "backgrounds")


def bundled_lemur_dir() -> Path:
    """The bundled CC0 lemur photograph as a flat set: ``image/lemur.png``, ``trimap/lemur.png``."""
    return _ASSETS_DIR / "lemur"


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in IMAGE_EXTENSIONS
    )


def list_images(
    sources: str | os.PathLike | Sequence[str | os.PathLike],
) -> list[Path]:
    """Expands folders and files into a sorted list of image files.

    Args:
        sources: a folder, an image file, or a sequence of them. Folders contribute their image
            files (``.png``, ``.jpg``, ``.jpeg``; not recursive), sorted by name.

    Returns:
        The image files, folders expanded in the order given.

    Raises:
        DatasetError: a source does not exist, or no image file was found at all.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files.extend(_image_files(path))
        elif path.is_file():
            files.append(path)
        else:
            raise DatasetError(f"{path}: no such file or folder")
    if not files:
        names = ", ".join(str(Path(source)) for source in sources)
        raise DatasetError(f"{names}: no image files (.png, .jpg, .jpeg) found")
    return files


def _by_stem(folder: Path) -> dict[str, Path]:
    mapping: dict[str, Path] = {}
    for path in _image_files(folder):
        if path.stem in mapping:
            raise DatasetError(f"{path}: another file in {folder} has the same name ({path.stem})")
        mapping[path.stem] = path
    return mapping


def _foregrounds_in(root: Path) -> list[ForegroundFiles]:
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found")
    alpha_dir = root / "alpha"
    colour_name = "fg" if (root / "fg").is_dir() else "image"
    colour_dir = root / colour_name
    if not alpha_dir.is_dir() or not colour_dir.is_dir():
        raise DatasetError(
            f"{root}: expected an 'alpha/' folder next to 'fg/' (foreground colours) or "
            "'image/' (photographs)"
        )
    alphas, colours = _by_stem(alpha_dir), _by_stem(colour_dir)
    unmatched = sorted(set(alphas) ^ set(colours))
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (
            f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        )
        raise DatasetError(
            f"{root}: {len(unmatched)} file(s) in only one of alpha/ and {colour_name}/: {shown}"
        )
    if not alphas:
        raise DatasetError(f"{alpha_dir}: no image files (.png, .jpg, .jpeg) found")
    key = "fg_path" if colour_name == "fg" else "image_path"
    return [
        ForegroundFiles(name=stem, alpha_path=alphas[stem], **{key: colours[stem]})
        for stem in sorted(alphas)
    ]


def find_foregrounds(
    roots: str | os.PathLike | Sequence[str | os.PathLike],
) -> list[ForegroundFiles]:
    """Lists the foregrounds of one or more DIM-style folders.

    Each root holds ``alpha/`` and either ``fg/`` (foreground colours, as in Adobe DIM) or
    ``image/`` (photographs, as in alphamatting.com's training set). Files pair up by stem.

    Args:
        roots: a folder or a sequence of folders (e.g. DIM's ``Adobe-licensed images`` and
            ``Other``), concatenated in the order given.

    Returns:
        One :class:`ForegroundFiles` per matched stem, sorted by name within each root.

    Raises:
        DatasetError: a root is missing, lacks the folders, or has unmatched or duplicate names.
    """
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    found: list[ForegroundFiles] = []
    for root in roots:
        found.extend(_foregrounds_in(Path(root)))
    return found
