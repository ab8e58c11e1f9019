#!/usr/bin/env python
"""Inference benchmark of a DiffMatte config: latency, throughput, peak memory, FLOPs, % of peak.

For every (image size, sampling strategy) pair it times ``DiffMatte.sample`` on random inputs
with random weights (speed does not depend on the values) and reports:

- the median latency per image over ``--repeats`` timed runs after ``--warmup`` untimed ones,
  and images per second (``--batch-size`` images of the same size per call);
- peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on the CPU the peak resident set
  size (VmHWM, reset before each case through ``/proc/self/clear_refs``; with ``--isolate``
  every case runs in its own process and its ``ru_maxrss`` is reported, which includes
  everything the process ever held: interpreter, libraries, weights, inputs);
- FLOPs counted by fvcore, which counts one multiply-add as one "flop", i.e. **MACs**: the
  backbone (once per image), one full decoder step (``DUNet.forward``, comparable to the figures
  of TRAINING_RECIPE.md §8) and the work executed per image by the fast path (backbone,
  ``DUNet.prepare`` once, ``DUNet.forward_cached`` per step; attention counted as
  ``L_q * L_k * (d_qk + d_v)`` MACs per head);
- the achieved float32 rate (2 FLOPs per executed MAC / latency) as a fraction of the machine's
  float32 matmul peak, measured in the same run with a large ``torch.mm``.

Examples:
    python tools/benchmark.py --threads 2 --sizes 512 1024 --strategies ddim1 ddim10
    /usr/bin/time -v python tools/benchmark.py --sizes 2048 --strategies ddim10 --repeats 1 \\
        --warmup 0 --no-flops
    python tools/benchmark.py --device cuda --precision fp16 --batch-size 4 --cuda-graph --json -
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from diffmatte.config import ConfigError
from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.cli import (
    add_config_argument,
    add_heap_reuse_argument,
    add_overrides_argument,
    apply_heap_reuse,
)
from diffmatte.engine.predictor import build_model, resolve_config_file, resolve_device
from diffmatte.modeling.diffmatte import PRECISIONS, autocast_dtype
from diffmatte.modeling.trimap import (
    backbone_input,
    decoder_condition,
    pad_bottom_right,
    padded_size,
)
from diffmatte.utils.fileio import atomic_write_text

DEFAULT_SIZES = (512, 1024)
DEFAULT_STRATEGIES = ("ddim1", "ddim10")
COLUMNS = (
    ("size", "size", "{}"),
    ("strategy", "strategy", "{}"),
    ("latency_s", "s/img", "{:.3f}"),
    ("images_per_s", "img/s", "{:.3f}"),
    ("peak_memory_mb", "peak MiB", "{:.0f}"),
    ("backbone_gmac", "backbone GMAC", "{:.4g}"),
    ("decoder_step_gmac", "dec. step GMAC", "{:.4g}"),
    ("executed_gmac", "GMAC/img", "{:.4g}"),
    ("gflops", "GFLOP/s", "{:.1f}"),
    ("percent_of_peak", "% peak", "{:.0f}"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark DiffMatte inference (random weights and inputs).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_argument(parser, default="configs/ViTS.py")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--strategies", nargs="+", default=list(DEFAULT_STRATEGIES))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32")
    parser.add_argument("--batch-size", type=int, default=1, help="images per sample() call")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per case")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reference",
        action="store_true",
        help="time the straightforward path (sample(fast=False)) instead of the fast one",
    )
    parser.add_argument(
        "--backend",
        choices=("pytorch", "onnxruntime"),
        default="pytorch",
        help="onnxruntime: export the model and time PyTorch and onnxruntime side by side "
        "(median s/img of each, interleaved, and their max alpha difference)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the decoder step")
    parser.add_argument(
        "--cuda-graph", action="store_true", help="replay the decoder step from a CUDA graph"
    )
    parser.add_argument("--no-flops", action="store_true", help="skip the fvcore counts")
    add_heap_reuse_argument(parser)
    parser.add_argument(
        "--peak-seconds", type=float, default=2.0, help="duration of the matmul peak measurement"
    )
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="run each (size, strategy) in its own process and report its peak RSS",
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results as JSON ('-': stdout)"
    )
    add_overrides_argument(parser)
    parser.add_argument("--case-only", action="store_true", help=argparse.SUPPRESS)
    return parser


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the platform's description."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, seconds: float = 2.0) -> float:
    """Best float32 ``torch.mm`` rate (GFLOP/s) on square matrices, over about ``seconds``."""
    n = 8192 if device.type == "cuda" else 2048
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=generator)
    b = torch.randn(n, n, device=device, generator=generator)
    out = torch.empty(n, n, device=device)
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the true float32 peak
    try:
        torch.mm(a, b, out=out)
        synchronize(device)
        best, start = float("inf"), time.perf_counter()
        while time.perf_counter() - start < seconds:
            tic = time.perf_counter()
            torch.mm(a, b, out=out)
            synchronize(device)
            best = min(best, time.perf_counter() - tic)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    return 2 * n**3 / best / 1e9


def _sdpa_macs(inputs: list, outputs: list) -> int:
    """fvcore handle: attention costs L_q * L_k * (d_qk + d_v) MACs per batch item and head."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for dim in q[:-2]:
        batch *= dim
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _count(module: nn.Module, inputs: tuple) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of fvcore's jit use
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(module, inputs)
        analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        return analysis.total() / 1e9


