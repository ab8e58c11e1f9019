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
    detect_layout,
    list_pairs,
    read_sample,
)
from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.checkpoint import CheckpointError
from diffmatte.engine.predictor import (
    DEFAULT_SEED,
    load_model,
    predict_alpha,
    resolve_config_file,
    resolve_device,
    trimap_to_model,
)
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
    parser.add_argument(
        "--config-dir",
        "--config-file",
        dest="config_file",
        metavar="FILE",
        default="configs/ViTS.py",
        help="config file (Python LazyConfig) or the name of one in configs/, e.g. ViTS",
    )
    parser.add_argument(
        "--checkpoint-dir",
        "--checkpoint",
        dest="checkpoint",
        metavar="FILE",
        required=True,
        help="weights file (.pth) in the released format",
    )
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
    parser.add_argument(
        "--sample-strategy",
        default="ddpm1",
        help="sampler and number of steps: ddimN or ddpmN (the paper's results use ddim10)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="seed of every image's initial noise (the same for every image and process)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="predict images whose output already exists"
    )
    parser.add_argument(
        "opts",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. model.backbone.drop_path_rate=0",
    )
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
        trimap = trimap_to_model(sample.trimap, "composition1k")
        prediction = predict_alpha(model, sample.image, trimap, sampler, args.seed, device)
        write_png_atomic(output, alpha_to_uint8(prediction.alpha))
    except ImageReadError as err:
        _error(str(err))
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        height, width = sample.image.shape[:2]
        _error(f"{pair.image_path}: out of GPU memory for a {width}x{height} image")
    except OSError as err:
        _error(f"{output}: cannot write ({err.strerror or err})")
    else:
        return True
    return False


def run(args: argparse.Namespace) -> int:
    """Runs inference for parsed arguments; returns the exit status."""
    try:
        sampler = Sampler.from_strategy(args.sample_strategy)
        rank, world_size = get_rank(), get_world_size()
        device = resolve_device(args.device)
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
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
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
            config_file = resolve_config_file(args.config_file)
            model = load_model(config_file, checkpoint, args.opts, device)
        except (ConfigError, CheckpointError) as err:
            _error(" ".join(str(err).split()))
            return EXIT_UNUSABLE
        for pair in tqdm(todo, desc=f"{prefix}{args.sample_strategy}", unit="img", position=rank):
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
