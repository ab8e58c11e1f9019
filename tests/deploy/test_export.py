"""ONNX export of a tiny random-weight ViT DiffMatte and the torch-free runtime against PyTorch."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from diffmatte.deploy.export import check_export  # noqa: E402
from diffmatte.deploy.graphs import BackboneGraph  # noqa: E402
from diffmatte.deploy.runtime import (  # noqa: E402
    ExportFormatError,
    InputTooLargeError,
    OnnxPredictor,
)
from diffmatte.diffusion.samplers import Sampler  # noqa: E402
from diffmatte.inference.functional import build_model, predict_alpha  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO_ROOT / "tests" / "configs" / "tiny_vit.py"

pytestmark = pytest.mark.usefixtures("one_thread")


def inputs(height, width, seed=3):
    rng = np.random.default_rng(seed)
    image = rng.random((height, width, 3), dtype=np.float32)
    trimap = np.full((height, width), 0.5, np.float32)
    trimap[: height // 5] = 0.0
    trimap[:, -(width // 6) :] = 1.0
    return image, trimap


def test_manifest_describes_the_graphs(tiny_export):
    _, out, manifest = tiny_export
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["config"] == "tiny_vit" and manifest["opset"] == 18
    assert manifest["pixel_mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert manifest["padding"]["divisibility"] == 32 and manifest["backbone_trimap"] == "value"
    assert manifest["diffusion"]["scale"] == 0.2 and manifest["diffusion"]["normalize_variance"]
    assert manifest["default_strategy"] == "ddpm1"
    for graph in manifest["graphs"].values():
        digest = hashlib.sha256((out / graph["file"]).read_bytes()).hexdigest()
        assert graph["sha256"] == digest
    assert set(manifest["graphs"]) == {
        "backbone",
        "decoder_prepare",
        "decoder_step",
        "decoder_step_banded",
    }
    for key in ("decoder_step", "decoder_step_banded"):
        step = manifest["graphs"][key]
        names = [value["name"] for value in step["inputs"]]
        assert names == ["x_t", "t", "cond_conv1", "cond_shortcut", "mid_activated", "mid_shortcut"]
        x_t = step["inputs"][0]["shape"]
        assert x_t[1] == 1 and all(isinstance(d, str) for d in (x_t[0], x_t[2], x_t[3]))
    assert manifest["banded_step"] == {"bands": 8, "halo_rows": 2}
    backbone = manifest["graphs"]["backbone"]
    assert backbone["outputs"][0]["name"] == "features"
    assert backbone["inputs"][0]["shape"][1] == 4
    assert manifest["attention"] == {
        "patch_size": 16,
        "heads": 2,
        "global_blocks": 1,
        "query_chunks": 16,
    }


@pytest.mark.parametrize("size", [(32, 32), (45, 77), (64, 160), (290, 100)])
@pytest.mark.parametrize("strategy", ["ddim1", "ddim4", "ddpm3"])
@pytest.mark.parametrize("banded", [False, True], ids=["step", "banded_step"])
def test_runtime_alpha_equals_pytorch(tiny_export, size, strategy, banded):
    model, out, _ = tiny_export
    image, trimap = inputs(*size)
    expected = predict_alpha(
        model,
        image,
        torch.from_numpy(trimap),
        Sampler.from_strategy(strategy),
        seed=11,
        return_trajectory=True,
    )
    # 290 x 100 pads to 320 x 128: the banded step's 8 bands of 10 quarter-resolution rows.
    runtime = OnnxPredictor(out, banded_above_pixels=0 if banded else None)
    got = runtime.predict(image, trimap, strategy, seed=11, return_trajectory=True)
    assert got.alpha.shape == size and got.alpha.dtype == np.float32
    assert np.abs(got.alpha - expected.alpha).max() <= 1e-4
    assert len(got.trajectory) == len(expected.trajectory)
    for step_got, step_expected in zip(got.trajectory, expected.trajectory, strict=True):
        assert np.abs(step_got - step_expected).max() <= 1e-4
    # Known regions forced, the unknown band really predicted.
    assert (got.alpha[trimap == 0] == 0).all() and (got.alpha[trimap == 1] == 1).all()
    assert got.alpha[trimap == 0.5].std() > 0


def test_backbone_graph_has_dynamic_batch(tiny_export):
    model, out, _ = tiny_export
    session = ort.InferenceSession(str(out / "backbone.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 4, 96, 224)
    with torch.no_grad():
        expected = model.backbone(x).numpy()
        assert np.abs(BackboneGraph(model.backbone)(x).numpy() - expected).max() < 1e-5
    (got,) = session.run(None, {"backbone_input": x.numpy()})
    assert got.shape == expected.shape == (3, 32, 6, 14)
    assert np.abs(got - expected).max() < 1e-4


def test_uint8_trimap_progress_and_default_strategy(tiny_export):
    model, out, _ = tiny_export
    image, levels = inputs(40, 50)
    gray = np.select([levels == 0, levels == 1], [0, 255], 128).astype(np.uint8)
    calls = []
    runtime = OnnxPredictor(out)
    got = runtime.predict(image, gray, progress=lambda step, steps: calls.append((step, steps)))
    expected = predict_alpha(model, image, torch.from_numpy(levels), None, seed=8282)
    assert calls == [(1, 1)]  # the config's ddpm1
    assert np.abs(got.alpha - expected.alpha).max() <= 1e-4


def test_check_export_passes_and_reports_mismatch(tiny_export):
    model, out, _ = tiny_export
    assert check_export(model, out, sizes=((32, 64),), strategies=("ddim1",)) <= 1e-4
    other = build_model(TINY_CONFIG)  # different random weights
    from diffmatte.deploy.export import ExportCheckError

    with pytest.raises(ExportCheckError, match="differs from PyTorch by .* at 32x64 ddim1"):
        check_export(other, out, sizes=((32, 64),), strategies=("ddim1",))


def test_runtime_refuses_inputs_beyond_the_pixel_bound(tiny_export):
    _, out, _ = tiny_export
    runtime = OnnxPredictor(out, max_pixels=64 * 64)
    runtime.predict(*inputs(64, 64), "ddim1")
    runtime.predict(*inputs(33, 60), "ddim1")  # padded to 64 x 64
    with pytest.raises(
        InputTooLargeError,
        match=r"image 65x64 \(padded 96x96, 0.01 Mi pixels\) exceeds the ONNX runtime's limit of "
        r"0.00 Mi pixels .*; use the PyTorch backend",
    ):
        runtime.predict(*inputs(65, 64), "ddim1")
    OnnxPredictor(out, max_pixels=None).predict(*inputs(65, 64), "ddim1")


def test_corrupt_or_missing_export_is_reported(tiny_export, tmp_path):
    _, out, _ = tiny_export
    with pytest.raises(ExportFormatError, match="manifest.json: cannot read"):
        OnnxPredictor(tmp_path)
    for name in ("manifest.json", "backbone.onnx", "decoder_prepare.onnx"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    with pytest.raises(ExportFormatError, match="decoder_step.onnx: graph file missing"):
        OnnxPredictor(tmp_path)
    (tmp_path / "decoder_step.onnx").write_bytes((out / "decoder_step.onnx").read_bytes()[:-1])
    with pytest.raises(ExportFormatError, match="SHA-256 does not match"):
        OnnxPredictor(tmp_path)


RUNTIME_SCRIPT = """
import sys
import numpy as np
from diffmatte.deploy.runtime import OnnxPredictor
image = np.load(sys.argv[2])
trimap = np.load(sys.argv[3])
alpha = OnnxPredictor(sys.argv[1], threads=1).predict(image, trimap, "ddpm2", seed=5).alpha
np.save(sys.argv[4], alpha)
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded
print("torch-free")
"""


def test_runtime_never_imports_torch(tiny_export, tmp_path):
    model, out, _ = tiny_export
    image, trimap = inputs(37, 41)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "trimap.npy", trimap)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            RUNTIME_SCRIPT,
            str(out),
            str(tmp_path / "image.npy"),
            str(tmp_path / "trimap.npy"),
            str(tmp_path / "alpha.npy"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch-free" in result.stdout
    expected = predict_alpha(
        model, image, torch.from_numpy(trimap), Sampler.from_strategy("ddpm2"), seed=5
    ).alpha
    assert np.abs(np.load(tmp_path / "alpha.npy") - expected).max() <= 1e-4


def test_torch_free_timing_command(tiny_export, capsys):
    from diffmatte.deploy import compare

    _, out, _ = tiny_export
    args = ["--onnx-dir", str(out), "--size", "40x50", "--strategy", "ddim2", "--repeats", "2"]
    assert compare.main(args) == 0
    line = capsys.readouterr().out
    assert line.startswith("40x50 ddim2: ") and "peak RSS" in line
    assert compare.main(["--onnx-dir", str(out), "--strategy", "ddim0"]) == 2
    assert "error: invalid sampling strategy" in capsys.readouterr().err


def test_unsettled_spectral_norms_are_detected():
    from diffmatte.deploy.export import settle_spectral_norm, unsettled_spectral_norms

    torch.manual_seed(0)
    model = build_model(REPO_ROOT / "configs" / "res34.py")
    # Fresh power-iteration vectors: sigma estimates far below the kernels' spectral norms.
    assert unsettled_spectral_norms(model) == 32
    assert unsettled_spectral_norms(settle_spectral_norm(model)) == 0
    assert unsettled_spectral_norms(build_model(TINY_CONFIG)) == 0  # no spectral norm at all
