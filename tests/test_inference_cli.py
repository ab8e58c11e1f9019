"""End-to-end tests of inference.py and run_one_image.py with a tiny random-weight ViT model."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.checkpoint import load_checkpoint, save_model_weights
from diffmatte.inference.functional import build_model, predict_alpha, trimap_to_model
from diffmatte.utils.image_io import read_image

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO_ROOT / "tests" / "configs" / "tiny_vit.py"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_{name}_cli", REPO_ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


inference = _load_script("inference")
run_one_image = _load_script("run_one_image")


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _trimap(height: int, width: int) -> np.ndarray:
    trimap = np.full((height, width), 128, np.uint8)
    trimap[:4] = 0
    trimap[-4:] = 255
    return trimap


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory, build_tiny_model):
    model = build_tiny_model(0)
    return save_model_weights(model, tmp_path_factory.mktemp("weights") / "tiny.pth")


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
    argv = ["--config-dir", str(TINY_CONFIG), "--checkpoint-dir", str(weights)]
    return [*argv, "--data-dir", str(data), "--inference-dir", str(out), "--device", "cpu", *extra]


def _infer(capsys, weights, data, out, *extra):
    code = inference.main(_inference_argv(weights, data, out, *extra))
    return code, capsys.readouterr().err


def _read_u8(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _loaded(weights: Path) -> torch.nn.Module:
    model = build_model(TINY_CONFIG)
    load_checkpoint(model, weights)
    return model


def test_inference_writes_skips_and_overwrites(capsys, weights, dataset, tmp_path):
    out = tmp_path / "pred"
    code, err = _infer(capsys, weights, dataset, out, "--sample-strategy", "ddim2")
    assert code == 0, err
    assert err.strip().endswith("2 written, 0 skipped")
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]
    alpha_a, alpha_b = _read_u8(out / "a.png"), _read_u8(out / "b.png")
    assert alpha_a.dtype == np.uint8 and alpha_a.shape == (24, 40) and alpha_b.shape == (32, 20)
    assert (alpha_a[:4] == 0).all() and (alpha_a[-4:] == 255).all()

    # The predictions are exactly those of the library for the default seed.
    image = read_image(dataset / "merged" / "a.png")
    ddim2 = Sampler.from_strategy("ddim2")
    expected = predict_alpha(_loaded(weights), image, trimap_to_model(_trimap(24, 40)), ddim2, 8282)
    np.testing.assert_array_equal(alpha_a, np.rint(expected.alpha * 255).astype(np.uint8))

    _write(out / "a.png", np.zeros((2, 2), np.uint8))  # an existing output is kept
    code, err = _infer(capsys, weights, dataset, out, "--sample-strategy", "ddim2")
    assert code == 0 and "0 written, 2 skipped" in err
    assert _read_u8(out / "a.png").shape == (2, 2)
    code, err = _infer(capsys, weights, dataset, out, "--sample-strategy", "ddim2", "--overwrite")
    assert code == 0 and "2 written, 0 skipped" in err
    np.testing.assert_array_equal(_read_u8(out / "a.png"), alpha_a)
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]  # no temporary files left


def test_seed_order_and_sharding(capsys, monkeypatch, weights, dataset, tmp_path):
    full, again, other = tmp_path / "full", tmp_path / "again", tmp_path / "other"
    assert _infer(capsys, weights, dataset, full, "--seed", "3")[0] == 0
    assert _infer(capsys, weights, dataset, again, "--seed", "3")[0] == 0
    for name in ("a.png", "b.png"):
        assert (full / name).read_bytes() == (again / name).read_bytes()

    # torchrun sets RANK / WORLD_SIZE: each process writes only its share, same bytes.
    sharded = tmp_path / "sharded"
    for rank, expected in ((1, ["b.png"]), (0, ["a.png", "b.png"])):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        code, err = _infer(capsys, weights, dataset, sharded, "--seed", "3")
        assert code == 0 and f"[rank {rank}/2] 1 written, 0 skipped" in err
        assert sorted(os.listdir(sharded)) == expected
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    for name in ("a.png", "b.png"):
        assert (full / name).read_bytes() == (sharded / name).read_bytes()

    # Order and company do not matter: image b alone gives the same alpha.
    alone = tmp_path / "alone"
    for sub in ("merged", "trimaps"):
        (alone / sub).mkdir(parents=True)
    (alone / "merged" / "b.jpg").write_bytes((dataset / "merged" / "b.jpg").read_bytes())
    (alone / "trimaps" / "b.png").write_bytes((dataset / "trimaps" / "b.png").read_bytes())
    assert _infer(capsys, weights, alone, other, "--seed", "3")[0] == 0
    assert (other / "b.png").read_bytes() == (full / "b.png").read_bytes()


def test_bad_inputs_are_reported_and_skipped(capsys, weights, dataset, tmp_path):
    merged, trimaps = dataset / "merged", dataset / "trimaps"
    _write(merged / "c.png", np.zeros((24, 40, 3), np.uint8))  # no trimap
    _write(merged / "d.png", np.zeros((24, 40, 3), np.uint8))
    _write(trimaps / "d.png", _trimap(20, 40))  # wrong size
    (merged / "e.png").write_bytes(b"not a png")  # unreadable
    _write(trimaps / "e.png", _trimap(24, 40))
    code, err = _infer(capsys, weights, dataset, tmp_path / "out")
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0] == f"error: {merged}: 1 image(s) without a trimap in {trimaps}: c.png"
    assert f"error: {trimaps / 'd.png'}: size 40x20 does not match the image d.png (40x24)" in lines
    unreadable = f"error: {merged / 'e.png'}: not a readable image"
    assert any(line.startswith(unreadable) for line in lines)
    assert lines[-1] == "2 written, 0 skipped, 3 failed"
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png"]


def test_unusable_runs_exit_2_with_one_line(capsys, weights, dataset, tmp_path):
    empty = tmp_path / "empty"
    (empty / "merged").mkdir(parents=True)
    (empty / "trimaps").mkdir()
    cases = [
        (empty, weights, [], f"error: {empty / 'merged'}: no usable images"),
        (tmp_path / "nowhere", weights, [], f"error: {tmp_path / 'nowhere'}: folder not found"),
        (dataset, tmp_path / "none.pth", [], f"error: {tmp_path / 'none.pth'}: checkpoint file"),
        (dataset, weights, ["--sample-strategy", "euler5"], "error: invalid sampling strategy"),
        (dataset, weights, ["model.backbone.embed_dim=48"], f"error: checkpoint {weights}"),
    ]
    for data, checkpoint, extra, start in cases:
        code, err = _infer(capsys, checkpoint, data, tmp_path / "out", *extra)
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith(start), err
    code, err = _infer(capsys, weights, dataset, dataset / "trimaps")
    assert code == 2 and err == f"error: {dataset / 'trimaps'}: is an input folder; " + (
        "choose another --inference-dir\n"
    )
    wrong = tmp_path / "wrong.pth"
    torch.save({"model.backbone.unknown": torch.zeros(3)}, wrong)
    code, err = _infer(capsys, wrong, dataset, tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and "unknown" in err


def _one(capsys, weights, image, trimap, output, *extra):
    argv = ["--config-file", str(TINY_CONFIG), "--checkpoint-dir", str(weights)]
    argv += ["--image-dir", str(image), "--trimap-dir", str(trimap), "--output-dir", str(output)]
    code = run_one_image.main([*argv, "--device", "cpu", *extra])
    return code, capsys.readouterr().err


def test_run_one_image_outputs(capsys, weights, dataset, tmp_path):
    image, trimap = dataset / "merged" / "a.png", dataset / "trimaps" / "a.png"
    out = tmp_path / "out"
    extra = ["--sample-strategy", "ddim3", "--seed", "7", "--output-npy", str(out / "alpha.npy")]
    extra += ["--output-rgba", str(out / "cutout.png")]
    extra += ["--output-trajectory", str(out / "steps.png")]
    code, err = _one(capsys, weights, image, trimap, out / "alpha.png", *extra)
    assert code == 0, err
    alpha_u8 = _read_u8(out / "alpha.png")
    alpha = np.load(out / "alpha.npy")
    assert alpha.dtype == np.float32 and alpha.shape == (24, 40) == alpha_u8.shape
    assert np.abs(alpha * 255 - alpha_u8).max() <= 0.5
    assert 0 <= alpha.min() and alpha.max() <= 1 and (alpha[:4] == 0).all()

    expected = predict_alpha(
        _loaded(weights),
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
    code, _ = _one(
        capsys, weights, image, trimap, out / "dir", "--seed", "7", "--sample-strategy", "ddim3"
    )
    assert code == 0
    np.testing.assert_array_equal(_read_u8(out / "dir" / "a.png"), alpha_u8)


def test_run_one_image_snaps_demo_trimap(capsys, weights, shared_data_dir, tmp_path):
    demo = shared_data_dir / "matting" / "vitmatte_demo"
    # A crop of the published bulb demo inputs with all 9 of its grey levels.
    image = read_image(demo / "image" / "bulb.png")[128:192, 320:416]
    gray = cv2.imread(str(demo / "trimap" / "bulb.png"), cv2.IMREAD_GRAYSCALE)[128:192, 320:416]
    assert len(np.unique(gray)) == 9
    _write(tmp_path / "img.png", np.rint(image[:, :, ::-1] * 255).astype(np.uint8))
    _write(tmp_path / "tri.png", gray)
    npy = tmp_path / "a.npy"
    code, err = _one(
        capsys,
        weights,
        tmp_path / "img.png",
        tmp_path / "tri.png",
        tmp_path / "a.png",
        "--sample-strategy",
        "ddim1",
        "--output-npy",
        str(npy),
    )
    assert code == 0, err
    assert f"note: {tmp_path / 'tri.png'} has {len(np.unique(gray))} grey levels" in err
    alpha = np.load(npy)
    assert (alpha[gray / 255 < 0.1] == 0).all() and (alpha[gray / 255 > 0.9] == 1).all()
    unknown = (gray / 255 >= 0.1) & (gray / 255 <= 0.9)
    assert unknown.any() and ((alpha[unknown] > 0) & (alpha[unknown] < 1)).all()


def test_run_one_image_errors(capsys, weights, dataset, tmp_path):
    image, trimap = dataset / "merged" / "a.png", dataset / "trimaps" / "a.png"
    code, err = _one(capsys, weights, tmp_path / "x.png", trimap, tmp_path / "o.png")
    assert code == 2 and err == f"error: {tmp_path / 'x.png'}: file not found\n"
    _write(tmp_path / "small.png", _trimap(10, 10))
    code, err = _one(capsys, weights, image, tmp_path / "small.png", tmp_path / "o.png")
    assert code == 2 and err.startswith(f"error: {tmp_path / 'small.png'}: size 10x10")
    code, err = _one(capsys, weights, image, trimap, tmp_path / "o.png", "--device", "tpu")
    assert code == 2 and err.count("\n") == 1
    assert not (tmp_path / "o.png").exists()
    # A folder output next to the input would overwrite the image itself.
    before = image.read_bytes()
    code, err = _one(capsys, weights, image, trimap, image.parent)
    assert code == 2 and err == f"error: {image}: is an input file; choose another output path\n"
    assert image.read_bytes() == before


def test_inference_script_as_subprocess(weights, dataset, tmp_path):
    """The script entry point, with torchrun's environment for the second of two processes."""
    env = dict(os.environ, RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", OMP_NUM_THREADS="1")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "inference.py"), *_inference_argv(weights, dataset, out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["b.png"]


@pytest.mark.slow
def test_inference_under_torchrun(weights, dataset, tmp_path):
    """Two torchrun processes split the folder between them and together write every alpha."""
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(REPO_ROOT / "inference.py"),
            *_inference_argv(weights, dataset, out),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]
    assert "[rank 0/2] 1 written" in result.stderr and "[rank 1/2] 1 written" in result.stderr
