"""Export of a trained DiffMatte to four ONNX graphs, its manifest, and the check in
onnxruntime (see docs/deploy.md).

    export_model(model, "exported/ViTS", config_name="ViTS")

writes ``backbone.onnx``, ``decoder_prepare.onnx``, ``decoder_step.onnx`` and
``decoder_step_banded.onnx`` (the same step with its full-resolution tail in bands, for large
images; see :mod:`diffmatte.deploy.graphs`) with symbolic batch, height and width, and
``manifest.json``
(everything the runtime :mod:`diffmatte.deploy.runtime` needs besides the graphs).
:func:`check_export` runs the exported graphs through the runtime on given sizes and compares
the alpha with PyTorch's.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffmatte.deploy.compare import synthetic_pair
from diffmatte.deploy.graphs import (
    DEFAULT_BANDS,
    DEFAULT_QUERY_CHUNKS,
    PREPARED_NAMES,
    BackboneGraph,
    DecoderPrepareGraph,
    DecoderStepGraph,
)
from diffmatte.deploy.runtime import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    OnnxPredictor,
)
from diffmatte.diffusion.gaussian import STD_CLIP_MIN
from diffmatte.diffusion.samplers import SIGMA_CLIP_MIN, VARIANCE_CLIP_MIN, Sampler
from diffmatte.diffusion.schedules import GAMMA_CLIP_MIN, LOG_SNR_CLIP_MIN
from diffmatte.inference.tiling import TAIL_HALO
from diffmatte.modeling.backbone.resnet import SpectralNorm
from diffmatte.modeling.backbone.vit import ViT
from diffmatte.utils.fileio import file_sha256

__all__ = [
    "DEFAULT_OPSET",
    "ExportCheckError",
    "check_export",
    "export_model",
    "settle_spectral_norm",
    "unsettled_spectral_norms",
]

DEFAULT_OPSET = 18
GRAPH_FILES = {
    "backbone": "backbone.onnx",
    "decoder_prepare": "decoder_prepare.onnx",
    "decoder_step": "decoder_step.onnx",
    "decoder_step_banded": "decoder_step_banded.onnx",
}
# Sizes of the post-export check: one without padding, one with the padding quirk on both sides
# (77 x 45 -> 96 x 64).
CHECK_SIZES = ((64, 96), (77, 45))


class ExportCheckError(RuntimeError):
    """The exported graphs disagree with PyTorch (or do not run in onnxruntime)."""


@torch.no_grad()
def settle_spectral_norm(model: nn.Module, iterations: int = 30) -> nn.Module:
    """Runs power iterations on every spectral-norm vector pair of a freshly built model.

    A random-weight res34 has random, unconverged ``weight_u`` / ``weight_v``: its sigma
    estimates are tiny and the features overflow to NaN. Trained checkpoints carry converged
    vectors; this gives random-weight exports (tests, benchmarks) the same property.
    """
    for module in model.modules():
        if isinstance(module, SpectralNorm):
            for _ in range(iterations):
                module.power_iteration()
    return model


@torch.no_grad()
def unsettled_spectral_norms(model: nn.Module, fraction: float = 0.5) -> int:
    """How many spectral-norm layers have a stored sigma estimate below ``fraction`` of the
    largest singular value of their kernel (30 power iterations reach 0.95 and more; random
    vectors give about 0.05). Such a model (e.g. a random res34 checkpoint saved before any
    power iteration) has features of 1e7 and more, where float32
    rounding alone moves the alpha by 1e-3: PyTorch's own reference and fast paths disagree
    that much, so onnxruntime cannot be compared with it to 1e-4."""
    count = 0
    for module in model.modules():
        if isinstance(module, SpectralNorm):
            kernel = module.module.weight_bar.reshape(module.module.weight_bar.shape[0], -1)
            largest = torch.linalg.matrix_norm(kernel.double(), ord=2)
            count += bool(module.sigma().detach().double() < fraction * largest)
    return count


def _io_signature(path: Path) -> dict[str, list[dict]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values) -> list[dict]:
        out = []
        for value in values:
            tensor = value.type.tensor_type
            shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            out.append({"name": value.name, "shape": shape, "dtype": dtype})
        return out

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def _export(module: nn.Module, args: tuple, names: tuple, shapes: tuple, path: Path, opset: int):
    import onnx

    inputs, outputs = names
    program = torch.onnx.export(
        module.eval(),
        args,
        dynamo=True,
        input_names=list(inputs),
        output_names=list(outputs),
        dynamic_shapes=shapes,
        opset_version=opset,
        optimize=True,
        external_data=False,
        verbose=False,
    )
    # Intermediate shape annotations are dropped: the exporter can record a symbolic size as
    # the example's constant (Swin's shift mask), which misleads onnxruntime's buffer reuse;
    # onnxruntime infers the shapes itself.
    proto = program.model_proto
    del proto.graph.value_info[:]
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)


def _feature_stride(model: nn.Module) -> int:
    return 2 ** (len(model.decoder.down_blks) + 1)


def _attention_limits(backbone: nn.Module, query_chunks: int) -> dict | None:
    """What the runtime needs to bound the global attention's memory (ViT backbones)."""
    if not isinstance(backbone, ViT):
        return None
    global_blocks = [b for b in backbone.blocks if b.window_size == 0]
    if not global_blocks:
        return None
    return {
        "patch_size": backbone.patch_size,
        "heads": global_blocks[0].attn.num_heads,
        "global_blocks": len(global_blocks),
        "query_chunks": query_chunks,
    }


