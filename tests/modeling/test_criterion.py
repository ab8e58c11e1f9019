"""Tests for the matting losses against hand-computed values and an independent reference."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from diffmatte.modeling.criterion import (
    MattingCriterion,
    laplacian_loss,
    laplacian_pyramid,
    sobel_gradients,
)

SCALE = 512 * 512


def _reference_pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """Laplacian pyramid of one 2-D map written with scipy ('mirror' == torch 'reflect')."""
    k1 = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    kernel = np.outer(k1, k1)
    out = []
    current = x
    for _ in range(levels):
        h, w = current.shape
        current = current[: h - h % 2, : w - w % 2]
        down = ndimage.correlate(current, kernel, mode="mirror")[::2, ::2]
        up = np.zeros_like(current)
        up[::2, ::2] = 4.0 * down
        out.append(current - ndimage.correlate(up, kernel, mode="mirror"))
        current = down
    return out


def test_mse_and_region_l1_hand_values():
    # 1x1x4x4: pred 0, target 1 everywhere; left half unknown (8 px), right half known.
    pred = torch.zeros(1, 1, 4, 4)
    target = torch.ones(1, 1, 4, 4)
    trimap = torch.ones(1, 1, 4, 4)
    trimap[..., :2] = 0.5
    losses = MattingCriterion(laplacian_levels=1)(pred, target, trimap)
    assert set(losses) == {
        "loss_mse",
        "loss_unknown_l1",
        "loss_known_l1",
        "loss_gradient",
        "loss_laplacian",
    }
    assert losses["loss_mse"].item() == pytest.approx(1.0)
    # mean over 16 px of |0 - 1| on 8 px = 0.5, times N * 512^2 / 8.
    assert losses["loss_unknown_l1"].item() == pytest.approx(0.5 * SCALE / 8)
    assert losses["loss_known_l1"].item() == pytest.approx(0.5 * SCALE / 8)
    # Constant maps: zero Sobel difference inside (zero padding acts the same on both), and a
    # constant offset has an empty band-pass pyramid.
    assert losses["loss_laplacian"].item() == pytest.approx(0.0, abs=1e-6)


def test_region_normaliser_uses_batch_size():
    # N=2, 16 px each, unknown only at one pixel of sample 0; |diff| = 0.5 there.
    pred = torch.zeros(2, 1, 4, 4)
    target = torch.full((2, 1, 4, 4), 0.5)
    trimap = torch.zeros(2, 1, 4, 4)
    trimap[0, 0, 0, 0] = 0.5
    losses = MattingCriterion(use_mse=False, laplacian_levels=1)(pred, target, trimap)
    assert losses["loss_unknown_l1"].item() == pytest.approx(0.5 / 32 * 2 * SCALE / 1)
    assert losses["loss_known_l1"].item() == pytest.approx(0.5 * 31 / 32 * 2 * SCALE / 31)
    assert "loss_mse" not in losses


def test_gradient_hand_value():
    # pred is a ramp along x (value = column index); target is 0; only pixel (1,1) is unknown.
    # Sobel-x at (1,1): rows weighted 1,2,1 of (p[:,2] - p[:,0]) = 4 * 2 = 8; Sobel-y = 0.
    pred = torch.arange(4.0).repeat(4, 1)[None, None]
    target = torch.zeros(1, 1, 4, 4)
    trimap = torch.ones(1, 1, 4, 4)
    trimap[0, 0, 1, 1] = 0.5
    gx, gy = sobel_gradients(pred)
    assert gx[0, 0, 1, 1].item() == 8.0 and gy[0, 0, 1, 1].item() == 0.0
    losses = MattingCriterion(use_mse=False, laplacian_levels=1)(pred, target, trimap)
    expected = (8.0 / 16 + 0.01 * 8.0 / 16) * SCALE / 1
    assert losses["loss_gradient"].item() == pytest.approx(expected)


def test_gradient_sign_and_padding():
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 2] = 1.0  # right neighbour of the centre
    gx, gy = sobel_gradients(x)
    assert gx[0, 0, 1, 1].item() == 2.0  # cross-correlation, positive to the right
    assert gy[0, 0, 0, 1].item() == 1.0 and gy[0, 0, 2, 1].item() == -1.0
    # Zero padding: at the spike itself both horizontal neighbours are 0.
    assert gx[0, 0, 1, 2].item() == 0.0


def test_empty_regions_give_zero_not_nan():
    pred = torch.zeros(1, 1, 4, 4)
    target = torch.ones(1, 1, 4, 4)
    losses = MattingCriterion(laplacian_levels=1)(pred, target, torch.ones(1, 1, 4, 4))
    assert losses["loss_unknown_l1"].item() == 0.0
    assert losses["loss_gradient"].item() == 0.0
    assert losses["loss_known_l1"].item() == pytest.approx(SCALE / 16)


def test_laplacian_pyramid_matches_scipy_reference():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 70, 66, generator=gen, dtype=torch.float64)
    ours = laplacian_pyramid(x, levels=5)
    ref = _reference_pyramid(x[0, 0].numpy(), levels=5)
    assert [p.shape[-2:] for p in ours] == [r.shape for r in ref]
    assert [tuple(r.shape) for r in ref][-1] == (4, 4)
    for p, r in zip(ours, ref, strict=True):
        np.testing.assert_allclose(p[0, 0].numpy(), r, atol=1e-12)


def test_laplacian_loss_weights_and_offset_invariance():
    gen = torch.Generator().manual_seed(1)
    pred = torch.rand(2, 1, 64, 64, generator=gen, dtype=torch.float64) * 2 - 1
    target = torch.rand(2, 1, 64, 64, generator=gen, dtype=torch.float64) * 2 - 1
    refs = [[_reference_pyramid(t[i, 0].numpy(), 5) for i in range(2)] for t in (pred, target)]
    expected = (
        sum(
            2**lvl * np.mean([np.abs(refs[0][i][lvl] - refs[1][i][lvl]) for i in range(2)])
            for lvl in range(5)
        )
        / 5
    )
    assert laplacian_loss(pred, target).item() == pytest.approx(expected, rel=1e-10)
    # A constant offset lives only in the (dropped) low-pass residual.
    assert laplacian_loss(pred + 0.3, target).item() == pytest.approx(expected, rel=1e-9)


def test_laplacian_too_small_is_clear():
    with pytest.raises(ValueError, match="too small"):
        laplacian_loss(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))


def test_full_criterion_on_512_equals_per_pixel_means():
    # At 512^2 the region terms equal the mean over the region's pixels.
    gen = torch.Generator().manual_seed(2)
    pred = torch.rand(1, 1, 512, 512, generator=gen) * 2 - 1
    target = torch.rand(1, 1, 512, 512, generator=gen) * 2 - 1
    trimap = torch.zeros(1, 1, 512, 512)
    trimap[..., 100:300, :] = 0.5
    trimap[..., 300:, :] = 1.0
    losses = MattingCriterion()(pred, target, trimap)
    unknown = trimap == 0.5
    diff = (pred - target).abs()
    assert losses["loss_unknown_l1"].item() == pytest.approx(diff[unknown].mean().item(), rel=1e-4)
    assert losses["loss_known_l1"].item() == pytest.approx(diff[~unknown].mean().item(), rel=1e-4)
    total = sum(losses.values())
    assert torch.isfinite(total)


def test_gradients_flow_and_shapes_checked():
    pred = torch.zeros(1, 1, 64, 64, requires_grad=True)
    trimap = torch.full((1, 1, 64, 64), 0.5)
    loss = sum(MattingCriterion()(pred, torch.ones(1, 1, 64, 64), trimap).values())
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(N,1,H,W\)"):
        MattingCriterion()(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64), trimap)