class _Prepare(nn.Module):
    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, cond: Tensor, features: Tensor) -> tuple[Tensor, ...]:
        cache = self.decoder.prepare(cond, features)
        return cache.cond_conv1, cache.cond_shortcut, cache.mid_activated, cache.mid_shortcut


class _CachedStep(nn.Module):
    def __init__(self, decoder: nn.Module, cache: object) -> None:
        super().__init__()
        self.decoder = decoder
        self.cache = cache

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.decoder.forward_cached(x_t, t, self.cache)


def count_macs(model: nn.Module, size: int) -> dict[str, float]:
    """fvcore MAC counts (in G) for one square image of side ``size`` (batch 1, float32).

    Returns:
        "backbone", "decoder_step" (full ``decoder.forward``) and, when the decoder has a
        cached step, "prepare" and "cached_step" (what the fast path executes).
    """
    device = model.device
    padded = padded_size(size, size, model.size_divisibility)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    trimap = torch.full((1, 1, size, size), 0.5, device=device)
    image_norm = (image - model.pixel_mean) / model.pixel_std
    backbone_in = pad_bottom_right(
        backbone_input(image_norm, trimap, model.backbone_trimap), padded
    )
    cond = pad_bottom_right(decoder_condition(image_norm, trimap), padded)
    x_t = torch.zeros(1, 1, *padded, device=device)
    t = torch.ones(1, device=device)
    counts = {}
    with torch.no_grad():
        features = model.backbone(backbone_in)
        counts["backbone"] = _count(model.backbone, (backbone_in,))
        x = torch.cat([cond, x_t], dim=1)
        counts["decoder_step"] = _count(model.decoder, (x, t, features))
        if callable(getattr(model.decoder, "prepare", None)):
            counts["prepare"] = _count(_Prepare(model.decoder), (cond, features))
            cache = model.decoder.prepare(cond, features)
            counts["cached_step"] = _count(_CachedStep(model.decoder, cache), (x_t, t))
    return counts


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak resident set size
    except OSError:
        pass


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(
    model: nn.Module, size: int, strategy: str, args: argparse.Namespace, device: torch.device
) -> dict:
    """Times ``model.sample`` for one size and strategy; returns latency, throughput, memory."""
    sampler = Sampler.from_strategy(strategy)
    generator = torch.Generator().manual_seed(args.seed)
    n = args.batch_size
    image = torch.rand(n, 3, size, size, generator=generator).to(device)
    levels = torch.tensor([0.0, 0.5, 1.0])
    trimap = levels[torch.randint(0, 3, (n, 1, size, size), generator=generator)].to(device)
    noise = torch.randn(n, 1, size, size, generator=generator).to(device)
    _reset_peak_memory(device)
    times = []
    for run in range(args.warmup + args.repeats):
        synchronize(device)
        tic = time.perf_counter()
        model.sample(image, trimap, sampler, noise=noise, fast=not args.reference)
        synchronize(device)
        if run >= args.warmup:
            times.append(time.perf_counter() - tic)
    latency = statistics.median(times) / n
    return {
        "size": size,
        "strategy": strategy,
        "latency_s": latency,
        "images_per_s": 1.0 / latency,
        "peak_memory_mb": _peak_memory_mb(device),
        "times_s": times,
    }


def _child_command(args: argparse.Namespace, size: int, strategy: str) -> list[str]:
    command = [sys.executable, os.path.abspath(__file__), "--case-only", "--json", "-"]
    command += ["--config-file", str(args.config_file), "--device", args.device]
    command += ["--sizes", str(size), "--strategies", strategy, "--precision", args.precision]
    command += ["--batch-size", str(args.batch_size), "--repeats", str(args.repeats)]
    command += ["--warmup", str(args.warmup), "--seed", str(args.seed)]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    for flag in ("reference", "compile", "cuda_graph", "heap_reuse"):
        if getattr(args, flag):
            command.append("--" + flag.replace("_", "-"))
    return command + list(args.opts)


