"""Tests for diffmatte.data.synthetic_folders: data folders made when missing, atomically."""

import cv2
import numpy as np

from diffmatte.data.synthetic import generate_foreground
from diffmatte.data.synthetic_folders import synthetic_foreground_folder, synthetic_testset_folder


def test_foreground_folder_is_made_once(tmp_path) -> None:
    folder = tmp_path / "data" / "train"
    assert synthetic_foreground_folder(folder, num=2, size=48, seed=3) == str(folder)
    assert sorted(p.name for p in (folder / "alpha").iterdir()) == [
        "synthetic_0000.png",
        "synthetic_0001.png",
    ]
    _, alpha = generate_foreground([3, 1], 48, 4)
    written = cv2.imread(str(folder / "alpha" / "synthetic_0001.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(written, np.rint(alpha * 255).astype(np.uint8))
    # Only the finished folder is left: no partial sibling.
    assert [p.name for p in folder.parent.iterdir()] == ["train"]
    # An existing folder is used as it is.
    (folder / "alpha" / "synthetic_0001.png").unlink()
    synthetic_foreground_folder(folder, num=2, size=48, seed=3)
    assert not (folder / "alpha" / "synthetic_0001.png").exists()


def test_testset_folder_has_the_composition1k_layout(tmp_path) -> None:
    folder = tmp_path / "test"
    synthetic_testset_folder(folder, num_foregrounds=1, size=48, seed=1, bgs_per_fg=2)
    names = ["test_0000_0.png", "test_0000_1.png"]
    for sub in ("merged", "trimaps", "alpha_copy"):
        assert sorted(p.name for p in (folder / sub).iterdir()) == names
    assert not (folder / "foregrounds").exists()
    trimap = cv2.imread(str(folder / "trimaps" / names[0]), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(trimap)) <= {0, 128, 255}
