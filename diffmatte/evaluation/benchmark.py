"""Timing of the official-equivalent evaluation (SAD, MSE, Grad, Conn) on realistic cases.

Synthetic but realistic cases (a body with hair, fur and a veil from
:mod:`diffmatte.data.synthetic`, a Composition-1k style dilated trimap, and a prediction that
is the ground truth blurred, with noise and a low-frequency error, background pasted as the
released model does) are scored with :func:`diffmatte.evaluation.metrics.compute_all`. Each size
reports the median wall-clock and CPU time of ``repeats`` runs after one warm-up run.
``tools/benchmark_evaluation.py`` is the command line.
"""

from __future__ import annotations

import functools
import statistics
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
from diffmatte.utils.image_io import alpha_to_uint8

__all__ = ["make_case", "time_metrics"]

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


def time_metrics(
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
