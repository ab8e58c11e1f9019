"""Choosing the inference backend: PyTorch (:class:`diffmatte.inference.Predictor`) or
onnxruntime (:class:`~diffmatte.deploy.runtime.OnnxPredictor`); both offer the same
``predict(image, trimap, strategy, seed, return_trajectory, trimap_thresholds, progress)``.

    predictor = load_predictor("onnxruntime", onnx_dir="exported/ViTS", threads=2)
    predictor = load_predictor("pytorch", config_file="configs/ViTS.py", checkpoint="ViTS.pth")

Command lines add ``--backend`` and ``--onnx-dir`` with :func:`add_backend_arguments`. Importing
this module does not import torch; the PyTorch backend imports it when chosen.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

__all__ = [
    "BACKENDS",
    "add_backend_arguments",
    "backend_error",
    "check_backend",
    "load_predictor",
    "predictor_from_args",
]

BACKENDS = ("pytorch", "onnxruntime")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend {pytorch,onnxruntime}`` and ``--onnx-dir DIR``.

    A ``--checkpoint`` argument already in the parser becomes optional at parse time (the
    onnxruntime backend reads none); :func:`backend_error` requires it for PyTorch.
    """
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="pytorch",
        help="pytorch, or onnxruntime on graphs from tools/export_onnx.py (see --onnx-dir)",
    )
    parser.add_argument(
        "--onnx-dir",
        default=None,
        metavar="DIR",
        help="export folder of tools/export_onnx.py, for --backend onnxruntime",
    )
    for action in parser._actions:
        if action.dest == "checkpoint":
            action.required = False


def backend_error(args: argparse.Namespace) -> str | None:
    """The one-line problem of the backend arguments, or None when they are usable.

    ``--backend onnxruntime`` needs ``--onnx-dir`` and runs float32 on the CPU provider:
    PyTorch-only speed options (half precision, compile, CUDA devices) are refused.
    """
    if args.backend != "onnxruntime":
        if getattr(args, "onnx_dir", None) is not None:
            return "--onnx-dir needs --backend onnxruntime"
        if hasattr(args, "checkpoint") and args.checkpoint is None:
            return "--checkpoint is required (or --backend onnxruntime with --onnx-dir)"
        return None
    if args.onnx_dir is None:
        return "--backend onnxruntime needs --onnx-dir (the folder of tools/export_onnx.py)"
    if getattr(args, "precision", "fp32") != "fp32":
        return f"--precision {args.precision}: the onnxruntime backend runs fp32"
    if getattr(args, "compile", False):
        return "--compile is a PyTorch option; not available with --backend onnxruntime"
    device = str(getattr(args, "device", "auto"))
    if device not in ("auto", "cpu"):
        return f"--device {device}: the onnxruntime backend runs on the CPU"
    return None


def load_predictor(
    backend: str = "pytorch",
    *,
    config_file: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    onnx_dir: str | os.PathLike | None = None,
    options: object | None = None,
    device: str = "auto",
    overrides: Sequence[str] = (),
    threads: int | None = None,
):
    """A predictor of the chosen backend.

    Args:
        backend: "pytorch" or "onnxruntime".
        config_file: config of the PyTorch backend.
        checkpoint: weights of the PyTorch backend.
        onnx_dir: export folder of the onnxruntime backend.
        options: :class:`diffmatte.inference.InferenceOptions` of the PyTorch backend.
        device: device of the PyTorch backend.
        overrides: config overrides of the PyTorch backend.
        threads: intra-op threads of the onnxruntime backend (None: onnxruntime's choice).

    Returns:
        A :class:`diffmatte.inference.Predictor` or an
        :class:`~diffmatte.deploy.runtime.OnnxPredictor`.

    Raises:
        ValueError: unknown backend or missing arguments; the backends' own errors otherwise.
    """
    if backend == "onnxruntime":
        if onnx_dir is None:
            raise ValueError("the onnxruntime backend needs onnx_dir")
        try:
            from diffmatte.deploy.runtime import OnnxPredictor
        except ImportError as err:
            raise ValueError(
                f'the onnxruntime backend needs the onnx extra (pip install -e ".[onnx]"): {err}'
            ) from None
        return OnnxPredictor(onnx_dir, threads=threads)
    if backend == "pytorch":
        if config_file is None or checkpoint is None:
            raise ValueError("the pytorch backend needs config_file and checkpoint")
        from diffmatte.inference import Predictor

        return Predictor.from_config(config_file, checkpoint, options, device, overrides)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def check_backend(args: argparse.Namespace) -> None:
    """Raises ValueError with :func:`backend_error`'s line when the backend arguments are
    unusable."""
    problem = backend_error(args)
    if problem is not None:
        raise ValueError(problem)


def predictor_from_args(args: argparse.Namespace, options: object, device: object):
    """The predictor that parsed command-line arguments ask for (checked with
    :func:`check_backend` first): ``--backend``, ``--onnx-dir``, ``--config-file``,
    ``--checkpoint``, the config overrides."""
    return load_predictor(
        args.backend,
        config_file=args.config_file,
        checkpoint=args.checkpoint,
        onnx_dir=args.onnx_dir,
        options=options,
        device=device,
        overrides=args.opts,
        threads=getattr(args, "threads", None),
    )
