"""Command-line arguments shared by the inference scripts and tools.

The flag names of the original release (``--config-dir``, ``--checkpoint-dir``,
``--sample-strategy``) are kept, with clearer aliases next to them.
"""

from __future__ import annotations

import argparse

import torch

from diffmatte.inference.functional import DEFAULT_SEED
from diffmatte.inference.options import PRECISIONS, InferenceOptions
from diffmatte.utils.memory import reuse_freed_heap_memory


def add_config_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """``--config-dir`` / ``--config-file`` -> ``args.config_file``."""
    parser.add_argument(
        "--config-dir",
        "--config-file",
        dest="config_file",
        metavar="FILE",
        default=default,
        help="config file (Python LazyConfig) or the name of one in configs/, e.g. ViTS",
    )


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint-dir`` / ``--checkpoint`` (required) -> ``args.checkpoint``."""
    parser.add_argument(
        "--checkpoint-dir",
        "--checkpoint",
        dest="checkpoint",
        metavar="FILE",
        required=True,
        help="weights file (.pth) in the released format",
    )


def add_sampling_arguments(
    parser: argparse.ArgumentParser, default_strategy: str, strategy_help: str, seed_help: str
) -> None:
    """``--sample-strategy``, ``--device``, ``--seed``, ``--precision`` and ``--compile``."""
    parser.add_argument("--sample-strategy", default=default_strategy, help=strategy_help)
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=seed_help)
    parser.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        default="fp32",
        help="autocast precision of the networks (fp16 needs CUDA, bf16 CUDA or a CPU with "
        "native bf16: avx512_bf16 or amx_bf16; the sampler stays fp32)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="run the decoder step through torch.compile"
    )
    add_heap_reuse_argument(parser)


def inference_options(args: argparse.Namespace) -> InferenceOptions:
    """The :class:`InferenceOptions` of parsed :func:`add_sampling_arguments` flags, plus
    ``--batch-size`` and ``--cuda-graph`` where the command has them.

    Raises:
        ValueError: an invalid value (one line naming the option).
    """
    return InferenceOptions(
        precision=args.precision,
        compile=args.compile,
        cuda_graph=getattr(args, "cuda_graph", False),
        heap_reuse=args.heap_reuse,
        batch_size=getattr(args, "batch_size", 1),
    )


def one_line(error: BaseException) -> str:
    """An error's message on one line (checkpoint key reports may span several)."""
    return " ".join(str(error).split())


def add_heap_reuse_argument(parser: argparse.ArgumentParser) -> None:
    """``--heap-reuse`` -> ``args.heap_reuse`` (see :func:`apply_heap_reuse`)."""
    parser.add_argument(
        "--heap-reuse",
        action="store_true",
        help="on the CPU, keep freed memory for reuse: about 1.3x faster sampling, up to 40 %% "
        "higher peak memory",
    )


def apply_heap_reuse(args: argparse.Namespace, device: torch.device) -> bool:
    """On the CPU with ``--heap-reuse``, keeps freed memory for reuse
    (:func:`~diffmatte.utils.memory.reuse_freed_heap_memory`); returns whether it is on."""
    if device.type != "cpu" or not args.heap_reuse:
        return False
    return reuse_freed_heap_memory()


def add_overrides_argument(parser: argparse.ArgumentParser) -> None:
    """Positional ``key=value`` config overrides -> ``args.opts``."""
    parser.add_argument(
        "opts",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. model.backbone.drop_path_rate=0",
    )
