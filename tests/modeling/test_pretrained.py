"""The registry of backbone pre-training formats: one filter signature, recognition, configs."""

import inspect

import pytest
import torch

from diffmatte.modeling.backbone import PRETRAINED_FORMATS, find_format
from diffmatte.modeling.backbone.resnet import ResNetEncoder


def test_every_filter_has_the_same_signature():
    signatures = {
        name: [
            (p.name, p.kind, p.default)
            for p in inspect.signature(fmt.checkpoint_filter).parameters.values()
        ]
        for name, fmt in PRETRAINED_FORMATS.items()
    }
    expected = [
        ("state_dict", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
        ("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
        ("generator", inspect.Parameter.POSITIONAL_OR_KEYWORD, None),
    ]
    assert signatures == {name: expected for name in ("vit", "resnet", "swin")}
    assert all(
        fmt.checkpoint_filter.__name__ == "checkpoint_filter_fn"
        for fmt in PRETRAINED_FORMATS.values()
    )


@pytest.mark.parametrize("name", sorted(PRETRAINED_FORMATS))
def test_marker_keys_recognise_exactly_one_family(name):
    fmt = PRETRAINED_FORMATS[name]
    state = {key: torch.zeros(1, 384) for key in fmt.marker_keys}
    assert find_format(state) is fmt
    others = [f for f in PRETRAINED_FORMATS.values() if f is not fmt]
    assert not any(other.recognises(state) for other in others)
    assert find_format({"fc.weight": torch.zeros(2, 2)}) is None


def test_default_configs():
    vit = PRETRAINED_FORMATS["vit"]
    assert vit.default_config({"pos_embed": torch.zeros(1, 197, 384)}) == "ViTS"
    assert vit.default_config({"pos_embed": torch.zeros(1, 197, 768)}) == "ViTB"
    assert vit.default_config({"pos_embed": torch.zeros(1, 197, 32)}) is None
    assert vit.default_config({}) is None
    assert PRETRAINED_FORMATS["resnet"].default_config({}) == "res34"
    assert PRETRAINED_FORMATS["swin"].default_config({}) == "swin_t"
    assert PRETRAINED_FORMATS["resnet"].backbone is ResNetEncoder
    assert vit.starts_from_scratch("blocks.3.attn.rel_pos_h")
    assert vit.starts_from_scratch("blocks.2.residual.conv1.weight")
    assert not vit.starts_from_scratch("blocks.3.attn.qkv.weight")
