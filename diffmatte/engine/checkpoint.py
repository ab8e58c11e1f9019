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

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from diffmatte.utils.fileio import atomic_torch_save

__all__ = [
    "CheckpointError",
    "KeyReport",
    "compare_state_dicts",
    "describe_config",
    "extract_state_dict",
    "load_checkpoint",
    "read_checkpoint",
    "save_model_weights",
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

    Raises:
        CheckpointError: missing, unreadable or not a (weights-only) PyTorch file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path}: cannot be read as a PyTorch weights file ({reason[:200]})"
        ) from None


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
