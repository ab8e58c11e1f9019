#!/usr/bin/env python
"""Before/after timing of the inference optimisations, interleaved in one process.

Each variant is an InferenceOptions adding one optimisation to the previous one; all run the same
model, weights, inputs and noise, each through its inference form built before timing. Runs are
interleaved (every variant once per round) so that changes of machine load hit all variants
alike. For every (size, strategy) it prints each variant's best and median time, its speed-up over
the original-like variant (best and median) and its largest alpha difference to that variant.

Variants (cumulative):
    original-like      attention="materialised" (full logits, bias and softmax per head, as the
                       original), cached_decoder=False (the 7-channel input re-assembled and the
                       trained DUNet, BatchNorm layers included, at every step)
    + chunked SDPA     attention="chunked": ``F.scaled_dot_product_attention`` in query chunks
    + decoder cache    cached_decoder=True in NCHW: BatchNorm folded, step-independent work cached
    + low-res upsample low_res_upsample=True: up-block shortcuts at the input's resolution
    + channels-last    channels_last=True: the default options

Example:
    python tools/benchmark_variants.py --threads 2 --sizes 512 1024 --strategies ddim1 ddim10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence

import torch

from diffmatte.config import ConfigError
from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.cli import add_config_argument, add_overrides_argument
from diffmatte.inference import InferenceOptions, build_inference_model
from diffmatte.inference.functional import build_model, resolve_config_file
from diffmatte.utils.fileio import atomic_write_text

_NCHW = {"low_res_upsample": False, "channels_last": False}
VARIANTS = (
    ("original-like", InferenceOptions(attention="materialised", cached_decoder=False, **_NCHW)),
    ("+ chunked SDPA", InferenceOptions(cached_decoder=False, **_NCHW)),
    ("+ decoder cache", InferenceOptions(**_NCHW)),
    ("+ low-res upsample", InferenceOptions(channels_last=False)),
    ("+ channels-last", InferenceOptions()),
)


def compare(model: torch.nn.Module, size: int, strategy: str, rounds: int, seed=0) -> list[dict]:
    """Times every variant ``rounds`` times, interleaved, after one untimed warm-up round."""
    sampler = Sampler.from_strategy(strategy)
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, size, size, generator=gen)
    trimap = torch.tensor([0.0, 0.5, 1.0])[torch.randint(0, 3, (1, 1, size, size), generator=gen)]
    noise = torch.randn(1, 1, size, size, generator=gen)
    forms = {name: build_inference_model(model, options) for name, options in VARIANTS}
    times: dict[str, list[float]] = {name: [] for name, _ in VARIANTS}
    alphas: dict[str, torch.Tensor] = {}
    for round_index in range(rounds + 1):
        for name, _ in VARIANTS:
            tic = time.perf_counter()
            alpha = forms[name].sample(image, trimap, sampler, noise=noise).alpha
            elapsed = time.perf_counter() - tic
            if round_index == 0:
                alphas[name] = alpha
            else:
                times[name].append(elapsed)
            print(f"{size} {strategy} round {round_index} {name}: {elapsed:.2f} s", file=sys.stderr)
    base = VARIANTS[0][0]
    base_best, base_median = min(times[base]), statistics.median(times[base])
    records = []
    for name, options in VARIANTS:
        best, median = min(times[name]), statistics.median(times[name])
        records.append(
            {
                "size": size,
                "strategy": strategy,
                "variant": name,
                "options": dataclasses.asdict(options),
                "best_s": best,
                "median_s": median,
                "speedup_best": base_best / best,
                "speedup_median": base_median / median,
                "max_abs_diff": float((alphas[name] - alphas[base]).abs().max()),
                "times_s": times[name],
            }
        )
    return records


def format_table(records: list[dict]) -> str:
    columns = "size | strategy | variant | best s | median s | x (best) | x (median) | max abs diff"
    lines = [f"| {columns} |", "|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in records:
        lines.append(
            f"| {r['size']} | {r['strategy']} | {r['variant']} | {r['best_s']:.2f} | "
            f"{r['median_s']:.2f} | {r['speedup_best']:.2f} | {r['speedup_median']:.2f} | "
            f"{r['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Interleaved before/after timing of the inference optimisations.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_argument(parser, default="configs/ViTS.py")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--strategies", nargs="+", default=["ddim1", "ddim10"])
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of every variant")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the records as JSON")
    add_overrides_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        strategies = [Sampler.from_strategy(s).strategy for s in args.strategies]
        if args.rounds < 1:
            raise ValueError("--rounds must be >= 1")
        model = build_model(resolve_config_file(args.config_file), args.opts, torch.device("cpu"))
    except (ValueError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    records = []
    for size in args.sizes:
        for strategy in strategies:
            records += compare(model, size, strategy, args.rounds, args.seed)
    print(
        f"{args.config_file}, CPU float32, {torch.get_num_threads()} threads, "
        f"{args.rounds} interleaved rounds; x = original-like time / variant time"
    )
    print(format_table(records))
    if args.json:
        atomic_write_text(args.json, json.dumps({"records": records}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
