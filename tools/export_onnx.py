#!/usr/bin/env python
"""Export a DiffMatte checkpoint to ONNX for inference without PyTorch (docs/deploy.md).

    python tools/export_onnx.py --config-file configs/ViTS.py --checkpoint ViTS.pth \\
        --output-dir exported/ViTS

Writes four graphs (dynamic batch, height, width) and ``manifest.json``, then runs them in
onnxruntime and compares the alpha with PyTorch's (``--no-check`` skips this). Needs the ``onnx``
extra: ``pip install -e ".[onnx]"``.

Exit status: 0 on success, 1 when the exported graphs disagree with PyTorch, 2 on bad input or a
failed export (reported on one line).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from diffmatte.config import ConfigError
from diffmatte.deploy.runtime import parse_size
from diffmatte.engine.checkpoint import CheckpointError
from diffmatte.engine.cli import add_config_argument, add_overrides_argument
from diffmatte.inference.functional import build_model, load_model, resolve_config_file

EXIT_OK, EXIT_MISMATCH, EXIT_FAILED = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a DiffMatte model to ONNX graphs with a manifest.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_argument(parser, default="configs/ViTS.py")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument(
        "--checkpoint-dir",
        "--checkpoint",
        dest="checkpoint",
        metavar="FILE",
        help="weights file (.pth) in the released format",
    )
    weights.add_argument(
        "--random-weights",
        action="store_true",
        help="export the config's freshly initialised model (tests, benchmarks); spectral-norm "
        "vectors are settled by power iteration so that res34 stays finite",
    )
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="export folder")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18)")
    parser.add_argument(
        "--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch check"
    )
    parser.add_argument(
        "--check-sizes",
        nargs="+",
        type=parse_size,
        default=None,
        metavar="HxW",
        help="image sizes of the check (default: 64x96 and 77x45, the padding quirk on both sides)",
    )
    parser.add_argument(
        "--check-strategies",
        nargs="+",
        default=["ddim2"],
        metavar="STRATEGY",
        help="sampling strategies of the check",
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest allowed |alpha difference|"
    )
    add_overrides_argument(parser)
    return parser


def _report(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    try:
        from diffmatte.deploy.export import (
            CHECK_SIZES,
            DEFAULT_OPSET,
            ExportCheckError,
            check_export,
            export_model,
            settle_spectral_norm,
        )
    except ImportError as err:
        _report(f'{err.name or err}: not installed; pip install -e ".[onnx]"')
        return EXIT_FAILED
    config = resolve_config_file(args.config_file)
    torch.manual_seed(0)  # reproducible --random-weights
    try:
        if args.random_weights:
            model = settle_spectral_norm(build_model(config, args.opts))
        else:
            if not Path(args.checkpoint).is_file():
                _report(f"{args.checkpoint}: checkpoint file not found")
                return EXIT_FAILED
            model = load_model(config, args.checkpoint, args.opts)
    except (ConfigError, CheckpointError) as err:
        _report(" ".join(str(err).split()))
        return EXIT_FAILED
    try:
        export_model(model, args.output_dir, Path(config).stem, args.opset or DEFAULT_OPSET)
    except OSError as err:
        _report(f"{err.filename or args.output_dir}: cannot write ({err.strerror or err})")
        return EXIT_FAILED
    except Exception as err:  # the exporter raises many types; report one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        _report(f"ONNX export failed: {first}")
        return EXIT_FAILED
    print(f"wrote {args.output_dir}", file=sys.stderr)
    if args.no_check:
        return EXIT_OK
    try:
        worst = check_export(
            model,
            args.output_dir,
            sizes=args.check_sizes or CHECK_SIZES,
            strategies=args.check_strategies,
            tolerance=args.tolerance,
        )
    except ValueError as err:  # a malformed strategy
        _report(str(err))
        return EXIT_FAILED
    except ExportCheckError as err:
        _report(str(err))
        return EXIT_MISMATCH
    sizes = " ".join(f"{h}x{w}" for h, w in args.check_sizes or CHECK_SIZES)
    print(
        f"check: onnxruntime alpha within {worst:.2g} of PyTorch at {sizes}, "
        f"{' '.join(args.check_strategies)}",
        file=sys.stderr,
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
