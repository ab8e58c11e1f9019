"""Composition-1k-style test folders (what tools/compose_testset.py runs): layout, composition
rule, byte-identical reruns. The command line's failures are in test_compose_testset_faults.py."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from diffmatte.data.sources import bundled_backgrounds
from diffmatte.data.synthetic import write_foregrounds
from diffmatte.data.testset import compose_testset, fit_background
from diffmatte.utils.image_io import read_gray, read_image


@pytest.fixture(scope="module")
def synthetic_fg(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    write_foregrounds(root, 3, (72, 96), seed=0)
    return root


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _u8(path: Path) -> np.ndarray:
    return np.rint(read_image(path) * 255).astype(np.uint8)


def test_layout_and_determinism(synthetic_fg, tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        names = compose_testset(
            synthetic_fg, bundled_backgrounds(), tmp_path / name, 2, seed, write_fg_bg=True
        )
        assert len(names) == 6
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")

    out = tmp_path / "a"
    expected = sorted(f"synthetic_{i:04d}_{k}.png" for i in range(3) for k in range(2))
    for folder in ("merged", "alpha_copy", "trimaps", "fg", "bg"):
        assert sorted(p.name for p in (out / folder).iterdir()) == expected, folder
    assert not list(out.rglob("*.tmp"))
    record = json.loads((out / "composition.json").read_text())
    assert record["seed"] == 5 and len(record["composites"]) == 6
    # Six composites from the six bundled backgrounds: each used once.
    assert len({entry["background"] for entry in record["composites"].values()}) == 6

    for name in expected:
        merged, fg, bg = _u8(out / "merged" / name), _u8(out / "fg" / name), _u8(out / "bg" / name)
        alpha, trimap = read_gray(out / "alpha_copy" / name), read_gray(out / "trimaps" / name)
        assert merged.shape == (72, 96, 3) and alpha.shape == trimap.shape == (72, 96)
        assert set(np.unique(trimap)) <= {0, 128, 255}
        stem = name.rsplit("_", 1)[0]
        np.testing.assert_array_equal(alpha, read_gray(synthetic_fg / "alpha" / f"{stem}.png"))
        np.testing.assert_array_equal(merged[alpha == 255], fg[alpha == 255])
        np.testing.assert_array_equal(merged[alpha == 0], bg[alpha == 0])
        # Truncated 8-bit composite, as the Composition-1k script.
        a = alpha[:, :, None] / 255.0
        truncated = np.floor(a * fg + (1 - a) * bg + 1e-4)
        assert np.abs(merged - truncated).max() <= 1


def test_real_photographs(shared_data_dir, tmp_path):
    """Image + alpha input: estimated foreground, so known-foreground pixels keep the photo."""
    source = shared_data_dir / "matting" / "alphamatting_train_lowres"
    root = tmp_path / "two"
    for folder in ("image", "alpha"):
        (root / folder).mkdir(parents=True)
        for stem in ("GT01", "GT05"):
            (root / folder / f"{stem}.png").symlink_to(source / folder / f"{stem}.png")
    out = tmp_path / "out"
    assert len(compose_testset(root, bundled_backgrounds(), out, 1, trimap_radius=(5, 5))) == 2
    for stem in ("GT01", "GT05"):
        merged = _u8(out / "merged" / f"{stem}_0.png")
        photo = _u8(source / "image" / f"{stem}.png")
        alpha = read_gray(out / "alpha_copy" / f"{stem}_0.png")
        np.testing.assert_array_equal(alpha, read_gray(source / "alpha" / f"{stem}.png"))
        np.testing.assert_array_equal(merged[alpha == 255], photo[alpha == 255])
        assert np.abs(merged[alpha == 0].astype(int) - photo[alpha == 0]).mean() > 10
        trimap = read_gray(out / "trimaps" / f"{stem}_0.png")
        assert np.all(trimap[(alpha > 0) & (alpha < 255)] == 128)
        assert np.all(alpha[trimap == 255] == 255) and np.all(alpha[trimap == 0] == 0)


def test_fit_background_modes():
    background = np.random.default_rng(0).random((40, 60, 3)).astype(np.float32)
    dim = fit_background(background, 30, 50)
    np.testing.assert_array_equal(dim, background[:30, :50])  # large enough: top-left crop
    enlarged = fit_background(background, 80, 60)  # ratio 2 -> 120x80, top-left 80x60
    assert enlarged.shape == (80, 60, 3)
    cover = fit_background(background, 20, 20, mode="cover")  # ratio 0.5 -> 30x20, centre
    assert cover.shape == (20, 20, 3)
