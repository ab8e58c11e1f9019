"""Converting a pre-training checkpoint into a ``train.init_checkpoint`` file.

The original trainer started each model from a public pre-training checkpoint
(docs/original_release.md#pretrained-backbones). :func:`convert_pretrained` unwraps such a
file, applies its backbone family's checkpoint filter
(:data:`diffmatte.modeling.backbone.PRETRAINED_FORMATS`) and checks the result against the
target backbone: no unexpected or mis-shaped key, and only the parameters that pre-training
does not have may be missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from diffmatte.engine.checkpoint import compare_state_dicts
from diffmatte.modeling.backbone import PRETRAINED_FORMATS, PretrainedFormat, find_format

__all__ = [
    "BACKBONE_PREFIX",
    "ConversionError",
    "check_converted",
    "convert_pretrained",
    "detect_format",
    "unwrap_state_dict",
]

# Converted files hold backbone weights under the model's attribute path.
BACKBONE_PREFIX = "model.backbone."


class ConversionError(Exception):
    """The input cannot be converted or does not fit the backbone; the message is one line."""


def unwrap_state_dict(obj: object, path: str | Path) -> dict[str, Tensor]:
    """The tensor mapping of a checkpoint: top level, or under "model" / "state_dict".

    Non-tensor entries are dropped and ``module.`` (DataParallel) prefixes removed.
    """
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path}: no state dict found")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, Tensor)}
    if not tensors:
        raise ConversionError(f"{path}: no tensors found")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in tensors.items()}


def detect_format(state_dict: Mapping[str, Tensor], path: str | Path) -> PretrainedFormat:
    """The backbone family of a pre-training checkpoint, from its key names."""
    fmt = find_format(state_dict)
    if fmt is None:
        described = "; ".join(
            f"{name} ({', '.join(f.marker_keys)})" for name, f in PRETRAINED_FORMATS.items()
        )
        raise ConversionError(
            f"{path}: not a checkpoint of a known backbone family [{described}]; "
            "pass --kind to force one"
        )
    return fmt


def check_converted(
    converted: Mapping[str, Tensor], backbone: nn.Module, fmt: PretrainedFormat
) -> int:
    """Verify that ``converted`` loads into ``backbone``.

    Every converted key must exist in the backbone with the same shape; missing keys are
    allowed only for the parameters the family's pre-training files do not have.

    Returns:
        The number of backbone tensors left at their initialisation.

    Raises:
        ConversionError: with the offending keys.
    """
    report = compare_state_dicts(
        {k: tuple(v.shape) for k, v in converted.items()},
        {k: tuple(v.shape) for k, v in backbone.state_dict().items()},
    )
    allowed = [k for k in report.missing if fmt.starts_from_scratch(k)]
    missing = [k for k in report.missing if k not in allowed]
    problems = []
    if report.unexpected:
        problems.append(f"{len(report.unexpected)} unexpected (e.g. {report.unexpected[:3]})")
    if report.mismatched:
        shown = [f"{k} {a} vs {b}" for k, a, b in report.mismatched[:3]]
        problems.append(f"{len(report.mismatched)} mis-shaped ({'; '.join(shown)})")
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if problems:
        raise ConversionError(
            f"converted {fmt.name} weights do not fit the backbone: " + ", ".join(problems)
        )
    return len(allowed)


def convert_pretrained(
    state_dict: Mapping[str, Tensor], fmt: PretrainedFormat, backbone: nn.Module, seed: int = 0
) -> tuple[dict[str, Tensor], int]:
    """Apply the family's checkpoint filter for ``backbone`` and check the result.

    Args:
        state_dict: the unwrapped pre-training tensors (:func:`unwrap_state_dict`).
        fmt: the checkpoint's family (:func:`detect_format` or a forced one).
        backbone: the target backbone, e.g. ``instantiate(cfg.model.backbone)``.
        seed: seed of the weights a filter draws anew (Swin's widened tables).

    Returns:
        ``(weights, left)``: the contiguous tensors under :data:`BACKBONE_PREFIX`, ready for
        ``torch.save``, and the number of backbone tensors that start from their initialisation.

    Raises:
        ConversionError: the backbone is of another family, the filter rejects the input, or
            its result does not fit the backbone.
    """
    if not isinstance(backbone, fmt.backbone):
        raise ConversionError(
            f"a {fmt.name} checkpoint needs a {fmt.backbone.__name__} backbone, the config has "
            f"{type(backbone).__name__}"
        )
    try:
        converted = fmt.checkpoint_filter(state_dict, backbone, torch.Generator().manual_seed(seed))
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ConversionError(f"the {fmt.name} checkpoint filter failed: {exc}") from None
    left = check_converted(converted, backbone, fmt)
    return {BACKBONE_PREFIX + k: v.contiguous() for k, v in converted.items()}, left
