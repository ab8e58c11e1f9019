"""Fault matrix of evaluation.py, run as a process: exit status 2, one ``error:`` line naming
the file, no traceback, and no results file written."""

from pathlib import Path

import cv2
import numpy as np
import pytest


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


@pytest.fixture
def folders(tmp_path):
    """pred/, label/, trimap/ with two matching 20x30 images."""
    rng = np.random.default_rng(0)
    for name in ("x.png", "y.png"):
        for role in ("pred", "label", "trimap"):
            _write(tmp_path / role / name, rng.integers(0, 256, (20, 30), np.uint8))
    (tmp_path / "file").write_text("a file, not a folder")
    return tmp_path


def _break(root: Path, case: str) -> list[str]:
    """Damages the folders for ``case``; returns the arguments that differ from a good run."""
    if case == "size-mismatch":
        _write(root / "pred" / "y.png", np.zeros((5, 5), np.uint8))
    elif case == "unreadable":
        (root / "label" / "x.png").write_bytes(b"not a png")
    elif case == "sixteen-bit":
        _write(root / "label" / "x.png", np.zeros((20, 30), np.uint16))
    elif case == "no-common-name":
        for path in (root / "pred").iterdir():
            path.rename(path.with_name("other_" + path.name))
    return {
        "pred-missing": ["--pred-dir", str(root / "nowhere")],
        "label-is-a-file": ["--label-dir", str(root / "file")],
        "per-image-under-a-file": ["--per-image", str(root / "file" / "errors.csv")],
    }.get(case, [])


CASES = {
    "pred-missing": "nowhere: pred folder not found",
    "label-is-a-file": "file",
    "size-mismatch": "y.png: sizes differ: pred 5x5, gt 20x30, trimap 20x30",
    "unreadable": "x.png",
    "sixteen-bit": "x.png",
    "no-common-name": "no image name is present in every folder",
    "per-image-under-a-file": "errors.csv",
}


@pytest.mark.parametrize("case", list(CASES))
def test_fault(case, folders, run_script, assert_one_error):
    changed = _break(folders, case)
    args = {"--pred-dir": str(folders / "pred"), "--label-dir": str(folders / "label")}
    args.update({"--trimap-dir": str(folders / "trimap"), "--workers": "1"})
    args.update(dict(zip(changed[::2], changed[1::2], strict=True)))
    argv = [item for pair in args.items() for item in pair]
    result = run_script("evaluation.py", *argv, "--no-progress", cwd=folders)
    assert_one_error(result, 2, CASES[case])
    assert result.stdout == ""
    assert sorted(path.name for path in folders.iterdir()) == ["file", "label", "pred", "trimap"]
