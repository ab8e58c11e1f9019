"""inference.py and run_one_image.py run as a user runs them, with a tiny random-weight model.

The folder logic itself is tested in tests/inference/test_folder.py; the failures of both
command lines in tests/test_inference_faults.py.
"""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.checkpoint import load_checkpoint
from diffmatte.inference import InferenceModel, build_inference_model
from diffmatte.inference.functional import build_model, predict_alpha, trimap_to_model
from diffmatte.utils.image_io import read_image

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO_ROOT / "tests" / "configs" / "tiny_vit.py"

pytestmark = pytest.mark.usefixtures("one_thread")


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _trimap(height: int, width: int) -> np.ndarray:
    trimap = np.full((height, width), 128, np.uint8)
    trimap[:4] = 0
    trimap[-4:] = 255
    return trimap


@pytest.fixture
def dataset(tmp_path):
    """Two images of different sizes (one of them JPEG), 0/128/255 trimaps."""
    root = tmp_path / "c1k"
    rng = np.random.default_rng(0)
    for name, (height, width), ext in (("a", (24, 40), "png"), ("b", (32, 20), "jpg")):
        image = rng.integers(0, 256, (height, width, 3), np.uint8)
        _write(root / "merged" / f"{name}.{ext}", image)
        _write(root / "trimaps" / f"{name}.png", _trimap(height, width))
    return root


def _inference_argv(weights, data, out, *extra):
    argv = ["--config-dir", TINY_CONFIG, "--checkpoint-dir", weights]
    return [*argv, "--data-dir", data, "--inference-dir", out, "--device", "cpu", *extra]


