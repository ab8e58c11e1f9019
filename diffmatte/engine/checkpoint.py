"""Strict loading and saving of model weights, with a readable key report.

Released DiffMatte checkpoints (docs/original_release.md#checkpoints) are state dicts
of the original wrapper: every key starts with ``model.`` then ``backbone.`` or ``decoder.``,
sometimes inside a ``{"model": ...}`` dict and with ``module.`` prefixes from distributed
training. The original loads them non-strictly, so a file of another config silently keeps
random weights; here loading is strict by default and any mismatch fails with one message that
lists missing, unexpected and mis-shaped keys and, when it can tell, which config the file is for.

Files are always read with ``torch.load(weights_only=True)``: no code in a checkpoint runs.
"""

from __future__ import annotations

import io
import logging
import pickletools
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from diffmatte.utils.fileio import atomic_torch_save, file_sha256

__all__ = [
    "CheckpointError",
    "KeyReport",
    "compare_state_dicts",
    "describe_config",
    "diagnose_unreadable_checkpoint",
    "extract_state_dict",
    "load_checkpoint",
    "read_checkpoint",
    "save_model_weights",
    "CheckpointVerification",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

RELEASED_PREFIX = "model."
DDP_PREFIX = "module."
# How many keys of each kind the error message names.
SHOWN_KEYS = 5
# ViT families by (embedding width, rows of the global-attention relative-position tables).
_VIT_CONFIGS = {
    (384, 63): "ViTS",
    (384, 127): "ViTS_1024",
    (768, 63): "ViTB",
}


class CheckpointError(Exception):
    """A checkpoint file cannot be read or does not match the model; the message is one line."""


Shape = tuple[int, ...]


@dataclass
class KeyReport:
    """Differences between a checkpoint's keys and a model's keys (model naming).

    Attributes:
        missing: keys the model has and the file lacks.
        unexpected: keys the file has and the model lacks.
        mismatched: ``(key, file_shape, model_shape)`` for keys present in both.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when keys and shapes agree exactly."""
        return not (self.missing or self.unexpected or self.mismatched)


def _shapes(state_dict: Mapping[str, Tensor]) -> dict[str, Shape]:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def read_checkpoint(path: str | Path) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors.

    When torch cannot load the file, the file itself is examined (never executed) to say what
    is wrong with it: empty, truncated or damaged, a text or HTML page instead of the weights,
    or a pickle that refers to code, which is refused for safety.

    Raises:
        CheckpointError: missing, unreadable or not a (weights-only) PyTorch file; the message
            names the file and the problem in one line.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path}: is a folder, not a weights file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    try:
        with warnings.catch_warnings():
            # A plain pickle of protocol > 2 draws a warning before it is refused or loaded.
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        problem = f"not enough memory to load it ({path.stat().st_size:,} bytes)"
    except Exception:  # noqa: BLE001 - torch's own message is replaced by a diagnosis of the file
        try:
            problem = diagnose_unreadable_checkpoint(path)
        except OSError as exc:
            problem = f"cannot be read ({exc.strerror or type(exc).__name__})"
    raise CheckpointError(f"checkpoint {path}: {problem}") from None


# torch.save writes a zip archive (PyTorch >= 1.6) or, in the legacy format, a sequence of
# pickles (magic number, protocol, system info, the object, storage keys) then raw storages.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_PICKLE_PROTO = b"\x80"
_LEGACY_PICKLES = 5
_HEAD_BYTES = 4096
_DOWNLOAD_AGAIN = "download or copy it again and compare its size and SHA-256 with the source"
_STRING_OPCODES = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
}


