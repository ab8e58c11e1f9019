#!/usr/bin/env python
"""Memory of a long-running CPU inference process: does it stay flat over many images?

One process keeps a Predictor (random weights) and runs it on ``--images`` random images whose
sides are drawn uniformly from ``--min-side`` to ``--max-side`` (both orientations), then on the
first ``--repeat`` images again. After every image it records the peak resident set size
(``ru_maxrss``) and the current one (``/proc/self/statm``). Memory does not depend on the weights
or on the machine's load, so the figures are comparable between runs.

Example (the figures of docs/performance.md):
    OMP_NUM_THREADS=1 python tools/benchmark_memory.py --config-file configs/ViTS.py \\
        --strategy ddim2 --images 60 --repeat 10 --json memory.json

Printed summary: peak after the largest image, at the end, and after the first pass; resident
memory after the first pass and after the repeat.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np
import torch

from diffmatte.config import ConfigError, LazyConfig, instantiate
from diffmatte.engine.cli import add_config_argument
from diffmatte.inference.functional import resolve_config_file
from diffmatte.inference.predictor import Predictor
from diffmatte.utils.fileio import atomic_write_text
from diffmatte.utils.memory import peak_resident_bytes, resident_bytes

GIB = 2**30


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    add_config_argument(parser, default="configs/ViTS.py")
    parser.add_argument("--strategy", default="ddim2", help="sampling strategy, e.g. ddim2")
    parser.add_argument("--images", type=int, default=60, help="images of the first pass")
    parser.add_argument("--repeat", type=int, default=10, help="first images run again")
    parser.add_argument("--min-side", type=int, default=256)
    parser.add_argument("--max-side", type=int, default=1536)
    parser.add_argument("--seed", type=int, default=0, help="seed of sizes and pixels")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", metavar="FILE", help="write every measurement as JSON")
    return parser


def image_sizes(count: int, low: int, high: int, seed: int) -> list[tuple[int, int]]:
    """(height, width) pairs, each side uniform in [low, high]."""
    rng = np.random.default_rng(seed)
    return [
        (int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))) for _ in range(count)
    ]


def random_pair(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random float32 RGB image and a trimap with background, unknown and foreground bands."""
    image = np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)
    trimap = np.full((height, width), 128, np.uint8)
    trimap[: height // 4] = 0
    trimap[height - height // 4 :] = 255
    return image, trimap


def run(args: argparse.Namespace) -> int:
    if args.images < 1 or not 0 <= args.repeat <= args.images or args.min_side > args.max_side:
        print(
            "error: need --images >= 1, 0 <= --repeat <= --images, --min-side <= --max-side",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    config_file = resolve_config_file(args.config_file)
    try:
        model = instantiate(LazyConfig.load(str(config_file)).model)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    predictor = Predictor(model, device="cpu")
    sizes = image_sizes(args.images, args.min_side, args.max_side, args.seed)
    order = list(range(args.images)) + list(range(args.repeat))
    records = []
    for position, index in enumerate(order):
        height, width = sizes[index]
        image, trimap = random_pair(height, width, args.seed * 100_003 + index)
        predictor.predict(image, trimap, strategy=args.strategy)
        records.append(
            {
                "index": index,
                "height": height,
                "width": width,
                "peak_rss": peak_resident_bytes(),
                "rss": resident_bytes(),
            }
        )
        print(
            f"{position + 1:3d}/{len(order)} {height:5d} x {width:<5d} "
            f"peak {records[-1]['peak_rss'] / GIB:.3f} GiB  rss {records[-1]['rss'] / GIB:.3f} GiB",
            file=sys.stderr,
        )
    largest = max(range(args.images), key=lambda i: sizes[i][0] * sizes[i][1])
    first_pass = records[args.images - 1]
    summary = {
        "largest_image": sizes[largest],
        "peak_after_largest": records[largest]["peak_rss"],
        "peak_after_first_pass": first_pass["peak_rss"],
        "peak_at_end": records[-1]["peak_rss"],
        "rss_after_first_pass": first_pass["rss"],
        "rss_at_end": records[-1]["rss"],
        # The end figure alone can be low when the kernel reclaimed pages of mapped libraries.
        "rss_max_in_rerun": max((r["rss"] for r in records[args.images :]), default=0),
    }
    for key, value in summary.items():
        shown = f"{value / GIB:.3f} GiB" if isinstance(value, int) else value
        print(f"{key:24s} {shown}")
    if args.json:
        atomic_write_text(args.json, json.dumps({"summary": summary, "records": records}, indent=1))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; ``argv`` defaults to the process arguments."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
