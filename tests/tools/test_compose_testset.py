"""tools/compose_testset.py: folder layout, composition rule, byte-identical reruns, errors."""

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from diffmatte.data.synthetic import write_foregrounds
from diffmatte.data.testset import fit_background
from diffmatte.utils.image_io import read_gray, read_image

TOOL = Path(__file__).resolve().parents[2] / "tools" / "compose_testset.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("compose_testset_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_layout_and_determinism(tool, synthetic_fg, tmp_path):
    args = ["--foregrounds", str(synthetic_fg), "--bgs-per-fg", "2", "--write-fg-bg", "--quiet"]
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert tool.main([*args, "--seed", seed, "--output-dir", str(tmp_path / name)]) == 0
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


def test_real_photographs(tool, shared_data_dir, tmp_path):
    """Image + alpha input: estimated foreground, so known-foreground pixels keep the photo."""
    source = shared_data_dir / "matting" / "alphamatting_train_lowres"
    root = tmp_path / "two"
    for folder in ("image", "alpha"):
        (root / folder).mkdir(parents=True)
        for stem in ("GT01", "GT05"):
            (root / folder / f"{stem}.png").symlink_to(source / folder / f"{stem}.png")
    out = tmp_path / "out"
    args = ["--foregrounds", str(root), "--bgs-per-fg", "1", "--output-dir", str(out), "--quiet"]
    assert tool.main([*args, "--trimap-radius", "5", "5"]) == 0
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


def test_errors_are_one_line(tool, tmp_path, capsys):
    missing = tmp_path / "missing"
    assert tool.main(["--foregrounds", str(missing), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"compose_testset: error: {missing}: folder not found"