def diagnose_unreadable_checkpoint(path: str | Path) -> str:
    """Why a file that ``torch.load(weights_only=True)`` refused is not a usable checkpoint.

    The file is only inspected: pickles are disassembled (:mod:`pickletools`), never loaded.

    Args:
        path: an existing file.

    Returns:
        One sentence without the path, e.g. "the file is empty (0 bytes): ...".
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes): the download or copy did not finish; fetch it again"
    with path.open("rb") as file:
        head = file.read(_HEAD_BYTES)
    if head.startswith(_ZIP_MAGIC):
        return _diagnose_zip(path, size)
    if head.startswith(_PICKLE_PROTO):
        return _diagnose_pickles(path, size)
    text = _as_text(head)
    if text is not None:
        return _describe_text(text)
    return (
        f"not a PyTorch checkpoint: unknown format ({size:,} bytes, starting with bytes "
        f"{head[:8].hex(' ')})"
    )


def _diagnose_zip(path: Path, size: int) -> str:
    truncated = (
        f"truncated or damaged ({size:,} bytes): the end of the archive that torch.save writes "
        f"is missing; {_DOWNLOAD_AGAIN}"
    )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError):
        return truncated
    with archive:
        names = archive.namelist()
        if any(name.endswith(("/constants.pkl", "/code/")) or "/code/" in name for name in names):
            return "a TorchScript model, not a checkpoint of weights (a state dict)"
        pickles = [name for name in names if name == "data.pkl" or name.endswith("/data.pkl")]
        if not pickles:
            return (
                "a zip archive, but not a PyTorch checkpoint (it has no data.pkl); if it is a "
                "download archive, unpack it and use the .pth file inside"
            )
        try:
            damaged = archive.testzip()
            if damaged is not None:
                return f"damaged: its part {damaged} fails its checksum; {_DOWNLOAD_AGAIN}"
            refused = _refused_globals([archive.read(pickles[0])])
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return truncated
    if refused:
        return _refused_message(refused)
    return f"damaged: its tensors cannot be rebuilt from the archive; {_DOWNLOAD_AGAIN}"


def _diagnose_pickles(path: Path, size: int) -> str:
    """A legacy torch.save file or a plain pickle: disassemble up to five pickles."""
    data = path.read_bytes()
    pickles, offset = [], 0
    for _ in range(_LEGACY_PICKLES):
        if not data.startswith(_PICKLE_PROTO, offset):
            break
        stream = io.BytesIO(data)
        stream.seek(offset)
        try:
            for _op in pickletools.genops(stream):
                pass
        except ValueError:
            refused = _refused_globals(pickles + [data[offset:]], complete=False)
            if refused:
                return _refused_message(refused)
            return (
                f"truncated ({size:,} bytes): its data ends in the middle of a record; "
                f"{_DOWNLOAD_AGAIN}"
            )
        pickles.append(data[offset : stream.tell()])
        offset = stream.tell()
    refused = _refused_globals(pickles)
    if refused:
        return _refused_message(refused)
    return (
        f"truncated or damaged ({size:,} bytes): its tensor data is incomplete; {_DOWNLOAD_AGAIN}"
    )


def _refused_globals(pickles: list[bytes], complete: bool = True) -> list[str]:
    """The names a pickle would import (``module.name``) that ``weights_only`` refuses."""
    found: list[str] = []
    for data in pickles:
        strings: list[object] = []
        memo: dict[int, object] = {}
        try:
            for opcode, arg, _pos in pickletools.genops(io.BytesIO(data)):
                if opcode.name in _STRING_OPCODES:
                    strings.append(arg)
                elif opcode.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                    memo[int(arg)] = strings[-1] if strings else None
                elif opcode.name == "MEMOIZE":
                    memo[len(memo)] = strings[-1] if strings else None
                elif opcode.name in ("BINGET", "LONG_BINGET", "GET"):
                    strings.append(memo.get(int(arg)))
                elif opcode.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                else:
                    strings.append(None)
        except ValueError:
            if complete:
                raise
    allowed = _allowed_globals()
    refused = [name for name in dict.fromkeys(found) if not _is_allowed(name, allowed)]
    return refused


def _allowed_globals() -> set[str] | None:
    """The globals ``weights_only`` loading accepts, from torch when it says (else None)."""
    try:
        from torch import _weights_only_unpickler

        return set(_weights_only_unpickler._get_allowed_globals())
    except (ImportError, AttributeError):
        return None


def _is_allowed(name: str, allowed: set[str] | None) -> bool:
    if allowed is None:
        return name.startswith("torch.") or name == "collections.OrderedDict"
    return name in allowed


def _refused_message(refused: list[str]) -> str:
    shown = ", ".join(refused[:SHOWN_KEYS]) + (", ..." if len(refused) > SHOWN_KEYS else "")
    return (
        f"refused for safety: it refers to code ({shown}) that loading would import and may "
        "run, which a file of weights never needs; nothing in it was run. Use a file from the "
        "official links, or re-save plain tensors (a state dict) from a source you trust"
    )


def _as_text(head: bytes) -> str | None:
    """The file's first characters when it starts as UTF-8 text, else None."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:
            return None
        text = head[: exc.start].decode("utf-8")
    if any(not (char.isprintable() or char in "\t\r\n") for char in text):
        return None
    return text


