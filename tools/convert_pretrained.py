#!/usr/bin/env python
"""Turn an ImageNet / self-supervised backbone checkpoint into a ``train.init_checkpoint`` file.

The original trainer started from these checkpoints (TRAINING_RECIPE.md §6, README of the
DiffMatte release at 93bfc70): DINO ViT-S/16 (``dino_deitsmall16_pretrain.pth``) for ViTS and
ViTS_1024, MAE ViT-B/16 (``mae_pretrain_vit_base.pth``) for ViTB, GCA-Matting's ImageNet
ResNet-34-D encoder (``model_best_resnet34_En_nomixup.pth``) for res34 and Microsoft's Swin-T
(``swin_tiny_patch4_window7_224.pth``) for swin_t. The backbone modules' checkpoint filters do
the conversion (ViT: 4th zero input channel, class token / final norm / head dropped, 224-grid
``pos_embed`` kept; ResNet: first conv and its spectral-norm ``v`` widened by 3 zero trimap
channels; Swin: patch embedding re-drawn for 6 channels with the RGB slice copied, every
relative-position-bias table extended for the 3·(block+1) prior tokens with a matching index).
This script reads the file, applies the filter, checks the result against the backbone of a
config (no unexpected or mis-shaped key; only keys new in the matting backbone may be missing)
and writes ``model.backbone.``-prefixed weights atomically.

Example:
    python tools/convert_pretrained.py dino_deitsmall16_pretrain.pth pretrained/vits_init.pth
    python tools/train_net.py --config-file configs/ViTS.py \\
        train.init_checkpoint=pretrained/vits_init.pth
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from diffmatte.config import ConfigError, LazyConfig, instantiate
from diffmatte.engine.checkpoint import CheckpointError, compare_state_dicts, read_checkpoint
from diffmatte.inference.functional import resolve_config_file
from diffmatte.modeling.backbone import resnet, swin, vit
from diffmatte.utils.fileio import atomic_torch_save

logger = logging.getLogger("diffmatte.convert_pretrained")

KINDS = ("vit", "resnet", "swin")
# Config whose backbone a converted file is checked against, by kind and ViT width.
DEFAULT_CONFIGS = {"vit384": "ViTS", "vit768": "ViTB", "resnet": "res34", "swin": "swin_t"}
PREFIX = "model.backbone."
# Matting-ViT parameters that plain ViT pre-training does not have (trained from scratch).
_NEW_VIT_PARTS = (".attn.rel_pos_h", ".attn.rel_pos_w", ".residual.")


class ConversionError(Exception):
    """The input cannot be converted or does not fit the backbone; the message is one line."""


def unwrap_state_dict(obj: object, path: str | Path) -> dict[str, Tensor]:
    """The tensor mapping of a checkpoint: top level, or under "model" / "state_dict"."""
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


def detect_kind(state_dict: Mapping[str, Tensor], path: str | Path) -> str:
    """ "vit", "resnet" or "swin" from the key names of a pre-training checkpoint."""
    if "conv1.module.weight_bar" in state_dict:
        return "resnet"
    if any(k.startswith("layers.0.blocks.0.attn.relative_position_bias_table") for k in state_dict):
        return "swin"
    if "pos_embed" in state_dict and "blocks.0.attn.qkv.weight" in state_dict:
        return "vit"
    raise ConversionError(
        f"{path}: not a ViT (pos_embed, blocks.*), GCA ResNet (conv1.module.weight_bar) or Swin "
        "(layers.*.blocks.*) checkpoint; pass --kind to force one"
    )


def default_config(kind: str, state_dict: Mapping[str, Tensor]) -> str:
    """Name of the released config whose backbone fits a checkpoint of this kind."""
    if kind == "vit":
        return DEFAULT_CONFIGS[f"vit{state_dict['pos_embed'].shape[-1]}"]
    return DEFAULT_CONFIGS[kind]


def convert(
    state_dict: Mapping[str, Tensor],
    kind: str,
    backbone: nn.Module,
    in_chans: int,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Apply the backbone family's checkpoint filter.

    Returns:
        Backbone-level state dict (no prefix).
    """
    if kind == "vit":
        return vit.vit_checkpoint_filter(state_dict, in_chans=in_chans)
    if kind == "resnet":
        return resnet.checkpoint_filter_fn(state_dict, in_chans=in_chans, model=backbone)
    if kind == "swin":
        generator = torch.Generator().manual_seed(seed)
        return swin.checkpoint_filter_fn(state_dict, in_chans=in_chans, generator=generator)
    raise ConversionError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")


def check_against(converted: Mapping[str, Tensor], backbone: nn.Module, kind: str) -> int:
    """Verify that ``converted`` loads into ``backbone``.

    Every converted key must exist in the backbone with the same shape; missing keys are
    allowed only for the parts a plain ViT does not have (relative positions, residual blocks).

    Returns:
        The number of backbone keys left at their initialisation.

    Raises:
        ConversionError: with the offending keys.
    """
    report = compare_state_dicts(
        {k: tuple(v.shape) for k, v in converted.items()},
        {k: tuple(v.shape) for k, v in backbone.state_dict().items()},
    )
    allowed = [k for k in report.missing if kind == "vit" and any(p in k for p in _NEW_VIT_PARTS)]
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
        raise ConversionError("converted weights do not fit the backbone: " + ", ".join(problems))
    return len(allowed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert a pretrained backbone checkpoint into a train.init_checkpoint file."
    )
    parser.add_argument("input", help="pretrained checkpoint (.pth)")
    parser.add_argument("output", help="converted file to write (.pth)")
    parser.add_argument(
        "--kind", choices=("auto",) + KINDS, default="auto", help="backbone family (auto: by keys)"
    )
    parser.add_argument(
        "--config",
        default=None,
        help="config whose model.backbone the result must fit (default: ViTS / ViTB by width, "
        "res34, swin_t)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of re-drawn Swin weights")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        state_dict = unwrap_state_dict(read_checkpoint(args.input), args.input)
        kind = detect_kind(state_dict, args.input) if args.kind == "auto" else args.kind
        config = args.config or default_config(kind, state_dict)
        cfg = LazyConfig.load(str(resolve_config_file(config)))
        backbone = instantiate(cfg.model.backbone)
        in_chans = int(cfg.model.backbone.in_chans)
        converted = convert(state_dict, kind, backbone, in_chans, args.seed)
        left = check_against(converted, backbone, kind)
    except (ConversionError, CheckpointError, ConfigError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_torch_save({PREFIX + k: v.contiguous() for k, v in converted.items()}, args.output)
    print(
        f"{args.input} ({kind}) -> {args.output}: {len(converted)} backbone tensors for "
        f"{config}, {in_chans} input channels; {left} backbone tensors start from scratch, "
        "the decoder is trained from scratch"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
