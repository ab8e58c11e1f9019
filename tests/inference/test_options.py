"""InferenceOptions: defaults, validation in one place, device checks."""

import pytest
import torch

from diffmatte.inference import InferenceOptions
from diffmatte.inference.options import DEFAULT_MAX_ATTENTION_BIAS_BYTES, DEFAULT_MAX_TILE_BYTES


def test_defaults_are_the_fast_float32_path():
    options = InferenceOptions()
    assert (options.precision, options.dtype, options.reference) == ("fp32", torch.float32, False)
    assert (options.attention, options.cached_decoder) == ("chunked", True)
    assert options.channels_last and options.low_res_upsample
    assert options.max_tile_bytes == DEFAULT_MAX_TILE_BYTES == 128 * 2**20
    assert options.max_attention_bias_bytes == DEFAULT_MAX_ATTENTION_BIAS_BYTES == 256 * 2**20
    assert not (options.compile or options.cuda_graph or options.heap_reuse)
    assert options.replace(attention="materialised").attention == "materialised"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"precision": "fp8"}, "precision must be one of fp32, fp16, bf16, got 'fp8'"),
        ({"attention": "flash"}, "attention must be one of chunked, materialised, got 'flash'"),
        ({"cached_decoder": 1}, "cached_decoder must be True or False, got 1"),
        ({"channels_last": "yes"}, "channels_last must be True or False, got 'yes'"),
        ({"max_tile_bytes": 0}, "max_tile_bytes must be a positive integer, got 0"),
        ({"max_attention_bias_bytes": True}, "max_attention_bias_bytes must be a positive"),
    ],
)
def test_invalid_values_raise_one_line(changes, message):
    with pytest.raises(ValueError, match=message) as info:
        InferenceOptions(**changes)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=message):
        InferenceOptions().replace(**changes)


def test_device_checks():
    InferenceOptions().check_device("cpu")
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device, not cpu"):
        InferenceOptions(cuda_graph=True).check_device(torch.device("cpu"))
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA device"):
        InferenceOptions(precision="fp16").check_device("cpu")