def _describe_text(text: str) -> str:
    lowered = text.lstrip().lower()
    if lowered.startswith(("<!doctype html", "<html")) or "<html" in lowered[:512]:
        return (
            "an HTML page, not a checkpoint: the download saved a web page (for a large file "
            "Google Drive first serves a confirmation page); download the file itself"
        )
    if lowered.startswith("version https://git-lfs"):
        return "a Git LFS pointer, not the weights: fetch the file itself (git lfs pull)"
    first = " ".join(text.split())[:40]
    return f"a text file, not a PyTorch checkpoint (it begins {first!r})"


def extract_state_dict(obj: object, path: str | Path = "<memory>") -> dict[str, Tensor]:
    """The state dict inside a loaded checkpoint, with ``module.`` prefixes removed.

    Accepts a raw state dict or a dict with the state dict under "model" (detectron2) or
    "state_dict".

    Raises:
        CheckpointError: when no mapping of names to tensors is found.
    """
    if isinstance(obj, Mapping):
        for wrapper_key in ("model", "state_dict"):
            inner = obj.get(wrapper_key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    ):
        raise CheckpointError(
            f"checkpoint {path}: does not contain a state dict (a mapping of parameter names to "
            "tensors, optionally under 'model')"
        )
    state_dict = {}
    for key, value in obj.items():
        while key.startswith(DDP_PREFIX):
            key = key[len(DDP_PREFIX) :]
        state_dict[key] = value
    return state_dict


def _align_prefix(file_keys: list[str], model_keys: set[str]) -> dict[str, str]:
    """Rename file keys to model keys by adding or stripping the released "model." prefix,
    whichever makes more keys match (file key -> model key)."""
    candidates = [
        {k: k for k in file_keys},
        {k: (k[len(RELEASED_PREFIX) :] if k.startswith(RELEASED_PREFIX) else k) for k in file_keys},
        {k: RELEASED_PREFIX + k for k in file_keys},
    ]
    return max(candidates, key=lambda mapping: sum(v in model_keys for v in mapping.values()))


def compare_state_dicts(
    file_shapes: Mapping[str, Shape], model_shapes: Mapping[str, Shape]
) -> KeyReport:
    """Key and shape differences between two key -> shape maps with the same naming."""
    return KeyReport(
        missing=[k for k in model_shapes if k not in file_shapes],
        unexpected=[k for k in file_shapes if k not in model_shapes],
        mismatched=[
            (k, tuple(file_shapes[k]), tuple(s))
            for k, s in model_shapes.items()
            if k in file_shapes and tuple(file_shapes[k]) != tuple(s)
        ],
    )


