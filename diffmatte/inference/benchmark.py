"""Inference benchmark: latency, throughput, peak memory, FLOPs and % of peak of a model.

``tools/benchmark.py`` is the command line. For every (image size, sampling strategy) pair
:func:`run_case` times ``DiffMatte.sample`` on random inputs (speed does not depend on the
values) and reports:

- the median latency per image over the timed runs after untimed warm-up runs, and images per
  second (``batch_size`` images of the same size per call);
- peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on the CPU the peak resident set
  size (VmHWM, reset before each case through ``/proc/self/clear_refs``; :func:`run_isolated`
  runs a case in its own process and reports its ``ru_maxrss``, which includes everything the
  process ever held: interpreter, libraries, weights, inputs);
- FLOPs counted by fvcore (:func:`count_macs`), which counts one multiply-add as one "flop",
  i.e. **MACs**: the backbone (once per image), one full decoder step (``DUNet.forward``) and
  the work executed per image by the fast path (backbone, ``CachedDUNet.prepare`` once,
  ``CachedDUNet.step`` per step; attention counted as ``L_q * L_k * (d_qk + d_v)`` MACs per
  head);
- the achieved float32 rate (2 FLOPs per executed MAC / latency) as a fraction of the machine's
  float32 matmul peak (:func:`matmul_peak_gflops`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from diffmatte.diffusion.samplers import Sampler
from diffmatte.inference.bf16 import DtypeCensus, dtype_census
from diffmatte.inference.cached_decoder import CachedDUNet
from diffmatte.inference.model import InferenceModel, build_inference_model
from diffmatte.inference.options import InferenceOptions
from diffmatte.modeling.decoder import DUNet
from diffmatte.modeling.trimap import (
    backbone_input,
    decoder_condition,
    pad_bottom_right,
    padded_size,
)

__all__ = [
    "COLUMNS",
    "PRECISION_VARIANTS",
    "PrecisionVariant",
    "add_flop_figures",
    "case_command",
    "count_macs",
    "device_name",
    "format_table",
    "interleaved_times",
    "matmul_peak_gflops",
    "precision_variant",
    "run_case",
    "run_isolated",
    "step_census",
    "step_ratios",
]

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
    def __init__(self, decoder: CachedDUNet) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, cond: Tensor, features: Tensor) -> tuple[Tensor, ...]:
        cache = self.decoder.prepare(cond, features)
        return cache.cond_conv1, cache.cond_shortcut, cache.mid_activated, cache.mid_shortcut


class _CachedStep(nn.Module):
    def __init__(self, decoder: CachedDUNet, cache: object) -> None:
        super().__init__()
        self.decoder = decoder
        self.cache = cache

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.decoder.step(x_t, t, self.cache)


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
        if isinstance(model.decoder, DUNet):
            cached = CachedDUNet(model.decoder)
            counts["prepare"] = _count(_Prepare(cached), (cond, features))
            cache = cached.prepare(cond, features)
            counts["cached_step"] = _count(_CachedStep(cached, cache), (x_t, t))
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
    model: nn.Module,
    size: int,
    strategy: str,
    device: torch.device,
    batch_size: int = 1,
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
) -> dict:
    """Times ``model.sample`` for one size and strategy on random inputs.

    Args:
        model: the model in its inference form (see :func:`build_inference_model`), on
            ``device``.
        size: side of the square images.
        strategy: "ddimN" / "ddpmN".
        device: where the model runs.
        batch_size: images per ``sample`` call.
        warmup: untimed runs first.
        repeats: timed runs.
        seed: seed of the random inputs.

    Returns:
        ``{"size", "strategy", "latency_s"`` (median per image), ``"images_per_s",
        "peak_memory_mb", "times_s"}``.
    """
    sampler = Sampler.from_strategy(strategy)
    generator = torch.Generator().manual_seed(seed)
    n = batch_size
    image = torch.rand(n, 3, size, size, generator=generator).to(device)
    levels = torch.tensor([0.0, 0.5, 1.0])
    trimap = levels[torch.randint(0, 3, (n, 1, size, size), generator=generator)].to(device)
    noise = torch.randn(n, 1, size, size, generator=generator).to(device)
    _reset_peak_memory(device)
    times = []
    for run in range(warmup + repeats):
        synchronize(device)
        tic = time.perf_counter()
        model.sample(image, trimap, sampler, noise=noise)
        synchronize(device)
        if run >= warmup:
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


def add_flop_figures(
    record: dict, counts: dict[str, float], reference: bool, peak_gflops: float
) -> dict:
    """Adds the MAC counts of :func:`count_macs` to a :func:`run_case` record: backbone, one
    decoder step, the MACs executed per image by the timed path, the achieved GFLOP/s and the
    percentage of the float32 matmul peak. Returns ``record``."""
    steps = Sampler.from_strategy(record["strategy"]).steps
    record["backbone_gmac"] = counts["backbone"]
    record["decoder_step_gmac"] = counts["decoder_step"]
    if "cached_step" in counts and not reference:
        executed = counts["prepare"] + steps * counts["cached_step"]
    else:
        executed = steps * counts["decoder_step"]
    record["executed_gmac"] = counts["backbone"] + executed
    record["gflops"] = 2 * record["executed_gmac"] / record["latency_s"]
    record["percent_of_peak"] = 100 * record["gflops"] / peak_gflops
    return record


def run_isolated(command: list[str], cpu: bool) -> dict:
    """Runs one case in a fresh process; on the CPU its peak memory is that process's
    ``ru_maxrss``.

    Args:
        command: a command that prints ``{"results": [record]}`` as JSON on stdout.
        cpu: the case runs on the CPU (else the record's own CUDA figure is kept).

    Returns:
        The record.

    Raises:
        RuntimeError: the process failed.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"benchmark case failed (exit {process.returncode}): {command}")
    record = json.loads(stdout)["results"][0]
    if cpu:
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