def run_isolated(args: argparse.Namespace, size: int, strategy: str) -> dict:
    """Runs one case in a fresh process; its peak memory is that process's ``ru_maxrss``."""
    process = subprocess.Popen(_child_command(args, size, strategy), stdout=subprocess.PIPE)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"benchmark case {size} {strategy} failed (exit {process.returncode})")
    record = json.loads(stdout)["results"][0]
    if not args.device.startswith("cuda"):
        record["peak_memory_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    return record


def format_table(results: list[dict]) -> str:
    """A Markdown table of the result records (missing values as '-')."""
    header = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---:" if key not in ("strategy",) else "---" for key, _, _ in COLUMNS)
    lines = [header, rule + "|"]
    for record in results:
        cells = []
        for key, _, fmt in COLUMNS:
            value = record.get(key)
            cells.append("-" if value is None else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def step_ratios(results: list[dict]) -> list[str]:
    """Latency ratios between strategies of the same size relative to its 1-step strategy."""
    lines = []
    for size in sorted({r["size"] for r in results}):
        rows = {r["strategy"]: r["latency_s"] for r in results if r["size"] == size}
        base = next((s for s in rows if Sampler.from_strategy(s).steps == 1), None)
        if base is None:
            continue
        for strategy, latency in rows.items():
            if strategy != base:
                lines.append(f"{size}: {strategy}/{base} = {latency / rows[base]:.2f}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        strategies = [Sampler.from_strategy(s).strategy for s in args.strategies]
        device = resolve_device(args.device)
        autocast_dtype(args.precision, device)
        if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0:
            raise ValueError("--batch-size and --repeats must be >= 1, --warmup >= 0")
        config_file = resolve_config_file(args.config_file)
        model = build_model(config_file, args.opts, device)
    except (ValueError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.backend == "onnxruntime":
        from diffmatte.deploy.compare import format_rows, side_by_side

        rows = side_by_side(
            config_file,
            args.sizes,
            strategies,
            args.threads,
            args.repeats,
            args.warmup,
            overrides=args.opts,
        )
        print(format_rows(rows))
        return 0
    model.set_inference_options(args.precision, args.compile, args.cuda_graph)
    heap_reuse = apply_heap_reuse(args, device)
    info = {
        "config": str(args.config_file),
        "device": device_name(device),
        "precision": args.precision,
        "batch_size": args.batch_size,
        "path": "reference" if args.reference else "fast",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "heap_reuse": heap_reuse,
    }
    results = []
    if args.case_only:
        results.append(run_case(model, args.sizes[0], strategies[0], args, device))
        json.dump({"info": info, "results": results}, sys.stdout)
        return 0

    info["matmul_peak_gflops"] = matmul_peak_gflops(device, args.peak_seconds)
    for size in args.sizes:
        counts = {} if args.no_flops else count_macs(model, size)
        for strategy in strategies:
            if args.isolate:
                record = run_isolated(args, size, strategy)
            else:
                record = run_case(model, size, strategy, args, device)
            steps = Sampler.from_strategy(strategy).steps
            if counts:
                record["backbone_gmac"] = counts["backbone"]
                record["decoder_step_gmac"] = counts["decoder_step"]
                if "cached_step" in counts and not args.reference:
                    executed = counts["prepare"] + steps * counts["cached_step"]
                else:
                    executed = steps * counts["decoder_step"]
                record["executed_gmac"] = counts["backbone"] + executed
                record["gflops"] = 2 * record["executed_gmac"] / record["latency_s"]
                record["percent_of_peak"] = 100 * record["gflops"] / info["matmul_peak_gflops"]
            results.append(record)
            print(format_table(results[-1:]).splitlines()[-1], file=sys.stderr, flush=True)

    out = sys.stderr if args.json == "-" else sys.stdout
    print(
        f"{info['config']} on {info['device']}, {info['precision']}, batch {info['batch_size']}, "
        f"{info['path']} path; float32 matmul peak {info['matmul_peak_gflops']:.1f} GFLOP/s; "
        f"peak memory = {'max allocated' if device.type == 'cuda' else 'peak RSS'}"
        f"{'; heap reuse on' if heap_reuse else ''}",
        file=out,
    )
    print(format_table(results), file=out)
    for line in step_ratios(results):
        print(line, file=out)
    if args.json:
        payload = json.dumps({"info": info, "results": results}, indent=2)
        if args.json == "-":
            print(payload)
        else:
            atomic_write_text(args.json, payload + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