def describe_config(shapes: Mapping[str, Shape]) -> str | None:
    """Which released config a state dict (model naming, with or without "model.") looks like.

    Returns:
        "ViTS", "ViTS_1024", "ViTB", "res34", "swin_t", a generic ViT description, or None.
    """
    stripped = {
        (k[len(RELEASED_PREFIX) :] if k.startswith(RELEASED_PREFIX) else k): v
        for k, v in shapes.items()
    }
    if "backbone.conv1.module.weight_bar" in stripped:
        return "res34"
    if any(k.startswith("backbone.layers.0.blocks.") for k in stripped):
        return "swin_t"
    pos_embed = stripped.get("backbone.pos_embed")
    if pos_embed is None:
        return None
    # The largest relative-position table belongs to a global-attention block.
    rows = max(
        (s[0] for k, s in stripped.items() if k.endswith("attn.rel_pos_h") and len(s) == 2),
        default=None,
    )
    name = _VIT_CONFIGS.get((pos_embed[-1], rows))
    if name is not None:
        return name
    return f"a ViT of width {pos_embed[-1]} with {rows}-row global relative-position tables"


def _keys(count: int, adjective: str = "") -> str:
    """'1 missing key', '3 missing keys'."""
    words = [str(count), adjective, "key" if count == 1 else "keys"]
    return " ".join(word for word in words if word)


def _format_report(path: str | Path, report: KeyReport, hint: str | None) -> str:
    parts = [f"checkpoint {path} does not match the model:"]
    if report.missing:
        shown = ", ".join(report.missing[:SHOWN_KEYS])
        more = ", ..." if len(report.missing) > SHOWN_KEYS else ""
        parts.append(f"{_keys(len(report.missing), 'missing')} ({shown}{more});")
    if report.unexpected:
        shown = ", ".join(report.unexpected[:SHOWN_KEYS])
        more = ", ..." if len(report.unexpected) > SHOWN_KEYS else ""
        parts.append(f"{_keys(len(report.unexpected), 'unexpected')} ({shown}{more});")
    if report.mismatched:
        shown = ", ".join(
            f"{k} file {list(fs)} vs model {list(ms)}"
            for k, fs, ms in report.mismatched[:SHOWN_KEYS]
        )
        more = ", ..." if len(report.mismatched) > SHOWN_KEYS else ""
        parts.append(f"{_keys(len(report.mismatched))} with different shapes ({shown}{more});")
    message = " ".join(parts).rstrip(";") + "."
    if hint:
        message += f" {hint}"
    return message


def _config_hint(file_shapes: Mapping[str, Shape], model_shapes: Mapping[str, Shape]) -> str | None:
    file_config, model_config = describe_config(file_shapes), describe_config(model_shapes)
    if file_config and model_config and file_config != model_config:
        return (
            f"The file looks like a checkpoint of {file_config}, but the model is built as "
            f"{model_config}: use the matching config."
        )
    return None


def load_checkpoint(
    model: nn.Module, path: str | Path, strict: bool = True, allow_missing: bool = False
) -> KeyReport:
    """Load weights into ``model`` from a checkpoint file.

    Accepts raw state dicts, ``{"model": state_dict}``, ``module.`` prefixes and keys with or
    without the released ``model.`` prefix (whichever matches the model).

    Args:
        model: the module to fill, e.g. a :class:`~diffmatte.modeling.diffmatte.DiffMatte`.
        path: checkpoint file (``.pth``).
        strict: fail unless keys and shapes match exactly. When False, every key present in
            both with the same shape is loaded, the rest is logged as a warning.
        allow_missing: with ``strict``, keys the file lacks keep the model's values (a
            backbone-only initialisation), but any unexpected or mis-shaped key still fails:
            the file must be a part of this model, not another model.

    Returns:
        The :class:`KeyReport` (empty when everything matched).

    Raises:
        CheckpointError: unreadable file, no state dict, or (strict) any key/shape mismatch;
            the message is one line.
    """
    state_dict = extract_state_dict(read_checkpoint(path), path)
    model_shapes = _shapes(model.state_dict())
    renamed = _align_prefix(list(state_dict), set(model_shapes))
    state_dict = {renamed[k]: v for k, v in state_dict.items()}
    file_shapes = _shapes(state_dict)
    report = compare_state_dicts(file_shapes, model_shapes)
    if report.ok:
        model.load_state_dict(state_dict, strict=True)
        return report
    if strict and allow_missing and not (report.unexpected or report.mismatched):
        model.load_state_dict(state_dict, strict=False)
        return report
    message = _format_report(path, report, _config_hint(file_shapes, model_shapes))
    if strict:
        if allow_missing:
            message += " (a file may lack keys of the model, but every key it has must be one)"
        raise CheckpointError(message)
    logger.warning(
        "%s Loading the %d matching keys only.", message, _count_matching(report, file_shapes)
    )
    bad = {k for k, _, _ in report.mismatched} | set(report.unexpected)
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in bad}, strict=False)
    return report


