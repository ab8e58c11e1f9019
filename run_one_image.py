"""Predict the alpha matte of one image and its trimap with a DiffMatte checkpoint.

    python run_one_image.py --config-dir configs/ViTS_1024.py --checkpoint-dir ViTS_1024.pth \\
        --image-dir photo.png --trimap-dir photo_trimap.png --output-dir demo/result.png

``--output-dir`` is a file when it ends in an image extension (as in the original release,
whose default is ``demo/result.png``), else a folder that receives ``<image stem>.png``. The alpha
is written as an 8-bit single-channel PNG. Optional extras: the float alpha before quantisation
(``--output-npy``), an RGBA cut-out (``--output-rgba``) and the x0 prediction of every sampling
step side by side (``--output-trajectory``).

Trimaps are read the way the original demo reads them: v / 255 below 0.1 is background, above
0.9 foreground, anything else unknown, so smoothed or many-level trimaps work.
Exit status: 0 on success, 2 on any problem (reported on one line).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffmatte.config import ConfigError
from diffmatte.data.sources import bundled_lemur_dir
from diffmatte.deploy.backends import add_backend_arguments, backend_error, load_predictor
from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.checkpoint import CheckpointError
from diffmatte.engine.cli import (
    add_checkpoint_argument,
    add_config_argument,
    add_overrides_argument,
    add_sampling_arguments,
    apply_heap_reuse,
)
from diffmatte.engine.predictor import (
    load_model,
    predict_alpha,
    resolve_config_file,
    resolve_device,
    trimap_to_model,
)
from diffmatte.modeling.diffmatte import autocast_dtype
from diffmatte.utils.image_io import (
    ImageReadError,
    alpha_to_uint8,
    read_gray,
    read_image,
    save_npy_atomic,
    to_uint8,
    write_png_atomic,
)

EXIT_OK, EXIT_FAILED = 0, 2
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


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
        default=str(bundled_lemur_dir() / "image" / "lemur.png"),
        help="input image file (default: the bundled CC0 lemur photograph)",
    )
    parser.add_argument(
        "--trimap-dir",
        "--trimap",
        dest="trimap",
        metavar="FILE",
        default=str(bundled_lemur_dir() / "trimap" / "lemur.png"),
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
        strategy_help="sampler and number of steps: ddimN or ddpmN",
        seed_help="seed of the initial noise",
    )
    parser.add_argument(
        "--output-npy",
        default=None,
        metavar="PATH",
        help="also save the float32 (H, W) alpha in [0, 1], before 8-bit rounding (np.save)",
    )
    parser.add_argument(
        "--output-rgba",
        default=None,
        metavar="PATH",
        help="also save an RGBA PNG cut-out: the image's colours with the alpha",
    )
    parser.add_argument(
        "--output-trajectory",
        default=None,
        metavar="PATH",
        help="also save a PNG strip with the alpha predicted at each sampling step, left to right",
    )
    add_backend_arguments(parser)
    add_overrides_argument(parser)
    return parser


def alpha_output_path(output: str | Path, image: str | Path) -> Path:
    """Where the alpha PNG goes: ``output`` itself if it names an image file, else a folder."""
    output = Path(output)
    if output.suffix.lower() in _IMAGE_SUFFIXES:
        return output
    return output / f"{Path(image).stem}.png"


def _report(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Runs the prediction for parsed arguments; returns the exit status."""
    problem = backend_error(args)
    if problem is not None:
        _report(problem)
        return EXIT_FAILED
    try:
        sampler = Sampler.from_strategy(args.sample_strategy)
        device = resolve_device(args.device)
        autocast_dtype(args.precision, device)
        apply_heap_reuse(args, device)
        image = read_image(args.image)
        gray = to_uint8(read_gray(args.trimap))
    except (ValueError, ImageReadError) as err:
        _report(str(err))
        return EXIT_FAILED
    if gray.shape != image.shape[:2]:
        _report(
            f"{args.trimap}: size {gray.shape[1]}x{gray.shape[0]} does not match the image "
            f"{Path(args.image).name} ({image.shape[1]}x{image.shape[0]})"
        )
        return EXIT_FAILED
    alpha_path = alpha_output_path(args.output, args.image)
    inputs = {Path(args.image).resolve(), Path(args.trimap).resolve()}
    extras = [args.output_npy, args.output_rgba, args.output_trajectory]
    for output in [alpha_path, *(path for path in extras if path is not None)]:
        if Path(output).resolve() in inputs:
            _report(f"{output}: is an input file; choose another output path")
            return EXIT_FAILED
    checkpoint = Path(args.checkpoint or "")
    if args.backend == "pytorch" and not checkpoint.is_file():
        _report(f"{checkpoint}: checkpoint file not found")
        return EXIT_FAILED

    levels = np.unique(gray)
    if not set(levels.tolist()) <= {0, 128, 255}:
        print(
            f"note: {args.trimap} has {len(levels)} grey levels; snapped to three "
            "(v/255 < 0.1 background, > 0.9 foreground, else unknown)",
            file=sys.stderr,
        )
    want_trajectory = args.output_trajectory is not None
    if args.backend == "onnxruntime":
        try:
            prediction = load_predictor("onnxruntime", onnx_dir=args.onnx_dir).predict(
                image, gray, args.sample_strategy, args.seed, want_trajectory, "demo"
            )
        except (ValueError, ImportError) as err:
            _report(str(err))
            return EXIT_FAILED
    else:
        trimap = trimap_to_model(gray, "demo")
        try:
            config = resolve_config_file(args.config_file)
            model = load_model(config, checkpoint, args.opts, device)
        except (ConfigError, CheckpointError) as err:
            _report(" ".join(str(err).split()))
            return EXIT_FAILED
        model.set_inference_options(args.precision, args.compile)
        prediction = predict_alpha(
            model, image, trimap, sampler, args.seed, device, return_trajectory=want_trajectory
        )
    alpha_u8 = alpha_to_uint8(prediction.alpha)
    try:
        written = [write_png_atomic(alpha_path, alpha_u8)]
        if args.output_npy is not None:
            written.append(save_npy_atomic(args.output_npy, prediction.alpha.astype(np.float32)))
        if args.output_rgba is not None:
            rgba = np.dstack([alpha_to_uint8(image), alpha_u8])
            written.append(write_png_atomic(args.output_rgba, rgba))
        if want_trajectory:
            strip = np.concatenate([alpha_to_uint8(step) for step in prediction.trajectory], 1)
            written.append(write_png_atomic(args.output_trajectory, strip))
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