@torch.no_grad()
def export_model(
    model: nn.Module,
    output_dir: str | os.PathLike,
    config_name: str,
    opset: int = DEFAULT_OPSET,
    query_chunks: int = DEFAULT_QUERY_CHUNKS,
) -> dict:
    """Exports a DiffMatte's four graphs and writes the manifest.

    Args:
        model: a :class:`~diffmatte.modeling.diffmatte.DiffMatte` (not modified; its eval-mode
            function is exported).
        output_dir: created if missing; existing graph files are replaced.
        config_name: recorded in the manifest (e.g. "ViTS").
        opset: ONNX opset of the graphs.
        query_chunks: pieces of the ViT global attention's queries (see
            :class:`~diffmatte.deploy.graphs.BackboneGraph`).

    Returns:
        The manifest (also written to ``output_dir/manifest.json``).
    """
    was_training = model.training
    model.eval()
    try:
        return _export_all(model, Path(output_dir), config_name, opset, query_chunks)
    finally:
        model.train(was_training)


def _export_all(
    model: nn.Module, out: Path, config_name: str, opset: int, query_chunks: int
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    stride = _feature_stride(model)
    channels = 4 if model.backbone_trimap == "value" else 6
    dim = torch.export.Dim
    batch, h, w = dim("batch", min=1, max=64), dim("h", min=1, max=512), dim("w", min=1, max=512)
    # Example: batch 2 and a non-square 64 x 96 input (batch 1 would be specialised).
    x = torch.randn(2, channels, 64, 96)
    backbone = BackboneGraph(model.backbone, query_chunks)
    _export(
        backbone,
        (x,),
        (["backbone_input"], ["features"]),
        ({0: batch, 2: 32 * h, 3: 32 * w},),
        out / GRAPH_FILES["backbone"],
        opset,
    )
    features = backbone(x)
    condition = torch.randn(2, 6, 64, 96)
    feature_dims = {0: batch, 2: (32 // stride) * h, 3: (32 // stride) * w}
    prepare = DecoderPrepareGraph(model.decoder)
    _export(
        prepare,
        (condition, features),
        (["condition", "features"], list(PREPARED_NAMES)),
        ({0: batch, 2: 32 * h, 3: 32 * w}, feature_dims),
        out / GRAPH_FILES["decoder_prepare"],
        opset,
    )
    prepared = prepare(condition, features)
    half = {0: batch, 2: 16 * h, 3: 16 * w}
    mid = {0: batch, 2: (64 // stride) * h, 3: (64 // stride) * w}
    step_args = (torch.randn(2, 1, 64, 96), torch.tensor([1.0, 0.5]), *prepared)
    for key, bands in (("decoder_step", 1), ("decoder_step_banded", DEFAULT_BANDS)):
        _export(
            DecoderStepGraph(model.decoder, bands),
            step_args,
            (["x_t", "t", *PREPARED_NAMES], ["x0"]),
            ({0: batch, 2: 32 * h, 3: 32 * w}, {0: batch}, half, half, mid, mid),
            out / GRAPH_FILES[key],
            opset,
        )
    diffusion = model.diffusion
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config_name,
        "opset": opset,
        "pixel_mean": model.pixel_mean.flatten().tolist(),
        "pixel_std": model.pixel_std.flatten().tolist(),
        "backbone_trimap": model.backbone_trimap,
        "padding": {
            "divisibility": model.size_divisibility,
            "rule": "bottom/right zeros after normalisation; if H or W is not a multiple of d, "
            "both grow to side + d - side % d",
        },
        "feature_stride": stride,
        "diffusion": {
            "schedule": diffusion.schedule,
            "scale": diffusion.scale,
            "normalize_variance": bool(diffusion.normalize_variance),
            "gamma_clip_min": GAMMA_CLIP_MIN,
            "log_snr_clip_min": LOG_SNR_CLIP_MIN,
            "std_clip_min": STD_CLIP_MIN,
            "sigma_clip_min": SIGMA_CLIP_MIN,
            "variance_clip_min": VARIANCE_CLIP_MIN,
        },
        "default_strategy": model.sampler.strategy,
        "attention": _attention_limits(model.backbone, backbone.query_chunks),
        "banded_step": {"bands": DEFAULT_BANDS, "halo_rows": TAIL_HALO},
        "graphs": {},
    }
    for key, name in GRAPH_FILES.items():
        path = out / name
        manifest["graphs"][key] = {"file": name, "sha256": file_sha256(path), **_io_signature(path)}
    with tempfile.NamedTemporaryFile("w", dir=out, suffix=".tmp", delete=False) as f:
        json.dump(manifest, f, indent=2)
    os.chmod(f.name, 0o644)
    os.replace(f.name, out / MANIFEST_NAME)
    return manifest


@torch.no_grad()
def check_export(
    model: nn.Module,
    onnx_dir: str | os.PathLike,
    sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
    strategies: Sequence[str] = ("ddim2",),
    seed: int = 0,
    tolerance: float = 1e-4,
) -> float:
    """Runs the exported graphs in onnxruntime and compares the alpha with PyTorch's.

    Args:
        model: the exported DiffMatte.
        onnx_dir: the export's directory.
        sizes: (height, width) of the synthetic test images.
        strategies: sampling strategies to compare.
        seed: noise seed (both sides draw ``torch.randn``-equal noise from it).
        tolerance: largest allowed max |alpha difference|.

    Returns:
        The largest max |alpha difference| seen.

    Raises:
        ExportCheckError: a difference above ``tolerance`` (one-line message).
    """
    from diffmatte.inference.functional import predict_alpha

    model.eval()
    runtime = OnnxPredictor(onnx_dir, max_pixels=None)
    worst = 0.0
    for height, width in sizes:
        image, trimap = synthetic_pair(height, width, seed)
        for strategy in strategies:
            expected = predict_alpha(
                model, image, torch.from_numpy(trimap), Sampler.from_strategy(strategy), seed
            ).alpha
            # Every size through both step graphs: the plain one and the banded one.
            for label, banded_above in (("", None), (" (banded step)", 0)):
                runtime.banded_above_pixels = banded_above
                try:
                    got = runtime.predict(image, trimap, strategy=strategy, seed=seed).alpha
                except Exception as err:  # onnxruntime's own error types
                    first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                    raise ExportCheckError(
                        f"onnxruntime cannot run the exported graphs{label} at "
                        f"{height}x{width}: {first}"
                    ) from None
                diff = float(np.abs(got - expected).max())
                worst = max(worst, diff)
                if not diff <= tolerance:
                    hint = ""
                    if unsettled := unsettled_spectral_norms(model):
                        hint = (
                            f"; {unsettled} spectral-norm layers carry unconverged power-iteration "
                            "vectors (random weights?), which makes float rounding this large "
                            "(--random-weights settles them)"
                        )
                    raise ExportCheckError(
                        f"onnxruntime alpha{label} differs from PyTorch by {diff:.3g} "
                        f"(> {tolerance:g}) at {height}x{width} {strategy}{hint}"
                    )
    return worst
