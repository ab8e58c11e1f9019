"""Trimap conversions, encodings and the original padding rule."""

import numpy as np
import pytest
import torch

from diffmatte.modeling.trimap import (
    backbone_input,
    decoder_condition,
    pad_bottom_right,
    padded_size,
    trimap_from_gray_demo,
    trimap_from_uint8,
    trimap_onehot,
)

TRIMAP = torch.tensor([0.0, 0.5, 1.0, 0.5]).view(1, 1, 2, 2)


def test_trimap_from_uint8_thresholds():
    values = np.array([0, 84, 85, 128, 169, 170, 255], dtype=np.uint8)
    assert trimap_from_uint8(values).tolist() == [0, 0, 0.5, 0.5, 0.5, 1, 1]
    as_float = trimap_from_uint8(torch.tensor(values, dtype=torch.float32))
    assert as_float.dtype == torch.float32 and as_float.tolist() == [0, 0, 0.5, 0.5, 0.5, 1, 1]


def test_trimap_from_gray_demo_thresholds():
    values = np.array([0, 25, 26, 128, 229, 230, 255], dtype=np.uint8)
    assert trimap_from_gray_demo(values).tolist() == [0, 0, 0.5, 0.5, 0.5, 1, 1]


def test_conversions_do_not_modify_input():
    values = torch.tensor([[10.0, 200.0]])
    trimap_from_uint8(values)
    trimap_from_gray_demo(values)
    assert values.tolist() == [[10.0, 200.0]]


def test_onehot_channel_order_is_bg_unknown_fg():
    onehot = trimap_onehot(TRIMAP)
    assert onehot.shape == (1, 3, 2, 2) and onehot.dtype == torch.float32
    assert onehot[0, :, 0, 0].tolist() == [1, 0, 0]
    assert onehot[0, :, 0, 1].tolist() == [0, 1, 0]
    assert onehot[0, :, 1, 0].tolist() == [0, 0, 1]


def test_backbone_input_encodings():
    image = torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    value = backbone_input(image, TRIMAP, "value")
    assert value.shape == (1, 4, 2, 2)
    assert torch.equal(value[:, :3], image) and torch.equal(value[:, 3:], TRIMAP)
    onehot = backbone_input(image, TRIMAP, "onehot")
    assert onehot.shape == (1, 6, 2, 2) and torch.equal(onehot[:, 3:], trimap_onehot(TRIMAP))
    with pytest.raises(ValueError, match="encoding 'raw'"):
        backbone_input(image, TRIMAP, "raw")


def test_decoder_condition_maps_normalised_image_too():
    image = torch.tensor([0.25, -1.0, 2.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    cond = decoder_condition(image, TRIMAP)
    assert cond.shape == (1, 6, 2, 2)
    assert cond[0, :3, 0, 0].tolist() == [-0.5, -3.0, 3.0]
    assert cond[0, 3:, 0, 1].tolist() == [-1.0, 1.0, -1.0]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((640, 643), (672, 672)),
        ((512, 512), (512, 512)),
        ((512, 500), (544, 512)),
        ((500, 512), (512, 544)),
        ((33, 31), (64, 32)),
    ],
)
def test_padded_size_keeps_the_original_quirk(size, expected):
    assert padded_size(*size) == expected


def test_padded_size_other_multiple():
    assert padded_size(48, 40, divisibility=16) == (64, 48)


def test_pad_bottom_right_with_zeros():
    x = torch.ones(1, 2, 3, 4)
    padded = pad_bottom_right(x, (5, 6))
    assert padded.shape == (1, 2, 5, 6)
    assert torch.equal(padded[..., :3, :4], x)
    assert padded.sum().item() == x.sum().item()
    assert pad_bottom_right(x, (3, 4)) is x
