#!/usr/bin/env python
"""Checks a downloaded checkpoint against a config without running the model.

Builds the config's model (random weights, nothing is run), reads the file with
``torch.load(weights_only=True)`` and compares keys, shapes and the parameter count; prints the
file's size and SHA-256 so that it can be compared with the source's.

Examples:
    python tools/verify_checkpoint.py --config-file configs/ViTS.py --checkpoint ViTS.pth
    python tools/verify_checkpoint.py --config-file ViTB --checkpoint ViTB.pth --sha256 <hex>

Exit status: 0 the file fits the config (and matches ``--sha256`` if given); 2 it does not, it
cannot be read, or the arguments or config are unusable. Errors are one ``error:`` line.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from diffmatte.config import ConfigError, LazyConfig, instantiate
from diffmatte.engine.checkpoint import CheckpointError, verify_checkpoint
from diffmatte.engine.cli import (
    add_checkpoint_argument,
    add_config_argument,
    add_overrides_argument,
)
from diffmatte.inference.functional import resolve_config_file

EXIT_OK = 0
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    add_config_argument(parser, default="configs/ViTS.py")
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--sha256", metavar="HEX", help="expected SHA-256 of the file (64 hex digits)"
    )
    add_overrides_argument(parser)
    return parser


def _error(message: str) -> int:
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return EXIT_ERROR


def run(args: argparse.Namespace) -> int:
    """Verifies the checkpoint of parsed arguments; returns the exit status."""
    expected = args.sha256.strip().lower() if args.sha256 else None
    if expected is not None and not re.fullmatch(r"[0-9a-f]{64}", expected):
        return _error(f"--sha256 {args.sha256!r}: expected 64 hexadecimal digits")
    config_file = resolve_config_file(args.config_file)
    try:
        cfg = LazyConfig.load(str(config_file))
        if args.opts:
            cfg = LazyConfig.apply_overrides(cfg, list(args.opts))
    except ConfigError as err:
        return _error(str(err))
    try:
        model = instantiate(cfg.model)
    except (ConfigError, TypeError, ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return _error(f"{config_file}: cannot build the model ({reason})")
    try:
        result = verify_checkpoint(model, args.checkpoint)
    except CheckpointError as err:
        return _error(str(err))
    print(f"file        {result.path} ({result.size_bytes:,} bytes)")
    print(f"sha256      {result.sha256}")
    print(f"tensors     {result.tensors}")
    print(
        f"parameters  {result.parameter_values:,} in the file, "
        f"{result.model_parameter_values:,} in the model "
        f"(+ {result.buffer_values:,} buffer values)"
    )
    print(f"looks like  {result.looks_like or 'no released config'}")
    if not result.report.ok:
        return _error(result.mismatch)
    if not result.ok:
        return _error(
            f"checkpoint {result.path}: {result.parameter_values:,} parameter values, the model "
            f"has {result.model_parameter_values:,}"
        )
    if expected is not None and expected != result.sha256:
        return _error(
            f"checkpoint {result.path}: SHA-256 {result.sha256} differs from the expected "
            f"{expected}: the file is not the one expected; download it again"
        )
    verdict = "and the expected SHA-256 " if expected is not None else ""
    print(f"ok          keys, shapes and parameter count {verdict}match {config_file}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; ``argv`` defaults to the process arguments."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