def case_command(script: str, args: argparse.Namespace, size: int, strategy: str) -> list[str]:
    """The command that runs one (size, strategy) case of ``tools/benchmark.py`` (``script``)
    in its own process with the same options (``--isolate``)."""
    command = [sys.executable, script, "--case-only", "--json", "-"]
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


# fp32: the default inference form; bf16-autocast: the same float32 form under torch.autocast
# (every weight cast at every use, as plain autocast around the fast path runs); bf16: the
# inference form with precision "bf16" (weights cast once, bf16 maps).
PRECISION_VARIANTS = ("fp32", "bf16-autocast", "bf16")


@dataclass
class PrecisionVariant:
    """One way of running a model for precision comparisons.

    Attributes:
        form: the inference form that runs.
        autocast: run it under ``torch.autocast(device, torch.bfloat16)``.
    """

    form: InferenceModel
    autocast: bool

    def _context(self) -> contextlib.AbstractContextManager:
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.form.device.type, torch.bfloat16, cache_enabled=False)

    def __call__(self, image: Tensor, trimap: Tensor, sampler: Sampler, noise: Tensor) -> Tensor:
        """(N,1,H,W) float32 alpha of ``form.sample``."""
        with self._context():
            return self.form.sample(image, trimap, sampler, noise=noise).alpha

    def denoiser(self, image: Tensor, trimap: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        """``denoise(x_t, t)`` of one batch (see ``InferenceModel.denoiser``), in this variant."""
        with self._context():
            denoise = self.form.denoiser(image, trimap)

        def step(x_t: Tensor, t: Tensor) -> Tensor:
            with self._context():
                return denoise(x_t, t)

        return step


def precision_variant(model: nn.Module, name: str) -> PrecisionVariant:
    """The variant ``name`` of :data:`PRECISION_VARIANTS` of a trained model (not modified)."""
    if name not in PRECISION_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(PRECISION_VARIANTS)}, got {name!r}")
    options = InferenceOptions(precision="bf16" if name == "bf16" else "fp32")
    return PrecisionVariant(build_inference_model(model, options), autocast=name == "bf16-autocast")


def step_census(run: PrecisionVariant, image: Tensor, trimap: Tensor) -> DtypeCensus:
    """The :func:`~diffmatte.inference.bf16.dtype_census` of one decoder step of ``run`` (after
    the once-per-image work), at t = 0.5."""
    with torch.inference_mode():
        denoise = run.denoiser(image, trimap)
        x_t, t = torch.randn_like(image[:, :1]), torch.full((image.shape[0],), 0.5)
        return dtype_census(denoise, x_t, t)[1]


def interleaved_times(
    runs: dict[str, Callable[[Tensor, Tensor, Sampler, Tensor], Tensor]],
    image: Tensor,
    trimap: Tensor,
    noise: Tensor,
    sampler: Sampler,
    rounds: int,
) -> dict[str, tuple[float, float, float]]:
    """Times every run ``rounds`` times, interleaved (each once per round), after one untimed
    warm-up round, so that changes of machine load hit all alike.

    Args:
        runs: ``run(image, trimap, sampler, noise) -> alpha``; the first is the baseline.

    Returns:
        For each run: median seconds, speed-up of the median over the baseline's, and the max
        ``|Δα|`` against the baseline.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    alphas = {}
    with torch.inference_mode():
        for round_index in range(rounds + 1):
            for name, run in runs.items():
                start = time.perf_counter()
                alphas[name] = run(image, trimap, sampler, noise)
                if round_index:
                    times[name].append(time.perf_counter() - start)
    base = next(iter(runs))
    base_median = statistics.median(times[base])
    return {
        name: (
            statistics.median(times[name]),
            base_median / statistics.median(times[name]),
            float((alphas[name] - alphas[base]).abs().max()),
        )
        for name in runs
    }
