"""evaluation.py: table, per-image files, warnings and one-line errors with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffmatte.evaluation.metrics import compute_all

REPO_ROOT = Path(__file__).resolve().parents[2]


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


@pytest.fixture()
def dirs(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    out = {role: tmp_path / role for role in ("pred", "label", "trimap")}
    for name in ("x.png", "y.png"):
        gt = cv2.GaussianBlur((rng.random((20, 30)) > 0.5).astype(np.uint8) * 255, (5, 5), 1.5)
        pred = np.clip(gt.astype(int) + rng.integers(-25, 26, gt.shape), 0, 255).astype(np.uint8)
        trimap = np.where((gt > 0) & (gt < 255), 128, 0).astype(np.uint8)
        for role, array in zip(out, (pred, gt, trimap), strict=True):
            _write(out[role] / name, array)
    _write(out["label"] / "z.png", gt)
    return out


def _args(dirs: dict[str, Path], *extra: str) -> list[str]:
    return ["--pred-dir", str(dirs["pred"]), "--label-dir", str(dirs["label"]), *extra]


def test_prints_table_in_paper_units_and_writes_json(dirs, tmp_path: Path, run_script) -> None:
    out = tmp_path / "per_image.json"
    argv = _args(
        dirs, "--trimap-dir", str(dirs["trimap"]), "--per-image", str(out), "--workers", "1"
    )
    captured = run_script("evaluation.py", *argv, "--no-progress")
    assert captured.returncode == 0, captured.stderr
    lines = captured.stdout.splitlines()
    assert lines[0].startswith("mean over 2 images (unknown region, trimap == 128)")
    assert lines[1].split() == ["SAD", "MSE(x1e-3)", "Grad", "Conn"]
    document = json.loads(out.read_text())
    means = document["mean"]
    values = [float(v) for v in lines[2].split()]
    want = [means["SAD"], means["MSE"] * 1e3, means["Grad"], means["Conn"]]
    assert values == pytest.approx(want, abs=5e-4)
    skipped = "skipped 1 file(s) not present in every folder: z.png (no pred, trimap)"
    assert skipped in captured.stderr

    pred = cv2.imread(str(dirs["pred"] / "x.png"), cv2.IMREAD_UNCHANGED)
    gt = cv2.imread(str(dirs["label"] / "x.png"), cv2.IMREAD_UNCHANGED)
    trimap = cv2.imread(str(dirs["trimap"] / "x.png"), cv2.IMREAD_UNCHANGED)
    assert document["per_image"]["x.png"] == compute_all(pred, gt, trimap)


def test_whole_image_mode_writes_csv(dirs, tmp_path: Path, run_script) -> None:
    out = tmp_path / "per_image.csv"
    argv = _args(dirs, "--whole-image", "--per-image", str(out), "--workers", "2", "--no-progress")
    captured = run_script("evaluation.py", *argv)
    assert captured.returncode == 0, captured.stderr
    assert "(every pixel)" in captured.stdout
    assert out.read_text().splitlines()[0] == "name,SAD,MSE,Grad,Conn"
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize(
    "extra",
    [
        [],  # neither trimaps nor --whole-image
        ["--whole-image", "--trimap-dir", "t"],
        ["--whole-image", "--per-image", "out.txt"],
        ["--whole-image", "--workers", "0"],
    ],
)
def test_bad_command_lines_are_usage_errors(dirs, extra: list[str], run_script) -> None:
    completed = run_script("evaluation.py", *_args(dirs, *extra), "--no-progress")
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert "evaluation.py: error: " in completed.stderr.splitlines()[-1]


def test_errors_are_one_line_with_non_zero_exit(dirs, tmp_path: Path) -> None:
    empty = tmp_path / "no_trimaps"
    empty.mkdir()
    _write(dirs["trimap"] / "y.png", np.zeros((5, 5), np.uint8))
    for trimap_dir, message in (
        (
            empty,
            "error: no image name is present in every folder "
            "(image files: pred 2, label 3, trimap 0)",
        ),
        (dirs["trimap"], "error: y.png: sizes differ: pred 20x30, gt 20x30, trimap 5x5"),
    ):
        completed = subprocess.run(
            [sys.executable, str(REPO_ROOT / "evaluation.py"), *_args(dirs)]
            + ["--trimap-dir", str(trimap_dir), "--no-progress", "--workers", "1"],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=120,
        )
        assert completed.returncode == 2
        assert completed.stderr.strip().splitlines()[-1] == message
        assert "Traceback" not in completed.stderr
