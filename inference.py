"""Predict alpha mattes for a Composition-1k-style folder with a DiffMatte checkpoint.

Reads ``<data-dir>/merged/*.{png,jpg,jpeg}`` and ``<data-dir>/trimaps/<stem>.png`` (or
``image/`` + ``trimap/``) and writes ``<inference-dir>/<stem>.png``: 8-bit single-channel alphas.
Under ``torchrun --nproc_per_node K`` every process takes its own share of the images. The work
is done by :meth:`diffmatte.inference.Predictor.predict_folder`'s two parts,
:func:`~diffmatte.inference.folder.plan_folder` and :func:`~diffmatte.inference.folder.run_folder`.

    python inference.py --config-dir configs/ViTS.py --checkpoint-dir ViTS.pth \\
        --data-dir Composition-1k-testset --inference-dir predDIM/pred_alpha \\
        --sample-strategy ddim10

Exit status: 0 when every image was written (or already there), 1 when some images failed
(each reported on one line), 2 when nothing could run (bad folder, config or checkpoint).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tqdm import tqdm

from diffmatte.config import ConfigError
from diffmatte.deploy.backends import add_backend_arguments, check_backend, predictor_from_args
from diffmatte.engine.checkpoint import CheckpointError
from diffmatte.engine.cli import (
    add_checkpoint_argument,
    add_config_argument,
    add_overrides_argument,
    add_sampling_arguments,
    apply_heap_reuse,
    inference_options,
    one_line,
)
from diffmatte.inference import FolderSummary, plan_folder, run_folder
from diffmatte.inference.checks import check_run
from diffmatte.utils.distributed import get_rank, get_world_size

EXIT_OK, EXIT_SOME_FAILED, EXIT_UNUSABLE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The command line; flags of the original release keep their names and meaning."""
    parser = argparse.ArgumentParser(
        description="Predict alpha mattes for a Composition-1k-style folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_argument(parser, default="configs/ViTS.py")
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        required=True,
        help="dataset folder with merged/ and trimaps/ (or image/ and trimap/)",
    )
    parser.add_argument(
        "--inference-dir",
        "--output-dir",
        dest="output_dir",
        metavar="DIR",
        default="predDIM/pred_alpha",
        help="folder for the predicted alphas, <stem>.png",
    )
    add_sampling_arguments(
        parser,
        default_strategy="ddpm1",
        strategy_help="sampler and number of steps: ddimN or ddpmN, 1 <= N <= 1000 (the paper's "
        "results use ddim10)",
        seed_help="seed of every image's initial noise, 0 <= S < 2**63 (the same for every image "
        "and process)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="predict images whose output already exists"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        metavar="N",
        help="predict up to N images of the same size together (same results as one by one; "
        "multi-step DDPM runs one by one)",
    )
    parser.add_argument(
        "--cuda-graph", action="store_true", help="replay the decoder step from a CUDA graph"
    )
    add_backend_arguments(parser)
    add_overrides_argument(parser)
    return parser


def _error(message: str) -> None:
    tqdm.write(f"error: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Runs inference for parsed arguments; returns the exit status."""
    rank, world_size = get_rank(), get_world_size()
    # Every check that can fail comes before the model is loaded; nothing is created before it.
    try:
        check_backend(args)
        options = inference_options(args)
        checkpoint = args.checkpoint if args.backend == "pytorch" else None
        sampler, device = check_run(
            args.sample_strategy, args.seed, options, args.device, checkpoint
        )
        plan = plan_folder(args.data_dir, args.output_dir, args.overwrite, rank, world_size)
    except ValueError as err:
        _error(one_line(err))
        return EXIT_UNUSABLE
    for line in plan.problems:
        _error(line)
    summary = FolderSummary(skipped=plan.skipped, failed=plan.unusable)
    prefix = f"[rank {rank}/{world_size}] " if world_size > 1 else ""
    if plan.todo:
        apply_heap_reuse(args, device)  # before the model's memory is allocated
        try:
            predictor = predictor_from_args(args, options, device)
        except (ConfigError, CheckpointError, ValueError) as err:
            _error(one_line(err))
            return EXIT_UNUSABLE
        desc = f"{prefix}{args.sample_strategy}"
        with tqdm(total=len(plan.todo), desc=desc, unit="img", position=rank) as progress:
            summary = run_folder(predictor, plan, sampler, args.seed, _error, progress.update)
    if summary.skipped:
        print(
            f"{prefix}note: {summary.skipped} outputs already in {plan.output_dir} were kept "
            "(--overwrite redoes them)",
            file=sys.stderr,
        )
    print(f"{prefix}{summary}", file=sys.stderr)
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; ``argv`` defaults to the process arguments."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
