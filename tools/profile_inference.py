#!/usr/bin/env python
"""Where inference time goes: torch.profiler op table and dtype census of the fast path.

Builds a config's model with default-initialised weights (``torch.manual_seed(0)``), runs one
untimed warm-up sample, then one sample of a random ``--size`` x ``--size`` image under
``torch.profiler`` (CPU activities, input shapes) and prints the top ops by self CPU time. With
``--census`` it also runs one decoder step under :func:`diffmatte.inference.bf16.dtype_census`
and prints the convolutions / matmuls by input dtype and the casts per step.

    python tools/profile_inference.py --threads 2 --size 512 --precision fp32
    python tools/profile_inference.py --threads 2 --size 512 --precision bf16 --census

Exit status: 0, or 2 for unusable arguments or a precision the CPU refuses.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from diffmatte.config import ConfigError
from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.predictor import build_model, resolve_config_file
from diffmatte.inference.bf16 import dtype_census
from diffmatte.modeling.diffmatte import autocast_dtype
from diffmatte.modeling.trimap import padded_size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default="configs/ViTS.py")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--sample-strategy", default="ddim10")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--row-limit", type=int, default=15, help="ops shown")
    parser.add_argument("--census", action="store_true", help="dtype census of one step")
    return parser


def _inputs(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=gen)
    trimap = torch.full((1, 1, size, size), 0.5)
    trimap[..., : size // 4, :] = 0.0
    trimap[..., -size // 4 :, :] = 1.0
    return image, trimap, torch.randn(1, 1, size, size, generator=gen)


def _census(model: torch.nn.Module, image: torch.Tensor, trimap: torch.Tensor) -> None:
    """One decoder step (after the per-image work) under the dtype census."""
    with torch.inference_mode():
        denoise = model._fast_denoiser(image, trimap)
        x_t, t = torch.randn_like(image[:, :1]), torch.full((1,), 0.5)
        _, census = dtype_census(denoise, x_t, t)
    print("\none decoder step: heavy ops by floating input dtypes")
    for (op, dtypes), calls in sorted(census.ops.items()):
        if op.split(".")[1] in (
            "convolution",
            "mm",
            "addmm",
            "bmm",
            "matmul",
            "_to_copy",
            "replication_pad2d",
            "upsample_bilinear2d",
            "cat",
        ):
            print(f"  {op:40s} {','.join(dtypes):22s} {calls:4d}")
    casts = ", ".join(f"{src} -> {dst}: {n}" for (src, dst), n in sorted(census.casts.items()))
    print(f"dtype-changing copies per step: {casts or 'none'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        autocast_dtype(args.precision, "cpu")
        sampler = Sampler.from_strategy(args.sample_strategy)
        config = resolve_config_file(args.config_file)
        torch.manual_seed(0)
        model = build_model(config)
    except (ValueError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model.set_inference_options(args.precision)
    image, trimap, noise = _inputs(args.size)
    padded = "x".join(map(str, padded_size(args.size, args.size, model.size_divisibility)))
    print(
        f"{config.stem} {args.size}x{args.size} (padded {padded}), {args.sample_strategy}, "
        f"{args.precision}, {torch.get_num_threads()} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    model.sample(image, trimap, sampler, noise=noise)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        model.sample(image, trimap, sampler, noise=noise)
        elapsed = time.perf_counter() - start
    print(f"profiled sample: {elapsed:.2f} s (with profiler overhead)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.row_limit))
    if args.census:
        _census(model, image, trimap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
