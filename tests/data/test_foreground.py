"""Foreground estimation (Blur-Fusion)."""

import cv2
import numpy as np

from diffmatte.data.augmentations import composite
from diffmatte.data.foreground import estimate_foreground


def test_estimate_foreground_beats_the_image(disc):
    rng = np.random.default_rng(0)
    alpha = disc(128, 30, 25)
    fg = np.empty((128, 128, 3), np.float32)
    fg[:] = (0.9, 0.2, 0.1)
    bg = cv2.resize(rng.random((4, 4, 3)).astype(np.float32), (128, 128))
    image = composite(fg, alpha, bg)
    estimate = estimate_foreground(image, alpha)
    soft = (alpha > 0.1) & (alpha < 0.9)
    error = np.abs(estimate - fg)[soft].mean()
    assert error < 0.5 * np.abs(image - fg)[soft].mean()
    inside = alpha == 1
    np.testing.assert_allclose(estimate[inside], image[inside], atol=1e-6)
