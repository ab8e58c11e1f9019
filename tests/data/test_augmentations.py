"""Composition, trimaps and the random augmentation steps."""

import cv2
import numpy as np

from diffmatte.data.augmentations import (
    dilated_trimap,
    mix_foregrounds,
    random_crop,
    random_jitter,
    random_trimap,
    resize_foreground,
)


def test_random_trimap_erodes_definite_regions(disc):
    alpha = disc(640, 200, 20)
    for seed in range(3):
        trimap = random_trimap(alpha, np.random.default_rng(seed), random_interp=False)
        assert set(np.unique(trimap)) == {0, 128, 255}
        assert np.all(alpha[trimap == 255] == 1.0)
        assert np.all(alpha[trimap == 0] == 0.0)
        assert np.all(trimap[(alpha > 0) & (alpha < 1)] == 128)


def test_random_crop_centres_unknown_and_upscales():
    rng = np.random.default_rng(0)
    trimap = np.zeros((300, 400), np.uint8)
    trimap[140:160, 250:270] = 128
    fg = rng.random((300, 400, 3)).astype(np.float32)
    alpha = (trimap / 255.0).astype(np.float32)
    bg = rng.random((50, 70, 3)).astype(np.float32)
    for seed in range(5):
        out = random_crop(fg, alpha, trimap, bg, 128, np.random.default_rng(seed))
        assert [array.shape[:2] for array in out] == [(128, 128)] * 4
        assert np.count_nonzero(out[2] == 128) >= 100
    small = random_crop(fg[:90, :100], alpha[:90, :100], trimap[:90, :100], bg, 128, rng)
    assert [array.shape[:2] for array in small] == [(128, 128)] * 4


def test_mix_foregrounds():
    rng = np.random.default_rng(0)
    a1 = np.full((8, 8), 0.5, np.float32)
    a2 = np.full((8, 8), 0.5, np.float32)
    f1, f2 = np.zeros((8, 8, 3), np.float32), np.ones((8, 8, 3), np.float32)
    fg, alpha = mix_foregrounds(f1, a1, f2, a2, rng, random_interp=False)
    np.testing.assert_allclose(alpha, 0.75)
    np.testing.assert_allclose(fg, 0.5)
    ones = np.ones((8, 8), np.float32)
    fg, alpha = mix_foregrounds(f1, ones, f2, a2, rng, random_interp=False)
    assert fg is f1 and alpha is ones


def test_resize_foreground_nearest_without_random_interp():
    rng = np.random.default_rng(0)
    fg = rng.random((30, 50, 3)).astype(np.float32)
    alpha = rng.random((30, 50)).astype(np.float32)
    out_fg, out_alpha = resize_foreground(fg, alpha, 40, rng, random_interp=False)
    np.testing.assert_array_equal(out_fg, cv2.resize(fg, (40, 40), interpolation=cv2.INTER_NEAREST))
    np.testing.assert_array_equal(
        out_alpha, cv2.resize(alpha, (40, 40), interpolation=cv2.INTER_NEAREST)
    )
    # Random interpolations draw two choices, fg first: the same generator state gives the same.
    first = resize_foreground(fg, alpha, 40, np.random.default_rng(3))
    second = resize_foreground(fg, alpha, 40, np.random.default_rng(3))
    for a, b in zip(first, second, strict=True):
        assert a.shape[:2] == (40, 40) and a.min() >= 0 and a.max() <= 1
        np.testing.assert_array_equal(a, b)


def test_random_jitter_keeps_range_and_skips_empty_alpha():
    rng = np.random.default_rng(0)
    fg = rng.random((32, 32, 3)).astype(np.float32)
    assert random_jitter(fg, np.zeros((32, 32), np.float32), rng) is fg
    jittered = random_jitter(fg, np.ones((32, 32), np.float32), np.random.default_rng(1))
    assert jittered.shape == fg.shape and jittered.min() >= 0 and jittered.max() <= 1
    assert np.abs(jittered - fg).mean() > 0.01


def test_dilated_trimap_hard_edge_width():
    alpha = np.zeros((20, 100), np.uint8)
    alpha[:, 50:] = 255
    trimap = dilated_trimap(alpha, 3)
    # Unknown where a radius-3 disc sees both sides: columns 47..52.
    assert np.all(trimap[:, :47] == 0) and np.all(trimap[:, 53:] == 255)
    assert np.all(trimap[:, 47:53] == 128)
    band = alpha.copy()
    band[:, 40:50] = 100
    assert np.count_nonzero(dilated_trimap(band, 0)[0] == 128) == 10
