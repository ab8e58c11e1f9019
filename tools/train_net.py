#!/usr/bin/env python
"""Train (or evaluate) a DiffMatte model from a LazyConfig file.

Wiring only: the run itself is :mod:`diffmatte.engine.training`, process launching
:mod:`diffmatte.engine.launch` (see ``docs/training.md``).

Examples:
    python tools/train_net.py --config-file configs/ViTS.py train.init_checkpoint=vits_init.pth
    torchrun --nproc_per_node 2 tools/train_net.py --config-file configs/ViTS.py
    python tools/train_net.py --config-file configs/ViTS.py --num-gpus 2
    python tools/train_net.py --config-file configs/ViTS.py --resume
    python tools/train_net.py --config-file configs/ViTS.py --eval-only \\
        train.init_checkpoint=output_of_train/ViTS/model_final.pth
"""

from __future__ import annotations

import argparse
import sys

from diffmatte.engine import training
from diffmatte.engine.launch import launch, under_torchrun
from diffmatte.evaluation.evaluator import format_means


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (detectron2's ``default_argument_parser`` subset)."""
    parser = argparse.ArgumentParser(
        description="Train or evaluate DiffMatte from a LazyConfig file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Trailing key=value pairs override config entries, e.g. train.max_iter=1000 "
        "dataloader.train.batch_size=8 optimizer.lr=1e-4 train.device=cpu",
    )
    parser.add_argument("--config-file", required=True, help="LazyConfig .py (or saved .yaml)")
    parser.add_argument(
        "--num-gpus",
        type=int,
        default=1,
        help="processes to start on this machine (ignored under torchrun, which starts them)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in train.output_dir (or train.resume_from): "
        "model, optimizer, scheduler, scaler, iteration, RNG; without one, start from "
        "train.init_checkpoint",
    )
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="only evaluate train.init_checkpoint (or, with --resume, the newest checkpoint) "
        "on dataloader.test",
    )
    parser.add_argument("opts", nargs="*", metavar="KEY=VALUE", help="config overrides")
    # Options may come after the overrides too: ... train.max_iter=10 --resume
    args = parser.parse_intermixed_args(argv)
    if args.num_gpus < 1:
        parser.error("--num-gpus must be at least 1")
    return args


def _error(exc: Exception) -> int:
    lines = str(exc).strip().splitlines()
    print(f"error: {lines[0] if lines else type(exc).__name__}", file=sys.stderr)
    return 2


def run_process(args: argparse.Namespace) -> int:
    """One process: load the config, train or evaluate, report input errors in one line."""
    try:
        cfg = training.load_config(args.config_file, args.opts)
        result = training.run(cfg, resume=args.resume, eval_only=args.eval_only)
    except training.INPUT_ERRORS as exc:
        return _error(exc)
    if args.eval_only and result[1]:
        print(format_means({result[0]: result[1]}, name_width=40))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse, check what can be checked once, start the processes."""
    args = parse_args(argv)
    if args.num_gpus > 1 and not under_torchrun():
        # Checked here once, so that a bad config is one error line, not one per process.
        try:
            cfg = training.load_config(args.config_file, args.opts)
            if not args.eval_only:
                training.check_output_dir(cfg.train.output_dir)
        except training.INPUT_ERRORS as exc:
            return _error(exc)
    return launch(run_process, args.num_gpus, args=(args,))


if __name__ == "__main__":
    sys.exit(main())
