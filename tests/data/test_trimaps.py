"""Trimap tools on known shapes: squares, single pixels, lines and grey ramps."""

import numpy as np
import pytest

from diffmatte.data.augmentations import dilated_trimap
from diffmatte.data.trimaps import (
    TrimapError,
    check_trimap,
    mask_to_bool,
    object_size,
    parse_width,
    snap_trimap,
    trimap_from_alpha,
    trimap_from_mask,
    trimap_from_scribbles,
    width_in_pixels,
)


def _square(size: int = 40, lo: int = 10, hi: int = 30) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = 255
    return mask


def _row_counts(trimap: np.ndarray, row: int) -> tuple[int, int, int]:
    line = trimap[row]
    return int((line == 0).sum()), int((line == 128).sum()), int((line == 255).sum())


def test_mask_band_is_width_pixels_on_each_side():
    trimap = trimap_from_mask(_square(), 3)
    assert set(np.unique(trimap).tolist()) == {0, 128, 255}
    # Middle row: the square spans columns 10..29; foreground 13..26, unknown 7..12 and 27..32.
    assert trimap[20, 13:27].tolist() == [255] * 14
    assert trimap[20, 7:13].tolist() == [128] * 6
    assert trimap[20, 27:33].tolist() == [128] * 6
    assert trimap[20, :7].tolist() == [0] * 7 and trimap[20, 33:].tolist() == [0] * 7


def test_mask_inside_and_outside_widths_differ():
    trimap = trimap_from_mask(_square(), 5, inside_width=0)
    assert _row_counts(trimap, 20) == (40 - 20 - 10, 10, 20)
    trimap = trimap_from_mask(_square(), 0, inside_width=4)
    assert _row_counts(trimap, 20) == (20, 8, 12)


def test_mask_width_as_fraction_of_object_size():
    region = _square() > 0
    assert object_size(region) == 20.0
    assert width_in_pixels(0.1, region) == 2
    assert width_in_pixels(7, region) == 7
    np.testing.assert_array_equal(trimap_from_mask(_square(), 0.1), trimap_from_mask(_square(), 2))


def test_parse_width():
    assert parse_width("12") == 12 and isinstance(parse_width("12"), int)
    assert parse_width("5%") == 0.05
    for bad in ("x", "-3", "1.5"):
        with pytest.raises(TrimapError, match="band width"):
            parse_width(bad)


def test_soft_and_float_masks_are_thresholded():
    soft = _square().astype(np.float32) / 255 * 0.6  # a weak segmentation: 0.6 inside
    np.testing.assert_array_equal(mask_to_bool(soft), _square() > 0)
    assert not mask_to_bool(soft, threshold=0.7).any()
    sixteen = _square().astype(np.uint16) * 257
    np.testing.assert_array_equal(trimap_from_mask(sixteen, 2), trimap_from_mask(_square(), 2))


def test_mask_touching_the_border_keeps_its_border_pixels():
    mask = np.zeros((20, 20), np.uint8)
    mask[:, :10] = 255
    trimap = trimap_from_mask(mask, 2)
    assert trimap[:, 0].tolist() == [255] * 20
    assert trimap[0, :].tolist() == [255] * 8 + [128] * 4 + [0] * 8


def test_mask_errors():
    with pytest.raises(TrimapError, match="2-D"):
        trimap_from_mask(np.zeros((4, 4, 3), np.uint8), 1)
    with pytest.raises(TrimapError, match=">= 0"):
        trimap_from_mask(_square(), -1)
    with pytest.raises(TrimapError, match="number"):
        trimap_from_mask(_square(), True)


def test_alpha_rule_is_the_composition1k_rule():
    alpha = np.zeros((30, 30), np.uint8)
    alpha[10:20, 10:20] = 255
    alpha[10:20, 20] = 100  # one fractional column
    np.testing.assert_array_equal(trimap_from_alpha(alpha, 3), dilated_trimap(alpha, 3))
    trimap = trimap_from_alpha(alpha, 0)
    assert trimap[15, 20] == 128 and trimap[15, 19] == 255 and trimap[15, 21] == 0
    # Float alphas are quantised like saved alphas first.
    np.testing.assert_array_equal(
        trimap_from_alpha(alpha.astype(np.float32) / 255, 3), dilated_trimap(alpha, 3)
    )
    with pytest.raises(TrimapError, match="radius"):
        trimap_from_alpha(alpha, 1.5)


def test_scribbles_unmarked_is_unknown():
    fg = np.zeros((10, 10), np.uint8)
    bg = np.zeros((10, 10), bool)
    fg[5, 5] = 1
    bg[0, :] = True
    trimap = trimap_from_scribbles(fg, bg)
    assert trimap[5, 5] == 255 and trimap[0].tolist() == [0] * 10
    assert int((trimap == 128).sum()) == 100 - 10 - 1


def test_scribbles_grow_a_band_and_conflicts_stay_unknown():
    fg = np.zeros((11, 11), bool)
    bg = np.zeros((11, 11), bool)
    fg[5, 5] = True
    trimap = trimap_from_scribbles(fg, bg, grow=2)
    # OpenCV's 5x5 ellipse: rows of 1, 5, 5, 5, 1 pixels.
    assert int((trimap == 255).sum()) == 17
    bg[5, 7] = True
    trimap = trimap_from_scribbles(fg, bg, grow=1)
    assert trimap[5, 6] == 128  # claimed by both strokes
    assert trimap[5, 4] == 255 and trimap[5, 8] == 0
    with pytest.raises(TrimapError, match="one size"):
        trimap_from_scribbles(fg, bg[:5])


def test_snap_uses_the_demo_thresholds():
    ramp = np.arange(256, dtype=np.uint8)[None]
    snapped = snap_trimap(ramp)
    assert snapped[0, :26].tolist() == [0] * 26 and snapped[0, 26] == 128
    assert snapped[0, 229] == 128 and snapped[0, 230:].tolist() == [255] * 26
    c1k = snap_trimap(ramp, "composition1k")
    assert c1k[0, 84] == 0 and c1k[0, 85] == 128 and c1k[0, 169] == 128 and c1k[0, 170] == 255


def test_check_reports_shares_and_snapping():
    gray = np.array([[0, 0, 128, 255], [0, 102, 128, 250]], np.uint8)
    summary = check_trimap(gray, image_shape=(2, 4, 3))
    assert summary.trimap.tolist() == [[0, 0, 128, 255], [0, 128, 128, 255]]
    assert (summary.background, summary.unknown, summary.foreground) == (0.375, 0.375, 0.25)
    assert summary.snapped and summary.grey_levels == 5
    assert not check_trimap(summary.trimap).snapped
    assert summary.describe() == "4x2: foreground 25.0%, unknown 37.5%, background 37.5%"


@pytest.mark.parametrize(
    ("gray", "shape", "message"),
    [
        (np.full((4, 4), 128, np.uint8), (5, 4), "size 4x4 does not match the image \\(4x5\\)"),
        (np.array([[0, 255]], np.uint8), None, "no unknown pixel"),
        (np.array([[0, 128]], np.uint8), None, "no foreground pixel"),
        (np.zeros((2, 2), np.float32), None, "uint8 or uint16"),
    ],
)
def test_check_rejects(gray, shape, message):
    with pytest.raises(TrimapError, match=message):
        check_trimap(gray, image_shape=shape)


def test_check_allows_no_foreground_on_request():
    summary = check_trimap(np.array([[0, 128]], np.uint8), require_foreground=False)
    assert summary.foreground == 0.0
