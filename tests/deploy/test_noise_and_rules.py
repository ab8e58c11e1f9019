"""The torch-free runtime's rules against their PyTorch originals: noise stream, time grid,
padding, trimap levels."""

import numpy as np
import pytest
import torch

from diffmatte.deploy.noise import TorchCompatibleNormal
from diffmatte.deploy.runtime import padded_size, parse_strategy, time_grid, trimap_levels
from diffmatte.diffusion.samplers import Sampler
from diffmatte.inference.functional import trimap_to_model
from diffmatte.modeling import trimap as torch_trimap


@pytest.mark.parametrize(
    ("seed", "shape"),
    [(8282, (1, 1, 301, 417)), (0, (1, 1, 4, 4)), (123, (1, 1, 7, 9)), (2**33 + 5, (2, 1, 5, 7))],
)
def test_noise_equals_torch_randn_stream(seed, shape):
    generator = torch.Generator().manual_seed(seed)
    stream = TorchCompatibleNormal(seed)
    for _ in range(3):  # consecutive draws continue the stream (DDPM step noise)
        expected = torch.randn(shape, generator=generator).numpy()
        got = stream.randn(*shape)
        assert got.dtype == np.float32 and got.shape == shape
        # Same uniforms and Box-Muller pairing; log/sin/cos differ at most in the last bits.
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        assert (got == expected).mean() > 0.6


def test_noise_refuses_fewer_than_16_values():
    with pytest.raises(ValueError, match="at least 16"):
        TorchCompatibleNormal(0).randn(1, 1, 3, 5)


def test_time_grid_equals_torch_linspace_bitwise():
    for steps in range(1, 301):
        expected = np.array([t for t, _ in Sampler(steps=steps).time_pairs()] + [0.0], np.float32)
        np.testing.assert_array_equal(time_grid(steps), expected)


def test_padded_size_is_the_original_quirk():
    for height in range(1, 100, 7):
        for width in (32, 64, 65, 417):
            assert padded_size(height, width) == torch_trimap.padded_size(height, width)
    assert padded_size(640, 643) == (672, 672)
    assert padded_size(320, 320) == (320, 320)


@pytest.mark.parametrize("thresholds", ["composition1k", "demo"])
def test_trimap_levels_match_torch(thresholds):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    expected = trimap_to_model(gray, thresholds)[0, 0].numpy()
    np.testing.assert_array_equal(trimap_levels(gray, thresholds), expected)


def test_trimap_levels_reject_bad_input():
    with pytest.raises(ValueError, match="0, 0.5, 1"):
        trimap_levels(np.full((4, 4), 0.3, np.float32))
    with pytest.raises(ValueError, match="thresholds"):
        trimap_levels(np.zeros((4, 4), np.uint8), "otsu")


def test_parse_strategy():
    assert parse_strategy("DDIM10") == ("ddim", 10)
    assert parse_strategy("ddpm1") == ("ddpm", 1)
    for bad in ("ddim0", "ddim", "euler5", None):
        with pytest.raises(ValueError, match="invalid sampling strategy"):
            parse_strategy(bad)
