"""Predict the alpha matte of one image and its trimap with a DiffMatte checkpoint.

    python run_one_image.py --config-dir configs/ViTS_1024.py --checkpoint-dir ViTS_1024.pth \\
        --image-dir photo.png --trimap-dir photo_trimap.png --output-dir demo/result.png

``--output-dir`` is a file when it ends in an image extension (as in the original release,
whose default is ``demo/result.png``), else a folder that receives ``<image stem>.png``. The alpha
is written as an 8-bit single-channel PNG. Optional extras: the float alpha before quantisation
(``--output-npy``), an RGBA cut-out (``--output-rgba``) and the x0 prediction of every sampling
step side by side (``--output-trajectory``). Trimaps are read the way the original demo reads
them: v / 255 below 0.1 is background, above 0.9 foreground, anything else unknown.
Exit status: 0 on success, 2 on any problem (reported on one line).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffmatte.config import ConfigError
from diffmatte.data.composition1k import MattingPair, read_sample
from diffmatte.data.sources import bundled_lemur_dir
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
from diffmatte.inference.checks import check_run
from diffmatte.inference.outputs import alpha_output_path, write_prediction
from diffmatte.utils.fileio import check_writable_file
from diffmatte.utils.image_io import ImageReadError

EXIT_OK, EXIT_FAILED = 0, 2
_LEMUR = bundled_lemur_dir()


def build_parser() -> argparse.ArgumentParser:
    """The command line; flags of the original release keep their names and meaning."""
    parser = argparse.ArgumentParser(
        description="Predict the alpha matte of one image and its trimap.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_argument(parser, default="configs/ViTS_1024.py")
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--image-dir",
        "--image",
        dest="image",
        metavar="FILE",
        default=str(_LEMUR / "image" / "lemur.png"),
        help="input image file (default: the bundled CC0 lemur photograph)",
    )
    parser.add_argument(
        "--trimap-dir",
        "--trimap",
        dest="trimap",
        metavar="FILE",
        default=str(_LEMUR / "trimap" / "lemur.png"),
        help="trimap file (grey; dark = background, bright = foreground, mid = unknown)",
    )
    parser.add_argument(
        "--output-dir",
        "--output",
        dest="output",
        metavar="PATH",
        default="demo/result.png",
        help="alpha PNG file, or a folder that receives <image stem>.png",
    )
    add_sampling_arguments(
        parser,
        default_strategy="ddim10",
        strategy_help="sampler and number of steps: ddimN or ddpmN, 1 <= N <= 1000",
        seed_help="seed of the initial noise, 0 <= S < 2**63",
    )
    for flag, what in (
        ("--output-npy", "the float32 (H, W) alpha in [0, 1], before 8-bit rounding (np.save)"),
        ("--output-rgba", "an RGBA PNG cut-out: the image's colours with the alpha"),
        ("--output-trajectory", "a PNG strip of the alpha predicted at each step, left to right"),
    ):
        parser.add_argument(flag, metavar="PATH", help=f"also save {what}")
    add_backend_arguments(parser)
    add_overrides_argument(parser)
    return parser


def _report(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Runs the prediction for parsed arguments; returns the exit status."""
    extras = {"npy_path": args.output_npy, "rgba_path": args.output_rgba}
    extras["trajectory_path"] = args.output_trajectory
    alpha_path = alpha_output_path(args.output, args.image)
    # Every check that can fail comes before the model is loaded; nothing is created before it.
    try:
        check_backend(args)
        options = inference_options(args)
        checkpoint = args.checkpoint if args.backend == "pytorch" else None
        sampler, device = check_run(
            args.sample_strategy, args.seed, options, args.device, checkpoint
        )
        image, trimap = Path(args.image), Path(args.trimap)
        sample = read_sample(MattingPair(image.stem, image, trimap))
        for output in [alpha_path, *(path for path in extras.values() if path is not None)]:
            check_writable_file(output, inputs=(args.image, args.trimap))
        apply_heap_reuse(args, device)  # before the model's memory is allocated
        predictor = predictor_from_args(args, options, device)
        if hasattr(predictor, "check_size"):  # exported graphs bound the image size
            predictor.check_size(*sample.image.shape[:2])
    except (ValueError, ImageReadError, ConfigError, CheckpointError) as err:
        _report(one_line(err))
        return EXIT_FAILED
    levels = np.unique(sample.trimap)
    if not set(levels.tolist()) <= {0, 128, 255}:
        print(
            f"note: {args.trimap} has {len(levels)} grey levels; snapped to three "
            "(v/255 < 0.1 background, > 0.9 foreground, else unknown)",
            file=sys.stderr,
        )
    prediction = predictor.predict(
        sample.image, sample.trimap, sampler, args.seed, args.output_trajectory is not None, "demo"
    )
    try:
        written = write_prediction(prediction, sample.image, alpha_path, **extras)
    except OSError as err:
        _report(f"{err.filename or alpha_path}: cannot write ({err.strerror or err})")
        return EXIT_FAILED
    print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; ``argv`` defaults to the process arguments."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
