#!/usr/bin/env python
"""Inference benchmark of a DiffMatte config: latency, throughput, peak memory, FLOPs, % of peak.

Random weights and inputs; the columns are described in :mod:`diffmatte.inference.benchmark`:

    python tools/benchmark.py --threads 2 --sizes 512 1024 --strategies ddim1 ddim10
    /usr/bin/time -v python tools/benchmark.py --sizes 2048 --strategies ddim10 --repeats 1 \\
        --warmup 0 --no-flops
    python tools/benchmark.py --device cuda --precision fp16 --batch-size 4 --cuda-graph --json -
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from diffmatte.config import ConfigError
from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.cli import (
    add_config_argument,
    add_heap_reuse_argument,
    add_overrides_argument,
    apply_heap_reuse,
    inference_options,
)
from diffmatte.inference import benchmark, build_inference_model
from diffmatte.inference.functional import build_model, resolve_config_file, resolve_device
from diffmatte.inference.options import PRECISIONS
from diffmatte.utils.fileio import atomic_write_text
from diffmatte.utils.rng import check_seed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark DiffMatte inference (random weights and inputs).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_argument(parser, default="configs/ViTS.py")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--strategies", nargs="+", default=["ddim1", "ddim10"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32")
    parser.add_argument("--batch-size", type=int, default=1, help="images per sample() call")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per case")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    for flag, what in (
        ("--reference", "time the straightforward path (DiffMatte.sample), not the fast one"),
        ("--compile", "torch.compile the decoder step"),
        ("--cuda-graph", "replay the decoder step from a CUDA graph"),
        ("--no-flops", "skip the fvcore counts"),
        ("--isolate", "run each (size, strategy) in its own process and report its peak RSS"),
    ):
        parser.add_argument(flag, action="store_true", help=what)
    parser.add_argument(
        "--backend",
        choices=("pytorch", "onnxruntime"),
        default="pytorch",
        help="onnxruntime: export the model and time both backends side by side (interleaved)",
    )
    add_heap_reuse_argument(parser)
    parser.add_argument("--peak-seconds", type=float, default=2.0, help="matmul peak duration")
    parser.add_argument("--json", metavar="PATH", help="also write results as JSON ('-': stdout)")
    add_overrides_argument(parser)
    parser.add_argument("--case-only", action="store_true", help=argparse.SUPPRESS)  # isolate
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        strategies = [Sampler.from_strategy(s).strategy for s in args.strategies]
        check_seed(args.seed)
        device = resolve_device(args.device)
        if args.repeats < 1 or args.warmup < 0:
            raise ValueError("--repeats must be >= 1, --warmup >= 0")
        options = inference_options(args).replace(reference=args.reference)
        options.check_device(device)
        model = build_model(resolve_config_file(args.config_file), args.opts, device)
    except (ValueError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.backend == "onnxruntime":
        from diffmatte.deploy.compare import format_rows, side_by_side

        timing = (args.threads, args.repeats, args.warmup)
        rows = side_by_side(args.config_file, args.sizes, strategies, *timing, overrides=args.opts)
        print(format_rows(rows))
        return 0
    inference_model = build_inference_model(model, options)
    heap_reuse = apply_heap_reuse(args, device)
    info = {"config": str(args.config_file), "device": benchmark.device_name(device)}
    info.update(precision=args.precision, batch_size=args.batch_size, torch=torch.__version__)
    info.update(path="reference" if args.reference else "fast", threads=torch.get_num_threads())
    info["heap_reuse"] = heap_reuse
    timing = (args.batch_size, args.warmup, args.repeats, args.seed)
    if args.case_only:
        record = benchmark.run_case(inference_model, args.sizes[0], strategies[0], device, *timing)
        json.dump({"info": info, "results": [record]}, sys.stdout)
        return 0
    info["matmul_peak_gflops"] = benchmark.matmul_peak_gflops(device, args.peak_seconds)
    results = []  # one record per (size, strategy), printed as it comes
    for size in args.sizes:
        counts = {} if args.no_flops else benchmark.count_macs(model, size)
        for strategy in strategies:
            if args.isolate:
                command = benchmark.case_command(__file__, args, size, strategy)
                record = benchmark.run_isolated(command, cpu=device.type != "cuda")
            else:
                record = benchmark.run_case(inference_model, size, strategy, device, *timing)
            if counts:
                peak = info["matmul_peak_gflops"]
                record = benchmark.add_flop_figures(record, counts, args.reference, peak)
            results.append(record)
            print(benchmark.format_table(results[-1:]).splitlines()[-1], file=sys.stderr)

    out = sys.stderr if args.json == "-" else sys.stdout
    memory = "max allocated" if device.type == "cuda" else "peak RSS"
    print(
        f"{info['config']} on {info['device']}, {info['precision']}, batch {info['batch_size']}, "
        f"{info['path']} path; float32 matmul peak {info['matmul_peak_gflops']:.1f} GFLOP/s; "
        f"peak memory = {memory}{'; heap reuse on' if heap_reuse else ''}",
        file=out,
    )
    print("\n".join([benchmark.format_table(results), *benchmark.step_ratios(results)]), file=out)
    if args.json:
        payload = json.dumps({"info": info, "results": results}, indent=2)
        if args.json == "-":
            print(payload)
        else:
            atomic_write_text(args.json, payload + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
