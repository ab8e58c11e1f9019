"""UpsampleConv computes conv3x3(bilinear_x2(x)) at the low resolution, in both of its forms."""

import pytest
import torch
import torch.nn.functional as F

from diffmatte.inference.upsample_conv import UpsampleConv


@pytest.mark.parametrize("fold_columns", [False, True])
@pytest.mark.parametrize("size", [(5, 7), (1, 3), (4, 1), (2, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_low_resolution_upsample_conv_equals_conv_of_upsampled(size, channels_last, fold_columns):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 6, *size, generator=gen)
    weight = torch.randn(4, 6, 3, 3, generator=gen) / 5
    expected = F.conv2d(
        F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False), weight, padding=1
    )
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    upsample_conv = UpsampleConv.from_weight(weight, fold_columns)
    assert (upsample_conv.columns_weight is not None) == fold_columns
    assert (upsample_conv.matrix is None) == fold_columns
    out = upsample_conv(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fold_columns", [False, True])
def test_filters_are_derived_in_float32_then_cast_once(fold_columns):
    gen = torch.Generator().manual_seed(8)
    weight = torch.randn(4, 6, 3, 3, generator=gen) / 5
    fp32 = UpsampleConv.from_weight(weight, fold_columns)
    bf16 = UpsampleConv.from_weight(weight, fold_columns, dtype=torch.bfloat16)
    for name in ("weight", "matrix", "x_kernel", "columns_weight", "y_kernel"):
        full, cast = getattr(fp32, name), getattr(bf16, name)
        if full is None:
            assert cast is None
            continue
        assert cast.dtype == torch.bfloat16
        assert torch.equal(cast, full.to(torch.bfloat16)), name
    assert bf16.columns_weight is None or bf16.columns_weight.is_contiguous(
        memory_format=torch.channels_last
    )
