"""Atomic file writing: a reader never sees a partly written file.

Every file the library and its tools produce (alpha PNGs, arrays, model and training
checkpoints, saved configs, result tables) is written the same way: into a new temporary file
in the destination folder, which is then renamed over the destination with ``os.replace``
(atomic on POSIX and Windows because both names are on the same file system). The temporary
file is created with mode ``0o666`` so that the operating system applies the process umask, as
for a file opened with ``open(path, "w")`` (``tempfile.mkstemp`` would make it private, 0600),
and the umask is never changed, so writing from several threads is safe. If writing fails the
temporary file is removed and a file already at the destination is left as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_torch_save",
    "check_writable_file",
    "check_writable_folder",
    "file_sha256",
    "remove_temporaries",
]

# Attempts at a fresh temporary name; 32 random bits make a second one practically never needed.
_NAME_ATTEMPTS = 100


_TEMPORARY_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _create_temporary(path: Path) -> tuple[int, Path]:
    """Creates a new empty file ``.<name>.<random>.tmp`` beside ``path``; returns (fd, its path)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_NAME_ATTEMPTS):
        temporary = _temporary_name(path)
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary file name for {path.name}")


def atomic_write(path: str | os.PathLike, write_fn: Callable[[IO[bytes]], Any]) -> Path:
    """Writes a file through ``write_fn`` and puts it at ``path`` in one rename.

    Parent folders are created. The file's permission bits follow the current umask.

    Args:
        path: destination file.
        write_fn: called once with a binary file object open for writing; its return value
            is ignored.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: the folder cannot be created or written. Whatever ``write_fn`` raises is
            raised unchanged. In both cases nothing is left at ``path`` that was not there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            write_fn(handle)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` as UTF-8 to ``path`` atomically, newlines exactly as given.

    Args:
        path: destination file; parent folders are created.
        text: the whole content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    data = text.encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically.

    Args:
        obj: anything ``torch.save`` accepts, e.g. a state dict.
        path: destination file; parent folders are created.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    # Imported here so that image and table writers do not load torch (evaluation.py and its
    # worker processes run without it).
    import torch

    return atomic_write(path, lambda handle: torch.save(obj, handle))


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(
    folder: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """Checks that files can be written in ``folder`` (existing or to be created); creates nothing.

    Run before the expensive work, so that a run that could not save its results fails at once
    and leaves no folder behind.

    Args:
        folder: the output folder.
        inputs: input folders that must not receive outputs.

    Returns:
        ``folder`` as a Path.

    Raises:
        ValueError: ``folder`` is an input folder, is or lies under a file, or the nearest existing
            folder on its path is not writable.
    """
    folder = Path(folder)
    if folder.resolve() in {Path(path).resolve() for path in inputs}:
        raise ValueError(f"{folder}: is an input folder; choose another output folder")
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        where = (
            "is a file" if existing == Path(os.path.abspath(folder)) else f"{existing} is a file"
        )
        raise ValueError(f"{folder}: cannot be used as an output folder ({where})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{folder}: not writable (permission denied on {existing})")
    return folder


def check_writable_file(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Checks that ``path`` can be written (its folder may still have to be created).

    Args:
        path: the output file.
        inputs: input files that must not be overwritten.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: ``path`` is an input file or a folder, or its folder cannot be written.
    """
    path = Path(path)
    if path.resolve() in {Path(name).resolve() for name in inputs}:
        raise ValueError(f"{path}: is an input file; choose another output path")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a file")
    try:
        check_writable_folder(path.parent)
    except ValueError as err:
        raise ValueError(f"{path}: cannot be written ({str(err).split(': ', 1)[1]})") from None
    return path


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Removes the temporary files that interrupted atomic writes left in ``folder``.

    A process killed while writing leaves its ``.<name>.<random>.tmp`` file behind (the
    destination itself is intact). Call this when no other process writes into ``folder``,
    e.g. when a training run starts or resumes in its output folder.

    Args:
        folder: the folder (not searched recursively); a missing folder has none.

    Returns:
        The removed files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if _TEMPORARY_NAME.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def file_sha256(path: str | Path, chunk_bytes: int = 2**20) -> str:
    """The SHA-256 of a file as 64 lowercase hex digits (read in chunks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
