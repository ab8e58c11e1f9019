"""Predict alpha mattes for a Composition-1k-style folder with a DiffMatte checkpoint.

Reads ``<data-dir>/merged/*.{png,jpg,jpeg}`` and ``<data-dir>/trimaps/<stem>.png`` (or
``image/`` + ``trimap/``) and writes ``<inference-dir>/<stem>.png``: 8-bit single-channel alphas.
Under ``torchrun --nproc_per_node K`` every process takes its own share of the images.

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
from pathlib import Path

import torch
from tqdm import tqdm

from diffmatte.config import ConfigError
from diffmatte.data.composition1k import (
    DatasetError,
    MattingPair,
    MattingSample,
    detect_layout,
    list_pairs,
    read_sample,
)
from diffmatte.deploy.backends import add_backend_arguments, backend_error, load_predictor
from diffmatte.deploy.runtime import InputTooLargeError
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
    batchable,
    load_model,
    predict_alpha,
    predict_alphas,
    resolve_config_file,
    resolve_device,
    trimap_to_model,
)
from diffmatte.modeling.diffmatte import autocast_dtype
from diffmatte.utils.distributed import get_rank, get_world_size, shard
from diffmatte.utils.image_io import ImageReadError, alpha_to_uint8, write_png_atomic

# Exit statuses.
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
        strategy_help="sampler and number of steps: ddimN or ddpmN (the paper's results use "
        "ddim10)",
        seed_help="seed of every image's initial noise (the same for every image and process)",
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


def predict_one(
    model: torch.nn.Module,
    pair: MattingPair,
    output: Path,
    sampler: Sampler,
    args: argparse.Namespace,
    device: torch.device,
) -> bool:
    """Predicts and writes one alpha; reports a problem on one line and returns False."""
    try:
        sample = read_sample(pair)
        if args.backend == "onnxruntime":  # model is an OnnxPredictor
            prediction = model.predict(sample.image, sample.trimap, sampler.strategy, args.seed)
        else:
            trimap = trimap_to_model(sample.trimap, "composition1k")
            prediction = predict_alpha(model, sample.image, trimap, sampler, args.seed, device)
        write_png_atomic(output, alpha_to_uint8(prediction.alpha))
    except ImageReadError as err:
        _error(str(err))
    except InputTooLargeError as err:
        _error(f"{pair.image_path}: {err}")
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        height, width = sample.image.shape[:2]
        _error(f"{pair.image_path}: out of GPU memory for a {width}x{height} image")
    except OSError as err:
        _error(f"{output}: cannot write ({err.strerror or err})")
    else:
        return True
    return False


def predict_group(
    model: torch.nn.Module,
    group: list[tuple[MattingPair, MattingSample]],
    output_dir: Path,
    sampler: Sampler,
    args: argparse.Namespace,
    device: torch.device,
) -> int:
    """Predicts and writes same-size images in one batch; returns how many were written.

    Out of GPU memory, the images are retried one by one.
    """
    try:
        trimaps = [trimap_to_model(sample.trimap, "composition1k") for _, sample in group]
        images = [sample.image for _, sample in group]
        predictions = predict_alphas(model, images, trimaps, sampler, args.seed, device)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        outputs = [(pair, output_dir / f"{pair.name}.png") for pair, _ in group]
        return sum(predict_one(model, pair, out, sampler, args, device) for pair, out in outputs)
    written = 0
    for (pair, _), prediction in zip(group, predictions, strict=True):
        output = output_dir / f"{pair.name}.png"
        try:
            write_png_atomic(output, alpha_to_uint8(prediction.alpha))
            written += 1
        except OSError as err:
            _error(f"{output}: cannot write ({err.strerror or err})")
    return written


def predict_batched(
    model: torch.nn.Module,
    todo: list[MattingPair],
    output_dir: Path,
    sampler: Sampler,
    args: argparse.Namespace,
    device: torch.device,
    progress: tqdm,
) -> int:
    """Groups images by size into batches of up to ``--batch-size``; returns how many were
    written. At most 2 x batch size images wait in memory (the largest group runs early)."""
    pending: dict[tuple[int, int], list[tuple[MattingPair, MattingSample]]] = {}
    written = 0

    def flush(size: tuple[int, int]) -> None:
        nonlocal written
        group = pending.pop(size)
        written += predict_group(model, group, output_dir, sampler, args, device)
        progress.update(len(group))

    for pair in todo:
        try:
            sample = read_sample(pair)
        except ImageReadError as err:
            _error(str(err))
            progress.update(1)
            continue
        size = sample.image.shape[:2]
        pending.setdefault(size, []).append((pair, sample))
        if len(pending[size]) >= args.batch_size:
            flush(size)
        elif sum(len(group) for group in pending.values()) >= 2 * args.batch_size:
            flush(max(pending, key=lambda key: len(pending[key])))
    for size in list(pending):
        flush(size)
    return written


def run(args: argparse.Namespace) -> int:
    """Runs inference for parsed arguments; returns the exit status."""
    problem = backend_error(args)
    if problem is not None:
        _error(problem)
        return EXIT_UNUSABLE
    try:
        sampler = Sampler.from_strategy(args.sample_strategy)
        rank, world_size = get_rank(), get_world_size()
        device = resolve_device(args.device)
        autocast_dtype(args.precision, device)
        apply_heap_reuse(args, device)
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
        if args.cuda_graph and device.type != "cuda":
            raise ValueError(f"--cuda-graph needs a CUDA device, not {device}")
        image_dir, trimap_dir, _ = detect_layout(args.data_dir)
        listing = list_pairs(args.data_dir, image_dir, trimap_dir, alpha_dir=None)
    except (ValueError, DatasetError) as err:
        _error(str(err))
        return EXIT_UNUSABLE
    for line in listing.problems():
        # Every process sees the same listing; one of them reports it.
        if rank == 0:
            _error(line)
    if not listing.pairs:
        _error(f"{listing.image_dir}: no usable images (.png, .jpg, .jpeg with a trimap)")
        return EXIT_UNUSABLE
    checkpoint = Path(args.checkpoint or "")
    if args.backend == "pytorch" and not checkpoint.is_file():
        _error(f"{checkpoint}: checkpoint file not found")
        return EXIT_UNUSABLE

    output_dir = Path(args.output_dir)
    if output_dir.resolve() in (listing.image_dir.resolve(), listing.trimap_dir.resolve()):
        _error(f"{output_dir}: is an input folder; choose another --inference-dir")
        return EXIT_UNUSABLE
    pairs = shard(listing.pairs, rank, world_size)
    todo = [
        pair for pair in pairs if args.overwrite or not (output_dir / f"{pair.name}.png").exists()
    ]
    prefix = f"[rank {rank}/{world_size}] " if world_size > 1 else ""
    skipped = len(pairs) - len(todo)
    failed = listing.num_unusable if rank == 0 else 0
    written = 0
    if todo:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            _error(f"{output_dir}: cannot create the output folder ({err.strerror or err})")
            return EXIT_UNUSABLE
        try:
            if args.backend == "onnxruntime":
                model = load_predictor("onnxruntime", onnx_dir=args.onnx_dir)
            else:
                config_file = resolve_config_file(args.config_file)
                model = load_model(config_file, checkpoint, args.opts, device)
                model.set_inference_options(args.precision, args.compile, args.cuda_graph)
        except (ConfigError, CheckpointError, ValueError, ImportError) as err:
            _error(" ".join(str(err).split()))
            return EXIT_UNUSABLE
        if args.backend == "pytorch" and args.batch_size > 1 and batchable(model, sampler):
            desc = f"{prefix}{args.sample_strategy}"
            with tqdm(total=len(todo), desc=desc, unit="img", position=rank) as progress:
                written = predict_batched(model, todo, output_dir, sampler, args, device, progress)
            failed += len(todo) - written
        else:
            for pair in tqdm(
                todo, desc=f"{prefix}{args.sample_strategy}", unit="img", position=rank
            ):
                if predict_one(model, pair, output_dir / f"{pair.name}.png", sampler, args, device):
                    written += 1
                else:
                    failed += 1
    summary = f"{prefix}{written} written, {skipped} skipped"
    if skipped:
        summary += f" (outputs already in {output_dir}; --overwrite redoes them)"
    if failed:
        summary += f", {failed} failed"
    print(summary, file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; ``argv`` defaults to the process arguments."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
