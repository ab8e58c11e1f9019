#!/usr/bin/env python
"""Before/after timing of the inference optimisations, interleaved in one process.

Each variant adds one optimisation to the previous one; all of them run the same model, weights,
inputs and noise. Runs are interleaved (round 1: every variant once, round 2: every variant
again, ...) so that a change of machine load hits all variants alike. For every (size,
strategy) the tool prints the best and the median time of each variant, its speed-up over the
original-like variant (from the best and from the median times), and its largest alpha
difference to that variant.

Variants (cumulative):
    original-like      attention materialised as in the original (full logits, bias and
                       softmax per head), decoder path of ``sample(fast=False)``: the 7-channel
                       input re-assembled and padded and ``DUNet.forward`` with separate
                       BatchNorm layers at every step
    + chunked SDPA     the backbone's attention through ``F.scaled_dot_product_attention`` in
                       query chunks (the library's attention)
    + decoder cache    ``sample(fast=True)`` in NCHW: BatchNorm folded, step-independent work
                       cached, in-place operations; up-block shortcuts as in ``forward``
    + low-res upsample up-block shortcuts computed at the input's resolution (``UpsampleConv``)
    + channels-last    maps in channels-last memory format: the library's default path

Example:
    python tools/benchmark_variants.py --threads 2 --sizes 512 1024 --strategies ddim1 ddim10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator, Sequence

import torch

import diffmatte.modeling.backbone.vit as vit
from diffmatte.config import ConfigError
from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.cli import add_config_argument, add_overrides_argument
from diffmatte.engine.predictor import build_model, resolve_config_file
from diffmatte.utils.fileio import atomic_write_text

VARIANTS = (
    # name, materialised attention, fast path, low-res upsample conv, channels-last
    ("original-like", True, False, False, False),
    ("+ chunked SDPA", False, False, False, False),
    ("+ decoder cache", False, True, False, False),
    ("+ low-res upsample", False, True, True, False),
    ("+ channels-last", False, True, True, True),
)


def _materialised_attention(q, k, v, rel_pos_h, rel_pos_w, q_size, k_size, scale, *_):
    return vit.attention_reference(q, k, v, rel_pos_h, rel_pos_w, q_size, k_size, scale)


@contextlib.contextmanager
def variant_settings(
    model: torch.nn.Module, materialised: bool, low_res_upsample: bool, channels_last: bool
) -> Iterator[None]:
    """Applies one variant's settings to ``model`` (and the ViT attention) for a block."""
    decoder = model.decoder
    saved = (vit.rel_pos_attention, decoder.low_res_upsample, decoder.channels_last)
    if materialised:
        vit.rel_pos_attention = _materialised_attention
    decoder.low_res_upsample, decoder.channels_last = low_res_upsample, channels_last
    try:
        yield
    finally:
        vit.rel_pos_attention, decoder.low_res_upsample, decoder.channels_last = saved


def compare(
    model: torch.nn.Module, size: int, strategy: str, rounds: int, seed: int = 0
) -> list[dict]:
    """Times every variant ``rounds`` times, interleaved, after one untimed warm-up round."""
    sampler = Sampler.from_strategy(strategy)
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, size, size, generator=gen)
    trimap = torch.tensor([0.0, 0.5, 1.0])[torch.randint(0, 3, (1, 1, size, size), generator=gen)]
    noise = torch.randn(1, 1, size, size, generator=gen)
    times: dict[str, list[float]] = {name: [] for name, *_ in VARIANTS}
    alphas: dict[str, torch.Tensor] = {}
    for round_index in range(rounds + 1):
        for name, materialised, fast, low_res, channels_last in VARIANTS:
            with variant_settings(model, materialised, low_res, channels_last):
                tic = time.perf_counter()
                alpha = model.sample(image, trimap, sampler, noise=noise, fast=fast).alpha
                elapsed = time.perf_counter() - tic
            if round_index == 0:
                alphas[name] = alpha
            else:
                times[name].append(elapsed)
            print(f"{size} {strategy} round {round_index} {name}: {elapsed:.2f} s", file=sys.stderr)
    base_name = VARIANTS[0][0]
    base_best, base_median = min(times[base_name]), statistics.median(times[base_name])
    records = []
    for name, *_ in VARIANTS:
        best, median = min(times[name]), statistics.median(times[name])
        records.append(
            {
                "size": size,
                "strategy": strategy,
                "variant": name,
                "best_s": best,
                "median_s": median,
                "speedup_best": base_best / best,
                "speedup_median": base_median / median,
                "max_abs_diff": float((alphas[name] - alphas[base_name]).abs().max()),
                "times_s": times[name],
            }
        )
    return records


def format_table(records: list[dict]) -> str:
    lines = [
        "| size | strategy | variant | best s | median s | x (best) | x (median) | max abs diff |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
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
        if not hasattr(model.decoder, "low_res_upsample"):
            raise ValueError(f"{args.config_file}: the decoder has no cached inference path")
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