def _count_matching(report: KeyReport, file_shapes: Mapping[str, Shape]) -> int:
    return len(file_shapes) - len(report.unexpected) - len(report.mismatched)


def save_model_weights(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state dict in the released format (every key prefixed "model.",
    tensors on CPU), atomically (:func:`~diffmatte.utils.fileio.atomic_torch_save`).

    Args:
        model: the module to save, e.g. a :class:`~diffmatte.modeling.diffmatte.DiffMatte`.
        path: destination ``.pth`` file; parent folders are created.

    Returns:
        The written path.
    """
    state_dict = {RELEASED_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save(state_dict, path)


@dataclass
class CheckpointVerification:
    """What a checkpoint file holds, compared with a model built from a config.

    Attributes:
        path: the file.
        size_bytes: its size.
        sha256: its SHA-256 (hex), for comparison with the source's.
        tensors: number of tensors in its state dict.
        parameter_values: values of the file's tensors that are parameters of the model.
        buffer_values: values of the other tensors the model also has (BatchNorm statistics,
            index tables).
        model_parameter_values: the model's parameter count (``sum(p.numel())``).
        report: key and shape differences (model naming).
        looks_like: the released config the file's keys look like, or None.
        mismatch: the one-line mismatch message, empty when keys and shapes agree.
    """

    path: Path
    size_bytes: int
    sha256: str
    tensors: int
    parameter_values: int
    buffer_values: int
    model_parameter_values: int
    report: KeyReport
    looks_like: str | None
    mismatch: str

    @property
    def ok(self) -> bool:
        """True when keys, shapes and the parameter count agree."""
        return self.report.ok and self.parameter_values == self.model_parameter_values


def verify_checkpoint(model: nn.Module, path: str | Path) -> CheckpointVerification:
    """Compares a checkpoint file with ``model`` without loading it into the model or running
    anything: keys, shapes and parameter count, plus the file's size and SHA-256.

    Args:
        model: the module the file is meant for, e.g. a DiffMatte built from its config.
        path: checkpoint file, in any format :func:`load_checkpoint` accepts.

    Returns:
        The :class:`CheckpointVerification`; ``ok`` tells whether the file fits.

    Raises:
        CheckpointError: the file cannot be read or holds no state dict.
    """
    path = Path(path)
    state_dict = extract_state_dict(read_checkpoint(path), path)
    model_shapes = _shapes(model.state_dict())
    renamed = _align_prefix(list(state_dict), set(model_shapes))
    file_shapes = {renamed[k]: tuple(v.shape) for k, v in state_dict.items()}
    report = compare_state_dicts(file_shapes, model_shapes)
    parameter_names = {name for name, _ in model.named_parameters()}
    counts = {name: state_dict[key].numel() for key, name in renamed.items()}
    mismatch = ""
    if not report.ok:
        mismatch = _format_report(path, report, _config_hint(file_shapes, model_shapes))
    return CheckpointVerification(
        path=path,
        size_bytes=path.stat().st_size,
        sha256=file_sha256(path),
        tensors=len(state_dict),
        parameter_values=sum(n for name, n in counts.items() if name in parameter_names),
        buffer_values=sum(
            n for name, n in counts.items() if name in model_shapes and name not in parameter_names
        ),
        model_parameter_values=sum(p.numel() for p in model.parameters()),
        report=report,
        looks_like=describe_config(file_shapes),
        mismatch=mismatch,
    )
