"""Time the official-equivalent evaluation (SAD, MSE, Grad, Conn) per image.

Synthetic but realistic cases (a body with hair, fur and a veil from
:mod:`diffmatte.data.synthetic`, a Composition-1k style dilated trimap, and a prediction that
is the ground truth blurred, with noise and a low-frequency error, background pasted as the
released model does) are scored with :func:`diffmatte.evaluation.metrics.compute_all` in one
process. Each size reports the median wall-clock and CPU time of ``--repeats`` runs after one
warm-up run.

    python tools/benchmark_evaluation.py
    python tools/benchmark_evaluation.py --sizes 1000 2000 --repeats 7 --json timings.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from diffmatte.data.augmentations import dilated_trimap
from diffmatte.data.synthetic import generate_foreground
from diffmatte.evaluation.metrics import (
    compute_all,
    compute_conn,
    compute_grad,
    compute_mse,
    compute_sad,
)
from diffmatte.utils.fileio import atomic_write_text
from diffmatte.utils.image_io import alpha_to_uint8

# Trimap band radius per 1000 pixels of the shorter side (Composition-1k bands are ~10-25 px).
_RADIUS_PER_1000 = 12


def make_case(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A realistic (pred, gt, trimap) triple of uint8 (size, size) arrays.

    Args:
        size: image side in pixels.
        seed: seed of the matte and of the prediction's errors.

    Returns:
        ``(pred, gt, trimap)``, uint8, trimap values {0, 128, 255}.
    """
    rng = np.random.default_rng(seed)
    _, alpha = generate_foreground(seed, size=size, supersample=2)
    gt = alpha_to_uint8(alpha)
    trimap = dilated_trimap(gt, max(1, round(size * _RADIUS_PER_1000 / 1000)))
    blurred = cv2.GaussianBlur(alpha, (0, 0), 1.5)
    low = cv2.resize(rng.normal(0.0, 0.04, (8, 8)).astype(np.float32), (size, size))
    noisy = blurred + low * blurred + rng.normal(0.0, 0.03, alpha.shape).astype(np.float32)
    pred = alpha_to_uint8(np.clip(noisy, 0.0, 1.0))
    pred[trimap == 0] = 0
    return pred, gt, trimap


def _time(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``repeats`` calls, after one warm-up call."""
    function()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls), statistics.median(cpus)


def run(
    sizes: Sequence[int], repeats: int, breakdown: bool, whole_image: bool
) -> list[dict[str, object]]:
    """Time ``compute_all`` (and optionally each metric) for every size.

    Returns:
        One row per (size, mode, function): ``{"size", "mode", "function", "wall_ms",
        "cpu_ms"}``.
    """
    functions: dict[str, Callable] = {"all four": compute_all}
    if breakdown:
        functions.update(SAD=compute_sad, MSE=compute_mse, Grad=compute_grad, Conn=compute_conn)
    rows = []
    for size in sizes:
        pred, gt, trimap = make_case(size)
        modes = {"trimap": trimap, "whole image": None} if whole_image else {"trimap": trimap}
        for mode, mode_trimap in modes.items():
            for name, function in functions.items():
                wall, cpu = _time(functools.partial(function, pred, gt, mode_trimap), repeats)
                rows.append(
                    {
                        "size": size,
                        "mode": mode,
                        "function": name,
                        "wall_ms": round(wall * 1e3, 1),
                        "cpu_ms": round(cpu * 1e3, 1),
                    }
                )
    return rows


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
    rows = run(args.sizes, args.repeats, args.breakdown, args.whole_image)
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
