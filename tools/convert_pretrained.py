#!/usr/bin/env python
"""Turn an ImageNet / self-supervised backbone checkpoint into a ``train.init_checkpoint`` file.

The original trainer started from these checkpoints (docs/original_release.md#pretrained-backbones):
DINO ViT-S/16 (``dino_deitsmall16_pretrain.pth``) for ViTS and ViTS_1024, MAE ViT-B/16
(``mae_pretrain_vit_base.pth``) for ViTB, GCA-Matting's ImageNet ResNet-34-D encoder
(``model_best_resnet34_En_nomixup.pth``) for res34 and Microsoft's Swin-T
(``swin_tiny_patch4_window7_224.pth``) for swin_t. The backbone family is recognised from the
key names (or forced with ``--kind``); its checkpoint filter converts the weights
(``diffmatte.modeling.backbone.PRETRAINED_FORMATS``), the result is checked against the backbone
of a config and written atomically with the ``model.backbone.`` prefix.

Exit codes: 0 written; 2 bad input (unreadable or unrecognised file, weights that do not fit the
config, output that cannot be written), reported in one ``error:`` line.

Example:
    python tools/convert_pretrained.py dino_deitsmall16_pretrain.pth pretrained/vits_init.pth
    python tools/train_net.py --config-file configs/ViTS.py \\
        train.init_checkpoint=pretrained/vits_init.pth
"""

from __future__ import annotations

import argparse
import logging
import sys

from diffmatte.config import ConfigError, LazyConfig, instantiate
from diffmatte.engine.checkpoint import CheckpointError, read_checkpoint
from diffmatte.engine.pretrained import (
    ConversionError,
    convert_pretrained,
    detect_format,
    unwrap_state_dict,
)
from diffmatte.inference.functional import resolve_config_file
from diffmatte.modeling.backbone import PRETRAINED_FORMATS
from diffmatte.utils.fileio import atomic_torch_save


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert a pretrained backbone checkpoint into a train.init_checkpoint file."
    )
    parser.add_argument("input", help="pretrained checkpoint (.pth)")
    parser.add_argument("output", help="converted file to write (.pth)")
    parser.add_argument(
        "--kind",
        choices=("auto", *PRETRAINED_FORMATS),
        default="auto",
        help="backbone family (auto: by keys)",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="config whose model.backbone the result must fit (default: the released config "
        "that started from such a file: ViTS / ViTB by width, res34, swin_t)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of re-drawn Swin weights")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        state_dict = unwrap_state_dict(read_checkpoint(args.input), args.input)
        if args.kind == "auto":
            fmt = detect_format(state_dict, args.input)
        else:
            fmt = PRETRAINED_FORMATS[args.kind]
        config = args.config or fmt.default_config(state_dict)
        if config is None:
            raise ConversionError(
                f"{args.input}: no released {fmt.name} config fits this file; pass --config"
            )
        cfg = LazyConfig.load(str(resolve_config_file(config)))
        backbone = instantiate(cfg.model.backbone)
        weights, left = convert_pretrained(state_dict, fmt, backbone, args.seed)
    except (ConversionError, CheckpointError, ConfigError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        atomic_torch_save(weights, args.output)
    except OSError as exc:
        print(f"error: {args.output}: cannot write ({exc.strerror or exc})", file=sys.stderr)
        return 2
    print(
        f"{args.input} ({fmt.name}) -> {args.output}: {len(weights)} backbone tensors for "
        f"{config}, {int(cfg.model.backbone.in_chans)} input channels; {left} backbone tensors "
        "start from scratch, the decoder is trained from scratch"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
