"""PyTorch and onnxruntime side by side: speed and alpha difference on the same weights, inputs
and seed, runs interleaved in one process so that both see the same machine load.

    python tools/benchmark.py --backend onnxruntime --threads 2 --sizes 512 1024 \\
        --strategies ddim10

exports the config's random-weight model to a temporary folder, then times
:class:`diffmatte.inference.Predictor` (the PyTorch default path) and
:class:`~diffmatte.deploy.runtime.OnnxPredictor` alternately. The torch-free timing of one case
(for peak RSS of a process that never loads torch, under ``/usr/bin/time -v``):

    python -m diffmatte.deploy.compare --onnx-dir exported/ViTS --size 2048x2048 \\
        --strategy ddim10 --threads 2
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffmatte.deploy.runtime import OnnxPredictor, parse_size

__all__ = ["format_rows", "side_by_side", "synthetic_pair", "time_onnx"]


def synthetic_pair(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random float32 (H, W, 3) image and a trimap with background, unknown and foreground
    bands (float levels)."""
    rng = np.random.default_rng(seed)
    image = rng.random((height, width, 3), dtype=np.float32)
    trimap = np.full((height, width), 0.5, np.float32)
    trimap[: height // 4] = 0.0
    trimap[-(height // 4) :] = 1.0
    return image, trimap


def _timed(predict, image, trimap, strategy, seed) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    alpha = predict(image, trimap, strategy=strategy, seed=seed).alpha
    return time.perf_counter() - start, alpha


def side_by_side(
    config_file: str,
    sizes: Sequence[int],
    strategies: Sequence[str],
    threads: int | None = None,
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 8282,
    overrides: Sequence[str] = (),
) -> list[dict]:
    """Times both backends on a random-weight model of ``config_file`` (exported first).

    Returns:
        One dict per (size, strategy): ``size``, ``strategy``, ``pytorch_s`` and
        ``onnxruntime_s`` (median seconds per image), ``speedup`` (PyTorch / onnxruntime) and
        ``max_abs_diff`` (max |alpha difference|).
    """
    import torch

    from diffmatte.deploy.export import export_model, settle_spectral_norm
    from diffmatte.inference import Predictor
    from diffmatte.inference.functional import build_model

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = settle_spectral_norm(build_model(config_file, overrides))
    pytorch = Predictor(model, device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as onnx_dir:
        export_model(model, onnx_dir, config_name=Path(config_file).stem)
        onnx = OnnxPredictor(onnx_dir, threads=threads)
        for size in sizes:
            image, trimap = synthetic_pair(size, size)
            for strategy in strategies:
                times = {"pytorch": [], "onnxruntime": []}
                alphas = {}
                for index in range(warmup + repeats):
                    for name, predictor in (("pytorch", pytorch), ("onnxruntime", onnx)):
                        seconds, alphas[name] = _timed(
                            predictor.predict, image, trimap, strategy, seed
                        )
                        if index >= warmup:
                            times[name].append(seconds)
                row = {
                    "size": size,
                    "strategy": strategy,
                    "pytorch_s": statistics.median(times["pytorch"]),
                    "onnxruntime_s": statistics.median(times["onnxruntime"]),
                    "max_abs_diff": float(np.abs(alphas["pytorch"] - alphas["onnxruntime"]).max()),
                }
                row["speedup"] = row["pytorch_s"] / row["onnxruntime_s"]
                rows.append(row)
                print(format_rows([row]).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


def format_rows(rows: Sequence[dict]) -> str:
    """A Markdown table of :func:`side_by_side` rows."""
    lines = [
        "| size | strategy | PyTorch s/img | onnxruntime s/img | speed-up | max abs diff |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['size']} | {row['strategy']} | {row['pytorch_s']:.3f} | "
            f"{row['onnxruntime_s']:.3f} | {row['speedup']:.2f} | {row['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def time_onnx(
    onnx_dir: str, size: tuple[int, int], strategy: str, threads: int | None, repeats: int
) -> list[float]:
    """Seconds per :meth:`OnnxPredictor.predict` call on a synthetic pair (no torch)."""
    predictor = OnnxPredictor(onnx_dir, threads=threads)
    image, trimap = synthetic_pair(*size)
    return [_timed(predictor.predict, image, trimap, strategy, 0)[0] for _ in range(repeats)]


def main(argv: Sequence[str] | None = None) -> int:
    """Torch-free timing of the onnxruntime backend; prints seconds and peak RSS."""
    parser = argparse.ArgumentParser(description="Time the onnxruntime backend (no torch).")
    parser.add_argument("--onnx-dir", required=True)
    parser.add_argument("--size", type=parse_size, default=(1024, 1024), metavar="HxW")
    parser.add_argument("--strategy", default="ddim10")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        seconds = time_onnx(args.onnx_dir, args.size, args.strategy, args.threads, args.repeats)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"{args.size[0]}x{args.size[1]} {args.strategy}: "
        + ", ".join(f"{s:.3f}" for s in seconds)
        + f" s; peak RSS {peak:.2f} GiB; torch loaded: {'torch' in sys.modules}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
