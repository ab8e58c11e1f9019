"""The cached decoder step equals DUNet.forward (BatchNorm folded, step-independent work cached,
NCHW or channels-last, both UpsampleConv forms), also at the released channel widths."""

import pytest
import torch

import diffmatte.inference.upsample_conv as upsample_conv
from diffmatte.inference.cached_decoder import CachedDUNet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["ViTS", "swin_t"])
def test_cached_step_matches_plain_forward(random_decoder, name):
    model, (x, t, features) = random_decoder(name)
    cached = CachedDUNet(model)
    with torch.no_grad():
        cache = cached.prepare(x[:, :6], features)
        for step_t in (t, torch.zeros(2), torch.ones(2)):
            plain = model(x, step_t, features)
            out = cached.step(x[:, 6:], step_t, cache)
            # BatchNorm folded into the convolutions changes the float rounding slightly.
            torch.testing.assert_close(out, plain, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="conditioning channels"):
        cached.prepare(x, features)


# The tiny decoder's up blocks have 16 to 48 input channels: a fold threshold of 0 runs their
# shortcuts through the matrix product, the default through the folded (1, 3) convolution.
@pytest.mark.parametrize(
    ("low_res_upsample", "fold_below"),
    [(False, 0), (True, 0), (True, upsample_conv.FOLD_COLUMNS_BELOW)],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_prepare_and_cached_step_match_forward(
    channels_last, low_res_upsample, fold_below, monkeypatch, make_model
):
    monkeypatch.setattr(upsample_conv, "FOLD_COLUMNS_BELOW", fold_below)
    model = make_model(seed=1).decoder
    cached = CachedDUNet(model, channels_last=channels_last, low_res_upsample=low_res_upsample)
    assert all((block.upsample_conv is not None) == low_res_upsample for block in cached.up)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 7, 64, 96, generator=gen)
    features = torch.randn(2, 32, 4, 6, generator=gen)
    with torch.no_grad():
        cache = cached.prepare(x[:, :6], features)
        for t in (torch.tensor([1.0, 0.3]), torch.zeros(2)):
            expected = model(x, t, features)
            out = cached.step(x[:, 6:], t, cache)
            assert out.is_contiguous()
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="do not match the decoder input"):
        cached.prepare(x[:, :6], features[..., :-1])


def test_weights_are_cast_once_and_maps_computed_in_the_compute_dtype(random_decoder):
    model, (x, t, features) = random_decoder("ViTS")
    cached = CachedDUNet(model, dtype=torch.bfloat16)
    for block in cached.down + cached.up:
        assert block.conv1_weight.dtype == block.conv2_bias.dtype == torch.bfloat16
        assert block.time_weight.dtype == torch.bfloat16
    assert cached.head.conv1_weight.dtype == torch.bfloat16
    with torch.no_grad():
        cache = cached.prepare(x[:, :6], features)
        assert cache.mid_activated.dtype == cache.cond_conv1.dtype == torch.bfloat16
        out = cached.step(x[:, 6:], t, cache)
        expected = model(x, t, features)
    assert out.dtype == torch.bfloat16
    # bfloat16 keeps 8 bits of mantissa: logits of size ~1 agree to a few hundredths.
    assert (out.float() - expected).abs().max() < 0.1
    assert (out.float() - expected).abs().mean() < 0.02
