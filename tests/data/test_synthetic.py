"""Synthetic matting samples: exact alpha model, content, determinism, folder output."""

import numpy as np
import pytest

from diffmatte.data.dim import DIMDataset
from diffmatte.data.sources import bundled_backgrounds, find_foregrounds
from diffmatte.data.synthetic import (
    _Canvas,
    generate_foreground,
    generate_foregrounds,
    generate_sample,
    write_foregrounds,
)
from diffmatte.utils.image_io import alpha_to_uint8, read_gray, read_image

SIZE = 160


@pytest.fixture(scope="module")
def foregrounds():
    return generate_foregrounds(3, SIZE, seed=0)


def test_canvas_alpha_is_exact_coverage():
    """Area coverage on the fine grid, translucent layers multiply transmittance."""
    canvas = _Canvas(4, 4, 4, np.zeros((4, 4, 3), np.float32))
    left = canvas.new_mask()
    left[:, :6] = 255  # pixel column 1 is half covered (fine columns 4, 5 of 4..7)
    canvas.add_hard(left, 1.0, np.ones((4, 4, 3), np.float32))
    top = canvas.new_mask()
    top[:4] = 255  # fine rows 0..3: the first pixel row, fully
    canvas.add_hard(top, 0.5, np.ones((4, 4, 3), np.float32))
    canvas.add_soft(np.full((4, 4), 0.2, np.float32), np.ones((4, 4, 3), np.float32))
    alpha = canvas.alpha()
    expected = np.full((4, 4), 0.2)
    expected[:, 0] = 1.0
    expected[:, 1] = 1 - 0.5 * 0.8  # half opaque: mean transmittance 0.5
    expected[0, 1] = 1 - 0.25 * 0.8  # half opaque, other half behind the 50 % layer
    expected[0, 2:] = 1 - 0.5 * 0.8  # only the 50 % layer
    np.testing.assert_allclose(alpha, expected, atol=1e-6)


def test_alpha_range_and_content(foregrounds):
    fractional_share, smooth = [], 0
    for fg, alpha in foregrounds:
        assert fg.shape == (SIZE, SIZE, 3) and alpha.shape == (SIZE, SIZE)
        assert fg.dtype == np.float32 and alpha.dtype == np.float32
        assert fg.min() >= 0 and fg.max() <= 1
        assert alpha.min() == 0.0 and alpha.max() == 1.0
        assert (alpha == 0).mean() > 0.2 and (alpha == 1).mean() > 0.03
        fractional = (alpha > 0.02) & (alpha < 0.98)
        fractional_share.append(fractional.mean())
        # Soft / semi-transparent: fractional pixels whose 3x3 neighbourhood is nearly flat.
        padded = np.pad(alpha, 1, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
        spread = windows.max(axis=(2, 3)) - windows.min(axis=(2, 3))
        smooth += np.count_nonzero(fractional & (spread < 0.05))
        # Hard edges: alpha goes from 0 to 1 within two pixels, along rows or columns.
        hard = 0
        for a in (alpha, alpha.T):
            hard += np.count_nonzero((a[:, :-2] == 0) & (a[:, 2:] == 1))
            hard += np.count_nonzero((a[:, :-2] == 1) & (a[:, 2:] == 0))
        assert hard > 20
    assert min(fractional_share) > 0.1
    assert smooth > 300


def test_determinism(foregrounds):
    fg, alpha = generate_foreground([0, 1], SIZE)
    np.testing.assert_array_equal(fg, foregrounds[1][0])
    np.testing.assert_array_equal(alpha, foregrounds[1][1])
    _, other = generate_foreground([1, 1], SIZE)
    assert not np.array_equal(other, alpha)


def test_non_square_and_supersampling():
    fg, alpha = generate_foreground(3, (64, 96), supersample=1)
    assert fg.shape == (64, 96, 3) and alpha.shape == (64, 96)
    with pytest.raises(ValueError, match="at least 16x16"):
        generate_foreground(3, 8)


def test_sample_on_bundled_background():
    sample = generate_sample(4, 128)
    alpha = sample["alpha"][:, :, None]
    np.testing.assert_allclose(
        sample["image"], sample["fg"] * alpha + sample["bg"] * (1 - alpha), atol=1e-6
    )
    trimap, alpha_u8 = sample["trimap"], alpha_to_uint8(sample["alpha"])
    assert set(np.unique(trimap)) == {0, 128, 255}
    assert np.all(alpha_u8[trimap == 255] == 255) and np.all(alpha_u8[trimap == 0] == 0)
    assert np.all(trimap[(alpha_u8 > 0) & (alpha_u8 < 255)] == 128)
    again = generate_sample(4, 128, backgrounds=bundled_backgrounds())
    np.testing.assert_array_equal(again["image"], sample["image"])


def test_written_folder_feeds_the_dataset(tmp_path):
    names = write_foregrounds(tmp_path, 2, 96, seed=2)
    assert names == ["synthetic_0000", "synthetic_0001"]
    files = find_foregrounds(tmp_path)
    assert [entry.name for entry in files] == names
    fg, alpha = generate_foreground([2, 1], 96)
    np.testing.assert_array_equal(read_gray(files[1].alpha_path), alpha_to_uint8(alpha))
    assert np.abs(read_image(files[1].fg_path) - fg).max() <= 0.5 / 255 + 1e-6
    sample = DIMDataset(tmp_path, bundled_backgrounds(), 64, seed=0)[0]
    assert sample["image"].shape == (3, 64, 64)
