"""Time the official-equivalent evaluation (SAD, MSE, Grad, Conn) per image.

Synthetic but realistic cases (see :mod:`diffmatte.evaluation.benchmark`) are scored with
:func:`diffmatte.evaluation.metrics.compute_all` in one process. Each size reports the median
wall-clock and CPU time of ``--repeats`` runs after one warm-up run.

    python tools/benchmark_evaluation.py
    python tools/benchmark_evaluation.py --sizes 1000 2000 --repeats 7 --json timings.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence

import cv2
import numpy as np

from diffmatte.evaluation.benchmark import time_metrics
from diffmatte.utils.fileio import atomic_write_text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000], help="image sides")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per size (median)")
    parser.add_argument(
        "--threads", type=int, default=1, help="OpenCV threads (default 1: one core)"
    )
    parser.add_argument("--breakdown", action="store_true", help="also time each metric alone")
    parser.add_argument("--whole-image", action="store_true", help="also time the whole-image mode")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or min(args.sizes) < 16:
        parser.error("--repeats and --threads must be >= 1 and sizes >= 16")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cv2.setNumThreads(args.threads)
    rows = time_metrics(args.sizes, args.repeats, args.breakdown, args.whole_image)
    cpu = platform.processor() or platform.machine()
    print(
        f"compute_all per image, median of {args.repeats} runs, one process, "
        f"{args.threads} OpenCV thread(s), {os.cpu_count()} cores ({cpu})"
    )
    print(f"{'size':>11} {'mode':>12} {'function':>9} {'wall ms':>9} {'CPU ms':>9}")
    for row in rows:
        side = f"{row['size']}x{row['size']}"
        print(
            f"{side:>11} {row['mode']:>12} {row['function']:>9} "
            f"{row['wall_ms']:>9.1f} {row['cpu_ms']:>9.1f}"
        )
    if args.json:
        document = {
            "repeats": args.repeats,
            "opencv_threads": args.threads,
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "rows": rows,
        }
        atomic_write_text(args.json, json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
