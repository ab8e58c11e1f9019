"""run_one_image.py and inference.py with --backend onnxruntime against the PyTorch backend."""

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from diffmatte.engine.checkpoint import save_model_weights  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO_ROOT / "tests" / "configs" / "tiny_vit.py"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(tiny_export, tmp_path_factory):
    model, onnx_dir, _ = tiny_export
    weights = save_model_weights(model, tmp_path_factory.mktemp("weights") / "tiny.pth")
    return weights, onnx_dir


@pytest.fixture
def pair(tmp_path):
    """A 45 x 77 image (padded on both sides) and a 0/128/255 trimap."""
    rng = np.random.default_rng(0)
    trimap = np.full((45, 77), 128, np.uint8)
    trimap[:8], trimap[-8:] = 0, 255
    root = tmp_path / "data"
    for folder, name, array in (
        ("merged", "a.png", rng.integers(0, 256, (45, 77, 3), np.uint8)),
        ("trimaps", "a.png", trimap),
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / folder / name), array)
    return root


def test_run_one_image_onnxruntime_equals_pytorch(run_script, exported, pair, tmp_path):
    weights, onnx_dir = exported
    common = ["--image-dir", str(pair / "merged" / "a.png")]
    common += ["--trimap-dir", str(pair / "trimaps" / "a.png"), "--sample-strategy", "ddim3"]
    common += ["--seed", "7", "--config-dir", str(TINY_CONFIG)]
    torch_argv = [*common, "--checkpoint-dir", str(weights), "--device", "cpu"]
    torch_argv += ["--output-dir", str(tmp_path / "t.png"), "--output-npy", str(tmp_path / "t.npy")]
    ort_argv = [*common, "--backend", "onnxruntime", "--onnx-dir", str(onnx_dir)]
    ort_argv += ["--output-dir", str(tmp_path / "o.png"), "--output-npy", str(tmp_path / "o.npy")]
    ort_argv += ["--output-trajectory", str(tmp_path / "steps.png")]
    for argv in (torch_argv, ort_argv):
        result = run_script("run_one_image.py", *argv)
        assert result.returncode == 0, result.stderr
    expected, got = np.load(tmp_path / "t.npy"), np.load(tmp_path / "o.npy")
    assert got.shape == (45, 77) and np.abs(got - expected).max() <= 1e-4
    assert cv2.imread(str(tmp_path / "steps.png"), cv2.IMREAD_GRAYSCALE).shape == (45, 3 * 77)


def test_backend_argument_errors(run_script, exported, pair, tmp_path):
    weights, onnx_dir = exported
    base = ["--image-dir", str(pair / "merged" / "a.png")]
    base += ["--trimap-dir", str(pair / "trimaps" / "a.png"), "--output-dir", str(tmp_path / "x")]
    result = run_script("run_one_image.py", *base, "--backend", "onnxruntime")
    assert result.returncode == 2
    assert result.stderr == (
        "error: --backend onnxruntime needs --onnx-dir (the folder of tools/export_onnx.py)\n"
    )
    result = run_script("run_one_image.py", *base)
    assert result.returncode == 2 and "error: --checkpoint is required" in result.stderr
    argv = [*base, "--backend", "onnxruntime", "--onnx-dir", str(tmp_path / "missing")]
    result = run_script("run_one_image.py", *argv)
    assert result.returncode == 2
    err = result.stderr
    assert err.startswith("error: ") and "manifest.json: cannot read the manifest" in err
    assert err.count("\n") == 1


def test_inference_onnxruntime_equals_pytorch(run_script, exported, pair, tmp_path):
    weights, onnx_dir = exported
    common = ["--data-dir", str(pair), "--sample-strategy", "ddim2", "--seed", "3"]
    torch_argv = [*common, "--config-dir", str(TINY_CONFIG), "--checkpoint-dir", str(weights)]
    torch_argv += ["--device", "cpu", "--inference-dir", str(tmp_path / "t")]
    ort_argv = [*common, "--backend", "onnxruntime", "--onnx-dir", str(onnx_dir)]
    ort_argv += ["--inference-dir", str(tmp_path / "o")]
    for argv in (torch_argv, ort_argv):
        result = run_script("inference.py", *argv)
        assert result.returncode == 0, result.stderr
        assert "1 written" in result.stderr
    expected = cv2.imread(str(tmp_path / "t" / "a.png"), cv2.IMREAD_GRAYSCALE).astype(int)
    got = cv2.imread(str(tmp_path / "o" / "a.png"), cv2.IMREAD_GRAYSCALE).astype(int)
    assert np.abs(got - expected).max() <= 1  # 8-bit rounding of alphas equal to 1e-4


def test_run_one_image_refuses_images_beyond_the_runtime_bound(run_script, exported, tmp_path):
    _, onnx_dir = exported
    # 2100 x 2100 pads to 2112 x 2112: 4.25 Mi pixels, above the default 4 Mi.
    image, trimap = tmp_path / "big.png", tmp_path / "big_trimap.png"
    assert cv2.imwrite(str(image), np.zeros((2100, 2100, 3), np.uint8))
    assert cv2.imwrite(str(trimap), np.full((2100, 2100), 128, np.uint8))
    argv = ["--image-dir", str(image), "--trimap-dir", str(trimap), "--backend", "onnxruntime"]
    argv += ["--onnx-dir", str(onnx_dir), "--output-dir", str(tmp_path / "out.png")]
    result = run_script("run_one_image.py", *argv)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "image 2100x2100 (padded 2112x2112, 4.25 Mi pixels) exceeds" in result.stderr
    assert "limit of 4.00 Mi pixels" in result.stderr
    assert not (tmp_path / "out.png").exists()
