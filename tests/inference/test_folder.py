"""Folder runs: planning, resume, sharding, batching, bad images, and the checks before a run."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffmatte.diffusion.samplers import Sampler
from diffmatte.inference import FolderSummary, InferenceOptions, Predictor, plan_folder, run_folder
from diffmatte.inference.checks import (
    check_checkpoint_file,
    check_run,
    check_sampling,
)
from diffmatte.inference.functional import predict_alpha, trimap_to_model
from diffmatte.inference.outputs import alpha_output_path
from diffmatte.utils.fileio import check_writable_file, check_writable_folder
from diffmatte.utils.image_io import read_image

pytestmark = pytest.mark.usefixtures("one_thread")


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _trimap(height: int, width: int) -> np.ndarray:
    trimap = np.full((height, width), 128, np.uint8)
    trimap[:4] = 0
    trimap[-4:] = 255
    return trimap


@pytest.fixture(scope="module")
def tiny_model(build_tiny_model):
    return build_tiny_model(0).eval()


@pytest.fixture
def dataset(tmp_path):
    """Three images: two of the same size (a, c; c is a JPEG), one of another (b)."""
    root = tmp_path / "c1k"
    rng = np.random.default_rng(0)
    for name, (height, width), ext in (
        ("a", (24, 40), "png"),
        ("b", (32, 20), "png"),
        ("c", (24, 40), "jpg"),
    ):
        _write(
            root / "merged" / f"{name}.{ext}", rng.integers(0, 256, (height, width, 3), np.uint8)
        )
        _write(root / "trimaps" / f"{name}.png", _trimap(height, width))
    return root


def _predictor(model, batch_size=1):
    return Predictor(model, InferenceOptions(batch_size=batch_size), device="cpu")


def _read(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_summary_line_always_has_three_counts():
    assert str(FolderSummary()) == "0 written, 0 skipped, 0 failed"
    assert str(FolderSummary(998, 2, 0)) == "998 written, 2 skipped, 0 failed"


def test_predict_folder_writes_exact_alphas_then_resumes(tiny_model, dataset, tmp_path):
    out = tmp_path / "pred"
    predictor = _predictor(tiny_model)
    done = []
    summary = predictor.predict_folder(dataset, out, "ddim2", seed=5, on_progress=done.append)
    assert (summary.written, summary.skipped, summary.failed) == (3, 0, 0)
    assert sum(done) == 3 and sorted(os.listdir(out)) == ["a.png", "b.png", "c.png"]
    image = read_image(dataset / "merged" / "a.png")
    expected = predict_alpha(
        tiny_model, image, trimap_to_model(_trimap(24, 40)), Sampler.from_strategy("ddim2"), 5
    )
    np.testing.assert_array_equal(_read(out / "a.png"), np.rint(expected.alpha * 255))

    _write(out / "a.png", np.zeros((2, 2), np.uint8))  # an existing output is kept
    summary = predictor.predict_folder(dataset, out, "ddim2", seed=5)
    assert str(summary) == "0 written, 3 skipped, 0 failed"
    assert _read(out / "a.png").shape == (2, 2)
    summary = predictor.predict_folder(dataset, out, "ddim2", seed=5, overwrite=True)
    assert str(summary) == "3 written, 0 skipped, 0 failed"
    np.testing.assert_array_equal(_read(out / "a.png"), np.rint(expected.alpha * 255))
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "c.png"]  # no temporary files


def test_shards_cover_the_folder_with_the_same_bytes(tiny_model, dataset, tmp_path):
    predictor = _predictor(tiny_model)
    whole = tmp_path / "whole"
    assert predictor.predict_folder(dataset, whole, "ddim1", seed=3).written == 3
    sharded = tmp_path / "sharded"
    for rank, names in ((0, ["a", "c"]), (1, ["b"])):
        plan = plan_folder(dataset, sharded, rank=rank, world_size=2)
        assert [pair.name for pair in plan.todo] == names
        assert run_folder(predictor, plan, "ddim1", seed=3).written == len(names)
    for name in ("a.png", "b.png", "c.png"):
        assert (whole / name).read_bytes() == (sharded / name).read_bytes()


def test_batches_equal_one_by_one(tiny_model, dataset, tmp_path):
    one, batched = tmp_path / "one", tmp_path / "batched"
    _predictor(tiny_model).predict_folder(dataset, one, "ddim2", seed=1)
    summary = _predictor(tiny_model, batch_size=4).predict_folder(dataset, batched, "ddim2", seed=1)
    assert str(summary) == "3 written, 0 skipped, 0 failed"
    for name in ("a.png", "b.png", "c.png"):
        assert np.abs(_read(one / name).astype(int) - _read(batched / name)).max() <= 1


def test_bad_images_fail_alone_with_one_line_each(tiny_model, dataset, tmp_path):
    merged, trimaps = dataset / "merged", dataset / "trimaps"
    _write(merged / "d.png", np.zeros((24, 40, 3), np.uint8))  # no trimap
    _write(merged / "e.png", np.zeros((24, 40, 3), np.uint8))
    _write(trimaps / "e.png", _trimap(20, 40))  # wrong size
    (merged / "f.png").write_bytes(b"not a png")  # unreadable
    _write(trimaps / "f.png", _trimap(24, 40))
    for batch_size in (1, 3):
        errors = []
        out = tmp_path / f"out{batch_size}"
        summary = _predictor(tiny_model, batch_size).predict_folder(
            dataset, out, "ddim1", on_error=errors.append
        )
        assert str(summary) == "3 written, 0 skipped, 3 failed"
        assert errors[0] == f"{merged}: 1 image(s) without a trimap in {trimaps}: d.png"
        assert f"{trimaps / 'e.png'}: size 40x20 does not match the image e.png (40x24)" in errors
        assert any(line.startswith(f"{merged / 'f.png'}: not a readable image") for line in errors)
        assert len(errors) == 3
        assert sorted(os.listdir(out)) == ["a.png", "b.png", "c.png"]


def test_plan_checks_before_anything_is_created(dataset, tmp_path):
    empty = tmp_path / "empty"
    (empty / "merged").mkdir(parents=True)
    (empty / "trimaps").mkdir()
    with pytest.raises(ValueError, match="no usable images"):
        plan_folder(empty, tmp_path / "out")
    with pytest.raises(ValueError, match="is an input folder"):
        plan_folder(dataset, dataset / "trimaps")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"file/sub: cannot be used as an output folder \("):
        plan_folder(dataset, tmp_path / "file" / "sub")
    plan = plan_folder(dataset, tmp_path / "new" / "out")
    assert len(plan.todo) == 3 and not (tmp_path / "new").exists()


def test_checks_name_the_value(tmp_path):
    assert check_sampling("ddim10", 0).steps == 10 and check_sampling(None, 2**63 - 1) is None
    for seed in (-1, 2**63, 99999999999999999999999):
        with pytest.raises(ValueError, match=rf"^seed {seed}: out of range; seeds are integers"):
            check_sampling("ddim1", seed)
    with pytest.raises(ValueError, match=r"1 <= N <= 1000 \(each step is one decoder pass"):
        check_sampling("ddim10000000000", 0)
    with pytest.raises(ValueError, match="checkpoint file not found"):
        check_checkpoint_file(tmp_path / "none.pth")
    with pytest.raises(ValueError, match="checkpoint file not found"):
        check_run("ddim1", 0, InferenceOptions(), "cpu", tmp_path / "none.pth")
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA device"):
        check_run("ddim1", 0, InferenceOptions(precision="fp16"), "cpu", tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"cannot be written \(cannot be used as an output"):
        check_writable_file(tmp_path / "file" / "a.png")
    with pytest.raises(ValueError, match="is an input file"):
        check_writable_file(tmp_path / "file", inputs=[tmp_path / "file"])
    with pytest.raises(ValueError, match="is a folder, not a file"):
        check_writable_file(tmp_path)
    assert check_writable_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_output_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(ValueError, match="not writable"):
        check_writable_folder(locked / "out")


def test_alpha_output_path():
    assert alpha_output_path("demo/result.png", "x/photo.jpg") == Path("demo/result.png")
    assert alpha_output_path("demo", "x/photo.jpg") == Path("demo/photo.png")