def _read_u8(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _loaded(weights: Path) -> InferenceModel:
    """What the scripts run: the loaded model in its inference form (default options)."""
    model = build_model(TINY_CONFIG)
    load_checkpoint(model, weights)
    return build_inference_model(model)


def test_inference_writes_then_resumes(run_script, tiny_weights, dataset, tmp_path):
    out = tmp_path / "pred"
    argv = _inference_argv(tiny_weights, dataset, out, "--sample-strategy", "ddim2", "--seed", "3")
    result = run_script("inference.py", *argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "2 written, 0 skipped, 0 failed"
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]
    # The alphas are exactly those of the library for the same strategy and seed.
    image = read_image(dataset / "merged" / "a.png")
    ddim2 = Sampler.from_strategy("ddim2")
    expected = predict_alpha(
        _loaded(tiny_weights), image, trimap_to_model(_trimap(24, 40)), ddim2, 3
    )
    np.testing.assert_array_equal(_read_u8(out / "a.png"), np.rint(expected.alpha * 255))

    result = run_script("inference.py", *argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[-2] == f"note: 2 outputs already in {out} were kept (--overwrite redoes them)"
    assert lines[-1] == "0 written, 2 skipped, 0 failed"


def test_inference_with_bad_images_exits_1(run_script, tiny_weights, dataset, tmp_path):
    _write(dataset / "merged" / "c.png", np.zeros((24, 40, 3), np.uint8))  # no trimap
    out = tmp_path / "out"
    result = run_script("inference.py", *_inference_argv(tiny_weights, dataset, out), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"error: {dataset / 'merged'}: 1 image(s) without a trimap")
    assert lines[-1] == "2 written, 0 skipped, 1 failed"
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]


def test_inference_as_second_of_two_processes(run_script, tiny_weights, dataset, tmp_path):
    """torchrun's environment for the second of two processes: it writes its share only."""
    out = tmp_path / "out"
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    argv = _inference_argv(tiny_weights, dataset, out)
    result = run_script("inference.py", *argv, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "[rank 1/2] 1 written, 0 skipped, 0 failed"
    assert sorted(os.listdir(out)) == ["b.png"]


def _one_argv(weights, image, trimap, output, *extra):
    argv = ["--config-file", TINY_CONFIG, "--checkpoint-dir", weights, "--device", "cpu"]
    return [*argv, "--image-dir", image, "--trimap-dir", trimap, "--output-dir", output, *extra]


def test_run_one_image_outputs(run_script, tiny_weights, dataset, tmp_path):
    image, trimap = dataset / "merged" / "a.png", dataset / "trimaps" / "a.png"
    out = tmp_path / "out"
    extra = ["--sample-strategy", "ddim3", "--seed", "7", "--output-npy", out / "alpha.npy"]
    extra += ["--output-rgba", out / "cutout.png", "--output-trajectory", out / "steps.png"]
    argv = _one_argv(tiny_weights, image, trimap, out / "alpha.png", *extra)
    result = run_script("run_one_image.py", *argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    alpha_u8 = _read_u8(out / "alpha.png")
    alpha = np.load(out / "alpha.npy")
    assert alpha.dtype == np.float32 and alpha.shape == (24, 40) == alpha_u8.shape
    assert np.abs(alpha * 255 - alpha_u8).max() <= 0.5
    assert 0 <= alpha.min() and alpha.max() <= 1 and (alpha[:4] == 0).all()

    expected = predict_alpha(
        _loaded(tiny_weights),
        read_image(image),
        trimap_to_model(_trimap(24, 40), "demo"),
        Sampler.from_strategy("ddim3"),
        seed=7,
    )
    np.testing.assert_array_equal(alpha, expected.alpha)

    cutout = cv2.cvtColor(_read_u8(out / "cutout.png"), cv2.COLOR_BGRA2RGBA)
    np.testing.assert_array_equal(cutout[:, :, :3], cv2.imread(str(image))[:, :, ::-1])
    np.testing.assert_array_equal(cutout[:, :, 3], alpha_u8)
    strip = _read_u8(out / "steps.png")
    assert strip.shape == (24, 3 * 40)
    np.testing.assert_array_equal(strip[:, 80:], alpha_u8)  # DDIM ends on its last x0

    # A folder as --output-dir receives <image stem>.png.
    argv = _one_argv(tiny_weights, image, trimap, out / "dir", "--seed", "7")
    result = run_script("run_one_image.py", *argv, "--sample-strategy", "ddim3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(_read_u8(out / "dir" / "a.png"), alpha_u8)


def test_run_one_image_snaps_demo_trimap(run_script, tiny_weights, shared_data_dir, tmp_path):
    demo = shared_data_dir / "matting" / "vitmatte_demo"
    # A crop of the published bulb demo inputs with all 9 of its grey levels.
    image = read_image(demo / "image" / "bulb.png")[128:192, 320:416]
    gray = cv2.imread(str(demo / "trimap" / "bulb.png"), cv2.IMREAD_GRAYSCALE)[128:192, 320:416]
    assert len(np.unique(gray)) == 9
    _write(tmp_path / "img.png", np.rint(image[:, :, ::-1] * 255).astype(np.uint8))
    _write(tmp_path / "tri.png", gray)
    npy = tmp_path / "a.npy"
    argv = _one_argv(tiny_weights, tmp_path / "img.png", tmp_path / "tri.png", tmp_path / "a.png")
    result = run_script(
        "run_one_image.py", *argv, "--sample-strategy", "ddim1", "--output-npy", npy, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f"note: {tmp_path / 'tri.png'} has 9 grey levels" in result.stderr
    alpha = np.load(npy)
    assert (alpha[gray / 255 < 0.1] == 0).all() and (alpha[gray / 255 > 0.9] == 1).all()
    unknown = (gray / 255 >= 0.1) & (gray / 255 <= 0.9)
    assert unknown.any() and ((alpha[unknown] > 0) & (alpha[unknown] < 1)).all()


@pytest.mark.slow
def test_inference_under_torchrun(tiny_weights, dataset, tmp_path):
    """Two torchrun processes split the folder and give the bytes of one single-thread process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    out, single = tmp_path / "out", tmp_path / "single"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    command += ["2", str(REPO_ROOT / "inference.py")]
    argv = [str(arg) for arg in _inference_argv(tiny_weights, dataset, out)]
    result = subprocess.run(
        [*command, *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]
    assert "[rank 0/2] 1 written" in result.stderr and "[rank 1/2] 1 written" in result.stderr
    argv = [str(arg) for arg in _inference_argv(tiny_weights, dataset, single)]
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "inference.py"), *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in ("a.png", "b.png"):
        assert (out / name).read_bytes() == (single / name).read_bytes()
