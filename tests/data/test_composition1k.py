"""Composition-1k-style folder reader: stem matching, mismatch reports, sample loading."""

import cv2
import numpy as np
import pytest

from diffmatte.data.composition1k import (
    FLAT_LAYOUT,
    Composition1kDataset,
    DatasetError,
    detect_layout,
    list_pairs,
    read_sample,
)
from diffmatte.utils.image_io import ImageReadError


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


@pytest.fixture
def comp1k(tmp_path):
    """Images a (png), b (jpg), c (no trimap), d (trimap of the wrong size); trimap e orphan."""
    root = tmp_path / "c1k"
    rng = np.random.default_rng(0)
    for name, ext in (("a", "png"), ("b", "jpg"), ("c", "png"), ("d", "png")):
        _write(root / "merged" / f"{name}.{ext}", rng.integers(0, 256, (6, 8, 3), np.uint8))
    trimap = np.array([0, 128, 255, 90], np.uint8)[rng.integers(0, 4, (6, 8))]
    for name in ("a", "b", "e"):
        _write(root / "trimaps" / f"{name}.png", trimap)
    _write(root / "trimaps" / "d.png", trimap[:5])
    _write(root / "alpha_copy" / "a.png", np.full((6, 8), 77, np.uint8))
    (root / "merged" / "notes.txt").write_text("not an image")
    (root / "merged" / ".a.png.tmp").write_bytes(b"")
    return root


def test_list_pairs_matches_by_stem_and_reports(comp1k):
    listing = list_pairs(comp1k)
    assert [pair.name for pair in listing.pairs] == ["a", "b", "d"]
    assert listing.pairs[1].image_path.name == "b.jpg"
    assert listing.pairs[1].trimap_path.name == "b.png"
    assert listing.pairs[0].alpha_path.name == "a.png"
    assert listing.pairs[1].alpha_path is None
    assert [p.name for p in listing.missing_trimaps] == ["c.png"]
    assert [p.name for p in listing.unused_trimaps] == ["e.png"]
    assert [p.name for p in listing.missing_alphas] == ["b.jpg", "d.png"]
    assert listing.num_unusable == 1
    problems = listing.problems()
    assert len(problems) == 3 and all("\n" not in line for line in problems)
    assert problems[0] == (
        f"{comp1k / 'merged'}: 1 image(s) without a trimap in {comp1k / 'trimaps'}: c.png"
    )
    assert "e.png" in problems[1] and "b.jpg, d.png" in problems[2]


def test_ambiguous_stems_are_skipped(comp1k):
    _write(comp1k / "merged" / "a.jpg", np.zeros((6, 8, 3), np.uint8))
    listing = list_pairs(comp1k, alpha_dir=None)
    assert [pair.name for pair in listing.pairs] == ["b", "d"]
    assert [p.name for p in listing.ambiguous] == ["a.jpg", "a.png"]
    assert listing.num_unusable == 3
    assert listing.missing_alphas == [] and listing.pairs[0].alpha_path is None


def test_dataset_loads_samples_and_checks_sizes(comp1k):
    dataset = Composition1kDataset(comp1k)
    assert len(dataset) == 3
    sample = dataset[0]
    assert sample.name == "a"
    assert sample.image.shape == (6, 8, 3) and sample.image.dtype == np.float32
    assert sample.trimap.dtype == np.uint8 and set(np.unique(sample.trimap)) <= {0, 90, 128, 255}
    np.testing.assert_array_equal(sample.alpha, np.full((6, 8), 77, np.uint8))
    assert dataset[1].alpha is None
    with pytest.raises(ImageReadError) as info:
        dataset[2]
    assert str(info.value) == (
        f"{comp1k / 'trimaps' / 'd.png'}: size 8x5 does not match the image d.png (8x6)"
    )


def test_unreadable_file_raises_one_line(comp1k):
    (comp1k / "merged" / "a.png").write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match=r"a\.png: not a readable image"):
        read_sample(list_pairs(comp1k).pairs[0])


def test_layouts_and_missing_folders(tmp_path, comp1k):
    assert detect_layout(comp1k) == ("merged", "trimaps", "alpha_copy")
    flat = tmp_path / "flat"
    _write(flat / "image" / "x.png", np.zeros((4, 4, 3), np.uint8))
    _write(flat / "trimap" / "x.png", np.zeros((4, 4), np.uint8))
    assert detect_layout(flat) == FLAT_LAYOUT
    assert [p.name for p in list_pairs(flat, *FLAT_LAYOUT).pairs] == ["x"]
    with pytest.raises(DatasetError, match="folder not found"):
        detect_layout(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no 'merged/' folder"):
        detect_layout(flat / "image")
    with pytest.raises(DatasetError, match=r"trimaps: folder not found"):
        list_pairs(flat, "image", "trimaps")
