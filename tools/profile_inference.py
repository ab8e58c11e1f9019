#!/usr/bin/env python
"""Where inference time goes in fp32 and bf16: profiler op table, dtype census, interleaved timing.

Builds a config's model with default-initialised weights (``torch.manual_seed(0)``) and a random
``--size`` x ``--size`` image, and runs it as one of the variants of
:data:`diffmatte.inference.benchmark.PRECISION_VARIANTS`: ``fp32`` (the default inference form),
``bf16-autocast`` (the float32 inference form under ``torch.autocast``: every weight cast at every
use) or ``bf16`` (``InferenceOptions(precision="bf16")``: weights cast once, bf16 maps). After
one untimed sample, one sample runs under ``torch.profiler`` and the top ops by self CPU time are
printed; ``--census`` adds one decoder step under :func:`diffmatte.inference.bf16.dtype_census`
(ops by input dtype, casts per step). ``--interleave N`` instead times every variant in N
interleaved rounds (after one warm-up round) and prints each median, its speed-up over fp32 and
its max alpha difference.

    python tools/profile_inference.py --threads 2 --size 512 --variant bf16 --census
    python tools/profile_inference.py --threads 2 --size 1024 --interleave 3

Exit status: 0, or 2 for unusable arguments or bf16 on a CPU that refuses it.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from diffmatte.config import ConfigError
from diffmatte.diffusion.samplers import Sampler
from diffmatte.inference import InferenceOptions
from diffmatte.inference.benchmark import (
    PRECISION_VARIANTS,
    interleaved_times,
    precision_variant,
    step_census,
)
from diffmatte.inference.functional import build_model, resolve_config_file
from diffmatte.modeling.trimap import padded_size
from diffmatte.utils.cpu import bf16_support

HEAVY_OPS = ("conv2d", "conv_transpose2d", "linear", "matmul", "pad", "index_select")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default="configs/ViTS.py")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--sample-strategy", default="ddim10")
    parser.add_argument("--variant", choices=PRECISION_VARIANTS, default="fp32")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--row-limit", type=int, default=15, help="ops shown")
    parser.add_argument("--census", action="store_true", help="dtype census of one step")
    parser.add_argument(
        "--interleave",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="instead of profiling, time every variant in ROUNDS interleaved rounds",
    )
    return parser


def _inputs(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=gen)
    trimap = torch.full((1, 1, size, size), 0.5)
    trimap[..., : size // 4, :] = 0.0
    trimap[..., -size // 4 :, :] = 1.0
    return image, trimap, torch.randn(1, 1, size, size, generator=gen)


def _print_census(census) -> None:
    print("\none decoder step: heavy ops by floating input dtypes")
    for (op, dtypes), calls in sorted(census.ops.items()):
        if op.split(".")[1] in HEAVY_OPS:
            print(f"  {op:40s} {','.join(dtypes):22s} {calls:4d}")
    casts = ", ".join(f"{src} -> {dst}: {n}" for (src, dst), n in sorted(census.casts.items()))
    print(f"dtype-changing copies per step: {casts or 'none'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        if args.variant != "fp32" or args.interleave:
            InferenceOptions(precision="bf16").check_device("cpu")
        sampler = Sampler.from_strategy(args.sample_strategy)
        config = resolve_config_file(args.config_file)
        torch.manual_seed(0)
        model = build_model(config)
    except (ValueError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    image, trimap, noise = _inputs(args.size)
    padded = "x".join(map(str, padded_size(args.size, args.size, model.size_divisibility)))
    print(
        f"{config.stem} {args.size}x{args.size} (padded {padded}), {args.sample_strategy}, "
        f"{torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, bf16 flags {bf16_support().flags or 'none'}"
    )
    if args.interleave:
        runs = {name: precision_variant(model, name) for name in PRECISION_VARIANTS}
        results = interleaved_times(runs, image, trimap, noise, sampler, args.interleave)
        print("| variant | median s | speed-up | max abs d alpha (1/255) |")
        print("|---|---:|---:|---:|")
        for name, (median, speedup, delta) in results.items():
            print(f"| {name} | {median:.3f} | {speedup:.2f} | {delta * 255:.3f} |")
        return 0
    print(f"variant {args.variant}")
    run = precision_variant(model, args.variant)
    with torch.inference_mode():
        run(image, trimap, sampler, noise)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            start = time.perf_counter()
            run(image, trimap, sampler, noise)
            elapsed = time.perf_counter() - start
    print(f"profiled sample: {elapsed:.2f} s (with profiler overhead)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.row_limit))
    if args.census:
        _print_census(step_census(run, image, trimap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
