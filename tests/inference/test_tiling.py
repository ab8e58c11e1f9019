"""The decoder's full-resolution tail in tiles equals the untiled computation, needs its halo,
and is tiled only above the memory budget."""

import pytest
import torch

import diffmatte.inference.tiling as tiling
from diffmatte.diffusion.samplers import Sampler
from diffmatte.inference import InferenceOptions, build_inference_model
from diffmatte.inference.options import DEFAULT_MAX_TILE_BYTES

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tile_rows_of_the_default_budget():
    # ViT-S: 32 channels into the head, float32. 1024 x 1024 in one piece, 2048 x 2048 in 4
    # tiles of 128 rows at 1/4 resolution, 4096 x 4096 in 16 tiles of 64.
    assert tiling.tile_rows(1, 1024, 1024, 32, 4, DEFAULT_MAX_TILE_BYTES) == 0
    assert tiling.tile_rows(1, 2048, 2048, 32, 4, DEFAULT_MAX_TILE_BYTES) == 128
    assert tiling.tile_rows(1, 4096, 4096, 32, 4, DEFAULT_MAX_TILE_BYTES) == 64
    # Half precision halves the bytes per row; a tiny budget still gives one row per tile.
    assert tiling.tile_rows(1, 4096, 4096, 32, 2, DEFAULT_MAX_TILE_BYTES) == 128
    assert tiling.tile_rows(2, 64, 64, 8, 4, 1) == 1


def test_tiled_tail_equals_untiled_and_needs_its_halo(model, make_inputs, monkeypatch):
    image, trimap, noise = make_inputs(1, 80, 70)  # padded to 96 x 96: 24 rows at 1/4 res.
    sampler = Sampler.from_strategy("ddim3")
    whole = build_inference_model(model).sample(image, trimap, sampler, noise=noise).alpha
    reference = model.sample(image, trimap, sampler, noise=noise).alpha
    # One full-resolution row of the last block's 8 channels: 96 * 8 * 4 bytes; 4 of them are
    # one row at 1/4 resolution, so every tile is 1 or 2 rows there.
    row_bytes = 96 * 8 * 4
    cond, features = torch.zeros(1, 6, 96, 96), torch.zeros(1, 32, 6, 6)
    for rows in (1, 2):
        tiled_model = build_inference_model(
            model, InferenceOptions(max_tile_bytes=4 * rows * row_bytes)
        )
        assert tiled_model.decoder.prepare(cond, features).tile_rows == rows
        tiled = tiled_model.sample(image, trimap, sampler, noise=noise).alpha
        torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)
        torch.testing.assert_close(tiled, reference, atol=1e-4, rtol=0)
    monkeypatch.setattr(tiling, "TAIL_HALO", tiling.TAIL_HALO - 1)
    short_halo = tiled_model.sample(image, trimap, sampler, noise=noise).alpha
    assert (short_halo - whole).abs().max() > 1e-3
