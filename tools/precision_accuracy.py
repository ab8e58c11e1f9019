#!/usr/bin/env python
"""Accuracy of bf16 (or fp16) inference against float32: same weights, same noise, real images.

For each config, the model is built with default-initialised weights after
``torch.manual_seed(--init-seed)``, or loaded from ``--checkpoint`` (one config only); every
image of ``--data-dir`` (a folder with ``image/``, ``trimap/``, ``alpha/``, or a
Composition-1k-style folder) is predicted in float32 and in ``--precision`` from the same seed.
Printed per config: max and mean ``|Δα|`` (in 8-bit levels, over the unknown region), the share
of unknown pixels whose 8-bit alpha changed, and the change of mean SAD/MSE/Grad/Conn.

    python tools/precision_accuracy.py --data-dir DATA --max-side 400 --sample-strategy ddim10
    python tools/precision_accuracy.py --data-dir DATA --config-file configs/ViTS.py \\
        --checkpoint ViTS.pth

Exit status: 0, or 2 for unusable arguments, configs, checkpoints, data or precisions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from diffmatte.config import ConfigError
from diffmatte.data.composition1k import Composition1kDataset, DatasetError, detect_layout
from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.checkpoint import CheckpointError
from diffmatte.evaluation.precision import METRICS, compare_precision, downscale
from diffmatte.inference import InferenceOptions
from diffmatte.inference.functional import (
    DEFAULT_SEED,
    build_model,
    load_model,
    resolve_config_file,
)
from diffmatte.utils.fileio import atomic_write_text
from diffmatte.utils.image_io import ImageReadError

CONFIGS = (
    "configs/res34.py",
    "configs/swin_t.py",
    "configs/ViTS.py",
    "configs/ViTB.py",
    "configs/ViTS_1024.py",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="images, trimaps and GT alphas")
    parser.add_argument("--config-file", nargs="+", default=list(CONFIGS))
    parser.add_argument("--checkpoint", help="trained weights (with one --config-file)")
    parser.add_argument("--precision", choices=("bf16", "fp16"), default="bf16")
    parser.add_argument("--sample-strategy", default="ddim10")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="noise seed")
    parser.add_argument("--init-seed", type=int, default=0, help="seed of the initial weights")
    parser.add_argument("--max-side", type=int, help="downscale images to this long side")
    parser.add_argument("--max-images", type=int, help="use the first N images (by name)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser


def _row(config: str, weights: str, report) -> dict:
    reference, _ = report.metric_means()
    return {
        "config": config,
        "weights": weights,
        "images": len(report.images),
        "max_abs_255": report.max_abs * 255,
        "mean_abs_255": report.mean_abs * 255,
        "levels_changed": report.levels_changed,
        "fp32_means": reference,
        "changes": report.metric_changes(),
    }


def _format(row: dict) -> str:
    changes = " | ".join(f"{100 * row['changes'][key]:+.2f} %" for key in METRICS)
    return (
        f"| {row['config']} | {row['weights']} | {row['images']} | {row['max_abs_255']:.2f} | "
        f"{row['mean_abs_255']:.3f} | {100 * row['levels_changed']:.2f} % | "
        f"{row['fp32_means']['SAD']:.2f} | {changes} |"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        if args.checkpoint and len(args.config_file) != 1:
            raise ValueError("--checkpoint needs exactly one --config-file")
        InferenceOptions(precision=args.precision).check_device("cpu")
        sampler = Sampler.from_strategy(args.sample_strategy)
        configs = [resolve_config_file(config) for config in args.config_file]
        dataset = Composition1kDataset(args.data_dir, *detect_layout(args.data_dir))
        count = len(dataset) if args.max_images is None else min(args.max_images, len(dataset))
        if count == 0:
            raise ValueError(f"{args.data_dir}: no image with a trimap")
        samples = [downscale(dataset[i], args.max_side) for i in range(count)]
    except (ValueError, ConfigError, DatasetError, ImageReadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    size = "x".join(str(n) for n in samples[0].image.shape[1::-1])
    print(
        f"{args.precision} vs fp32, {args.sample_strategy}, seed {args.seed}, {count} images "
        f"(first {size}), |Δα| in 8-bit levels over the unknown region"
    )
    print(
        "| config | weights | images | max abs | mean abs | levels changed | SAD fp32 | "
        + " | ".join(f"Δ{key}" for key in METRICS)
        + " |"
    )
    print("|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(METRICS))
    rows = []
    for config in configs:
        start = time.perf_counter()
        try:
            if args.checkpoint:
                model, weights = load_model(config, args.checkpoint), args.checkpoint
            else:
                torch.manual_seed(args.init_seed)
                model, weights = build_model(config), f"init seed {args.init_seed}"
        except (ConfigError, CheckpointError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        report = compare_precision(model, samples, args.precision, sampler, args.seed)
        rows.append(_row(config.stem, weights, report))
        print(_format(rows[-1]), f"<!-- {time.perf_counter() - start:.0f} s -->", flush=True)
    if args.json:
        atomic_write_text(args.json, json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
