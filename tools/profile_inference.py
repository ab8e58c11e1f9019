#!/usr/bin/env python
"""Where inference time goes in fp32 and bf16: profiler op table, dtype census, interleaved timing.

Builds a config's model with default-initialised weights (``torch.manual_seed(0)``) and a random
``--size`` x ``--size`` image, and runs it as one of three variants: ``fp32`` (the default path),
``bf16-autocast`` (the same under ``torch.autocast``, as ``--precision bf16`` runs today) or
``bf16-precast`` (the decoder's folded cache cast to bf16 once per image with
:func:`diffmatte.inference.bf16.cast_floating`, then autocast). After one untimed sample, one
sample runs under ``torch.profiler`` and the top ops by self CPU time are printed; ``--census``
adds one decoder step under :func:`diffmatte.inference.bf16.dtype_census` (ops by input dtype,
casts per step). ``--interleave N`` instead times all three variants in N interleaved rounds (after
one warm-up round) and prints each median, its speed-up over fp32 and its max alpha difference.

    python tools/profile_inference.py --threads 2 --size 512 --variant bf16-autocast --census
    python tools/profile_inference.py --threads 2 --size 1024 --interleave 3

Exit status: 0, or 2 for unusable arguments or bf16 on a CPU that refuses it.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator

import torch
from diffmatte.engine.predictor import build_model, resolve_config_file
from torch.profiler import ProfilerActivity, profile

from diffmatte.config import ConfigError
from diffmatte.diffusion.samplers import Sampler
from diffmatte.inference.bf16 import cast_floating, dtype_census
from diffmatte.modeling.diffmatte import autocast_dtype
from diffmatte.modeling.trimap import padded_size
from diffmatte.utils.cpu import bf16_support

# fp32: the default path; bf16-autocast: the same under torch.autocast (every weight cast at every
# step); bf16-precast: the decoder's folded cache cast to bf16 once per image, then autocast.
VARIANTS = ("fp32", "bf16-autocast", "bf16-precast")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default="configs/ViTS.py")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--sample-strategy", default="ddim10")
    parser.add_argument("--variant", choices=VARIANTS, default="fp32", help="what to profile")
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


def _census(model: torch.nn.Module, image: torch.Tensor, trimap: torch.Tensor) -> None:
    """One decoder step (after the per-image work) under the dtype census."""
    with torch.inference_mode():
        denoise = model._fast_denoiser(image, trimap)
        x_t, t = torch.randn_like(image[:, :1]), torch.full((1,), 0.5)
        _, census = dtype_census(denoise, x_t, t)
    print("\none decoder step: heavy ops by floating input dtypes")
    for (op, dtypes), calls in sorted(census.ops.items()):
        if op.split(".")[1] in ("conv2d", "conv_transpose2d", "linear", "matmul", "pad"):
            print(f"  {op:40s} {','.join(dtypes):22s} {calls:4d}")
    casts = ", ".join(f"{src} -> {dst}: {n}" for (src, dst), n in sorted(census.casts.items()))
    print(f"dtype-changing copies per step: {casts or 'none'}")


@contextlib.contextmanager
def variant(model: torch.nn.Module, name: str) -> Iterator[None]:
    """Runs the model as one of :data:`VARIANTS` inside the block."""
    precision = "fp32" if name == "fp32" else "bf16"
    model.set_inference_options(precision)
    prepare = model.decoder.prepare
    if name == "bf16-precast":

        def prepare_cast(*prepare_args, **prepare_kwargs):
            return cast_floating(prepare(*prepare_args, **prepare_kwargs), torch.bfloat16)

        model.decoder.prepare = prepare_cast
    try:
        yield
    finally:
        model.set_inference_options("fp32")
        vars(model.decoder).pop("prepare", None)


def interleaved(model, image, trimap, noise, sampler, rounds: int) -> None:
    """Median time of each variant over interleaved rounds, and its max |Δα| to float32."""
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    alphas = {}
    for _ in range(rounds + 1):  # the first round warms up
        for name in VARIANTS:
            with variant(model, name):
                start = time.perf_counter()
                alphas[name] = model.sample(image, trimap, sampler, noise=noise).alpha
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["fp32"][1:])
    print("| variant | median s | speed-up | max abs d alpha (1/255) |")
    print("|---|---:|---:|---:|")
    for name in VARIANTS:
        median = statistics.median(times[name][1:])
        delta = (alphas[name] - alphas["fp32"]).abs().max().item() * 255
        print(f"| {name} | {median:.3f} | {base / median:.2f} | {delta:.3f} |")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        if args.variant != "fp32" or args.interleave:
            autocast_dtype("bf16", "cpu")
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
        interleaved(model, image, trimap, noise, sampler, args.interleave)
        return 0
    print(f"variant {args.variant}")
    with variant(model, args.variant):
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
