"""MattingEvaluator means, image reading, folder matching and per-image files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffmatte.evaluation.evaluator import (
    EvaluationError,
    MattingEvaluator,
    evaluate_folders,
    format_means,
    read_matte,
    save_results,
)
from diffmatte.evaluation.metrics import METRIC_NAMES, compute_all


def _case(seed: int, height: int = 24, width: int = 32) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    gt = np.zeros((height, width), dtype=np.uint8)
    gt[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    gt = cv2.GaussianBlur(gt, (7, 7), 2)
    pred = np.clip(gt.astype(int) + rng.integers(-30, 31, gt.shape), 0, 255).astype(np.uint8)
    trimap = np.where((gt > 0) & (gt < 255), 128, np.where(gt == 255, 255, 0)).astype(np.uint8)
    return pred, gt, trimap


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


@pytest.fixture()
def folders(tmp_path: Path) -> dict[str, Path]:
    """Three matched images, plus one file missing from the trimaps and one only in pred."""
    dirs = {role: tmp_path / role for role in ("pred", "label", "trimap")}
    for seed, name in enumerate(["b.png", "a.png", "c.png"]):
        pred, gt, trimap = _case(seed)
        _write(dirs["pred"] / name, pred)
        _write(dirs["label"] / name, gt)
        _write(dirs["trimap"] / name, trimap)
    pred, gt, _ = _case(9)
    _write(dirs["pred"] / "d.png", pred)
    _write(dirs["label"] / "d.png", gt)
    _write(dirs["pred"] / "only_pred.png", pred)
    (dirs["label"] / "notes.txt").write_text("not an image")
    return dirs


# ----------------------------------------------------------------------------------------------
# MattingEvaluator
# ----------------------------------------------------------------------------------------------


def test_means_are_float32_running_totals_over_the_count() -> None:
    evaluator = MattingEvaluator()
    results = [evaluator.process(f"{i}.png", *_case(i)) for i in range(5)]
    summary = evaluator.summary()
    for key in METRIC_NAMES:
        total = np.float32(0)
        for result in results:
            total = np.float32(total + np.float32(result[key]))
        assert summary[key] == float(np.float32(total / np.float32(5)))
        assert summary[key] == pytest.approx(np.mean([r[key] for r in results]), rel=1e-6)
    assert evaluator.num_images == 5
    assert list(evaluator.per_image) == [f"{i}.png" for i in range(5)]
    assert evaluator.per_image["3.png"] == results[3] == compute_all(*_case(3))


def test_empty_unknown_image_makes_the_mean_mse_nan() -> None:
    evaluator = MattingEvaluator()
    evaluator.process("good.png", *_case(0))
    pred, gt, _ = _case(1)
    with pytest.warns(RuntimeWarning):
        evaluator.process("empty.png", pred, gt, np.zeros_like(gt))
    summary = evaluator.summary()
    assert math.isnan(summary["MSE"])
    assert summary["SAD"] == float(np.float32(evaluator.per_image["good.png"]["SAD"]) / 2)
    assert evaluator.empty_unknown == ["empty.png"]


def test_whole_image_processing_and_reset() -> None:
    evaluator = MattingEvaluator()
    pred, gt, _ = _case(2)
    result = evaluator.process("x.png", pred, gt, None)
    assert result == compute_all(pred, gt, np.full_like(gt, 128))
    evaluator.reset()
    assert evaluator.num_images == 0
    with pytest.raises(EvaluationError, match="no image"):
        evaluator.summary()


def test_bad_arrays_and_repeated_names_name_the_image() -> None:
    evaluator = MattingEvaluator()
    pred, gt, trimap = _case(0)
    with pytest.raises(EvaluationError, match=r"^odd\.png: sizes differ: pred 24x32, gt 24x31"):
        evaluator.process("odd.png", pred, gt[:, :-1], trimap)
    evaluator.process("a.png", pred, gt, trimap)
    with pytest.raises(EvaluationError, match="a.png: image evaluated twice"):
        evaluator.process("a.png", pred, gt, trimap)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def test_read_matte_takes_the_red_channel_of_colour_files(tmp_path: Path) -> None:
    bgr = np.zeros((5, 6, 3), dtype=np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30
    _write(tmp_path / "rgb.png", bgr)
    _write(tmp_path / "rgba.png", np.dstack([bgr, np.full((5, 6), 7, np.uint8)]))
    _write(tmp_path / "gray.png", np.full((5, 6), 42, np.uint8))
    assert np.all(read_matte(tmp_path / "rgb.png") == 30)
    assert np.all(read_matte(tmp_path / "rgba.png") == 30)
    gray = read_matte(tmp_path / "gray.png")
    assert gray.dtype == np.uint8 and gray.shape == (5, 6) and np.all(gray == 42)


def test_read_matte_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    _write(tmp_path / "deep.png", np.full((4, 4), 1000, np.uint16))
    with pytest.raises(EvaluationError, match=r"broken\.png: not a readable image"):
        read_matte(tmp_path / "broken.png")
    with pytest.raises(EvaluationError, match=r"deep\.png: uint16 pixels"):
        read_matte(tmp_path / "deep.png")
    with pytest.raises(EvaluationError, match=r"missing\.png: cannot read file"):
        read_matte(tmp_path / "missing.png")


# ----------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------


def test_folders_are_matched_by_name_in_sorted_order(folders: dict[str, Path]) -> None:
    evaluation = evaluate_folders(
        folders["pred"], folders["label"], folders["trimap"], workers=1, progress=False
    )
    evaluator = evaluation.evaluator
    assert list(evaluator.per_image) == ["a.png", "b.png", "c.png"]
    assert evaluator.per_image["b.png"] == compute_all(*_case(0))
    assert evaluation.skipped == {"d.png": ["trimap"], "only_pred.png": ["label", "trimap"]}
    (line,) = evaluation.notes()
    assert line == (
        "skipped 2 file(s) not present in every folder: d.png (no trimap), "
        "only_pred.png (no label, trimap)"
    )


def test_parallel_workers_give_the_same_results(folders: dict[str, Path]) -> None:
    serial = evaluate_folders(folders["pred"], folders["label"], None, workers=1, progress=False)
    parallel = evaluate_folders(folders["pred"], folders["label"], None, workers=2, progress=False)
    assert list(serial.evaluator.per_image) == ["a.png", "b.png", "c.png", "d.png"]
    assert parallel.evaluator.per_image == serial.evaluator.per_image
    assert parallel.evaluator.summary() == serial.evaluator.summary()
    assert serial.whole_image and serial.skipped == {"only_pred.png": ["label"]}


def test_size_mismatch_is_an_error_naming_the_file(folders: dict[str, Path]) -> None:
    _write(folders["label"] / "c.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(EvaluationError, match=r"^c\.png: sizes differ: pred 24x32, gt 10x10"):
        evaluate_folders(folders["pred"], folders["label"], folders["trimap"], workers=2)


def test_unreadable_file_is_an_error_naming_it(folders: dict[str, Path]) -> None:
    (folders["trimap"] / "b.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(EvaluationError, match=r"trimap[/\\]b\.png: not a readable image"):
        evaluate_folders(folders["pred"], folders["label"], folders["trimap"], workers=1)


def test_no_common_name_is_an_error(tmp_path: Path, folders: dict[str, Path]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EvaluationError, match="no image name is present in every folder"):
        evaluate_folders(folders["pred"], folders["label"], empty, workers=1)
    with pytest.raises(EvaluationError, match="trimap folder not found"):
        evaluate_folders(folders["pred"], folders["label"], tmp_path / "nope", workers=1)


# ----------------------------------------------------------------------------------------------
# Per-image files
# ----------------------------------------------------------------------------------------------


def test_per_image_csv_and_json(tmp_path: Path, folders: dict[str, Path]) -> None:
    evaluation = evaluate_folders(
        folders["pred"], folders["label"], folders["trimap"], workers=1, progress=False
    )
    per_image = evaluation.evaluator.per_image
    csv_path = save_results(tmp_path / "out" / "errors.csv", evaluation)
    with csv_path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["name"] for row in rows] == ["a.png", "b.png", "c.png"]
    assert float(rows[1]["Conn"]) == per_image["b.png"]["Conn"]

    json_path = save_results(tmp_path / "errors.json", evaluation)
    document = json.loads(json_path.read_text())
    assert document["num_images"] == 3 and document["whole_image"] is False
    assert document["per_image"]["c.png"] == per_image["c.png"]
    assert document["mean"] == evaluation.evaluator.summary()
    assert document["skipped"]["d.png"] == ["trimap"]
    # Written through a temporary file that is renamed: nothing else is left behind.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["errors.csv"]
    assert not list(tmp_path.glob(".*"))


def test_json_writes_nan_as_null(tmp_path: Path) -> None:
    pred, gt, _ = _case(4)
    root = {role: tmp_path / role for role in ("pred", "label", "trimap")}
    _write(root["pred"] / "e.png", pred)
    _write(root["label"] / "e.png", gt)
    _write(root["trimap"] / "e.png", np.zeros_like(gt))
    evaluation = evaluate_folders(root["pred"], root["label"], root["trimap"], workers=1)
    document = json.loads(save_results(tmp_path / "e.json", evaluation).read_text())
    assert document["mean"]["MSE"] is None and document["per_image"]["e.png"]["MSE"] is None
    assert "no unknown pixel" in evaluation.notes()[0]


def test_unknown_extension_is_refused(tmp_path: Path, folders: dict[str, Path]) -> None:
    evaluation = evaluate_folders(folders["pred"], folders["label"], None, workers=1)
    with pytest.raises(EvaluationError, match=r"must end in \.csv or \.json"):
        save_results(tmp_path / "errors.txt", evaluation)
    assert not (tmp_path / "errors.txt").exists()


def test_format_means_units_and_long_names() -> None:
    means = {"SAD": 12.3456, "MSE": 0.0041, "Grad": 3.2, "Conn": math.nan}
    table = format_means({"untrained": means, "a/b/model_final.pth": means}, name_width=12)
    lines = table.splitlines()
    assert lines[0].split() == ["model", "SAD", "MSE(e-3)", "Grad", "Conn"]
    assert set(lines[1]) == {"-"} and len(lines[1]) == len(lines[0]) == 52
    assert lines[2].split() == ["untrained", "12.346", "4.100", "3.200", "nan"]
    assert lines[3].startswith("model_final.pth"[-12:] + " ")  # the end of a long name is kept
