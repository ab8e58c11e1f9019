"""Tests of the plain ViT backbone: checkpoint layout, attention numerics, shapes."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffmatte.modeling.backbone import ViT
from diffmatte.modeling.backbone.vit import (
    Block,
    ChannelLayerNorm,
    attention_reference,
    checkpoint_filter_fn,
    get_rel_pos,
    rel_pos_bias,
    resize_abs_pos_embed,
    window_partition,
    window_unpartition,
)

CONFIGS = {
    "ViTS": dict(embed_dim=384, num_heads=6, img_size=512),
    "ViTB": dict(embed_dim=768, num_heads=12, img_size=512),
    "ViTS_1024": dict(embed_dim=384, num_heads=6, img_size=1024),
}
# Backbone parameter counts of the released configs (docs/original_release.md#checkpoints).
BACKBONE_PARAMS = {"ViTS": 23_745_792, "ViTB": 93_732_864, "ViTS_1024": 23_778_560}
PREFIX = "model.backbone."

_MODELS: dict[str, ViT] = {}


def _model(name: str) -> ViT:
    if name not in _MODELS:
        torch.manual_seed(0)
        model = ViT(**CONFIGS[name]).eval()
        _randomize(model, seed=0, std=0.02)  # non-zero relative positions and residual blocks
        _MODELS[name] = model
    return _MODELS[name]


def _randomize(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_count(name):
    model = _model(name)
    assert sum(p.numel() for p in model.parameters()) == BACKBONE_PARAMS[name]
    assert model.out_channels == CONFIGS[name]["embed_dim"]
    assert model.size_divisibility == 16


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_matches_release(released_keys, name):
    spec = released_keys(name)
    state = _model(name).state_dict()
    expected = [k for k in spec["state_dict_order"] if k.startswith(PREFIX)]
    assert [PREFIX + k for k in state] == expected
    assert not [k for k in spec["buffers"] if k.startswith(PREFIX)]
    for key in expected:
        assert list(state[key[len(PREFIX) :]].shape) == spec["params"][key], key
    assert sum(v.numel() for v in state.values()) == spec["params_by_part"]["backbone"]


@pytest.mark.parametrize("name", ["ViTS", "ViTS_1024"])
def test_strict_load_of_release_shapes(released_keys, name):
    spec = released_keys(name)
    gen = torch.Generator().manual_seed(1)
    state = {
        k[len(PREFIX) :]: torch.randn(shape, generator=gen) * 0.02
        for k, shape in spec["params"].items()
        if k.startswith(PREFIX)
    }
    model = _model(name)
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.blocks[2].attn.rel_pos_h, state["blocks.2.attn.rel_pos_h"])
    # The global-block tables are the only difference between ViTS and ViTS_1024.
    other = _model("ViTS_1024" if name == "ViTS" else "ViTS")
    with pytest.raises(RuntimeError, match=r"size mismatch for blocks\.2\.attn\.rel_pos_h"):
        other.load_state_dict(state, strict=True)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_shape_on_non_window_multiple_grid(name):
    model = _model(name)
    torch.manual_seed(2)
    x = torch.randn(2, 4, 64, 96)  # token grid 4x6: padded to one 14x14 window
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, CONFIGS[name]["embed_dim"], 4, 6)
    assert torch.isfinite(out).all()


def test_input_not_multiple_of_patch_raises():
    with pytest.raises(ValueError, match="multiples of 16"):
        _model("ViTS")(torch.zeros(1, 4, 64, 90))


def test_get_rel_pos_interpolation_known_values():
    # 3 rows resized to 5: sources (i + 0.5) * 3/5 - 0.5 = [-0.2, 0.4, 1.0, 1.6, 2.2], clamped.
    table = torch.tensor([[0.0], [1.0], [2.0]])
    rel = get_rel_pos(3, 3, table)
    assert rel.shape == (3, 3, 1)
    resized = torch.tensor([0.0, 0.4, 1.0, 1.6, 2.0])
    expected = torch.stack([resized[i - torch.arange(3) + 2] for i in range(3)])
    torch.testing.assert_close(rel[..., 0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(rel[0, :, 0], torch.tensor([1.0, 0.4, 0.0]), atol=1e-6, rtol=0)


def test_get_rel_pos_without_interpolation_and_unequal_sizes():
    table = torch.arange(7.0)[:, None]
    # Equal sizes, table of the right length: entry [i, j] = table[i - j + 3].
    torch.testing.assert_close(get_rel_pos(4, 4, table)[1, :, 0], torch.tensor([4.0, 3, 2, 1]))
    # q=2, k=4: query coordinates are scaled by 2, index = 2i - j + 3.
    rel = get_rel_pos(2, 4, table)[..., 0]
    torch.testing.assert_close(rel, torch.tensor([[3.0, 2, 1, 0], [5.0, 4, 3, 2]]))


def test_sdpa_with_rel_pos_bias_matches_reference_values_and_gradients(
    check_attention_against_reference,
):
    # The model's own attention: the full bias as the float mask of scaled_dot_product_attention.
    def attend(q, k, v, rel_h, rel_w, grid, scale):
        bias = rel_pos_bias(q, rel_h, rel_w, grid, grid)
        assert bias.shape == (2, 3, 165, 165)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)

    check_attention_against_reference(attend)


def test_reference_attention_matches_explicit_formula():
    gen = torch.Generator().manual_seed(4)
    dim, grid = 4, (3, 2)
    q, k, v = (torch.randn(1, 1, 6, dim, generator=gen) for _ in range(3))
    rel_h = torch.randn(5, dim, generator=gen)
    rel_w = torch.randn(3, dim, generator=gen)
    logits = torch.empty(6, 6)
    for qi in range(6):
        for ki in range(6):
            (i, j), (a, c) = divmod(qi, 2), divmod(ki, 2)
            dot = (q[0, 0, qi] * k[0, 0, ki]).sum() * 0.5
            logits[qi, ki] = dot + q[0, 0, qi] @ rel_h[i - a + 2] + q[0, 0, qi] @ rel_w[j - c + 1]
    expected = logits.softmax(-1) @ v[0, 0]
    out = attention_reference(q, k, v, rel_h, rel_w, grid, grid, 0.5)
    torch.testing.assert_close(out[0, 0], expected, atol=1e-6, rtol=0)


def _naive_rel_bias(q_grid, table_h, table_w):
    """(S, S, C) queries of one window -> (S*S, S*S) bias, one key position at a time."""
    size = q_grid.shape[0]
    bias = torch.empty(size, size, size, size)
    rows = torch.arange(size)
    for a in range(size):
        for c in range(size):
            th = table_h[rows - a + size - 1]  # (S_i, C)
            tw = table_w[rows - c + size - 1]  # (S_j, C)
            bias[:, :, a, c] = (q_grid * th[:, None]).sum(-1) + (q_grid * tw[None]).sum(-1)
    return bias.reshape(size * size, size * size)


def _naive_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """Window block written out: pad after norm1, attend inside each window, crop."""
    size = block.window_size
    attn = block.attn
    heads = attn.num_heads
    n, h, w, dim = x.shape
    head_dim = dim // heads
    y = F.layer_norm(x, (dim,), block.norm1.weight, block.norm1.bias, 1e-6)
    hp, wp = math.ceil(h / size) * size, math.ceil(w / size) * size
    padded = torch.zeros(n, hp, wp, dim)
    padded[:, :h, :w] = y
    out = torch.zeros(n, hp, wp, dim)
    for b in range(n):
        for r0 in range(0, hp, size):
            for c0 in range(0, wp, size):
                win = padded[b, r0 : r0 + size, c0 : c0 + size].reshape(-1, dim)
                qkv = win @ attn.qkv.weight.t() + attn.qkv.bias
                heads_out = []
                for m in range(heads):
                    q = qkv[:, m * head_dim : (m + 1) * head_dim]
                    k = qkv[:, dim + m * head_dim : dim + (m + 1) * head_dim]
                    v = qkv[:, 2 * dim + m * head_dim : 2 * dim + (m + 1) * head_dim]
                    bias = _naive_rel_bias(
                        q.reshape(size, size, head_dim), attn.rel_pos_h, attn.rel_pos_w
                    )
                    probs = (q @ k.t() / math.sqrt(head_dim) + bias).softmax(-1)
                    heads_out.append(probs @ v)
                merged = torch.cat(heads_out, -1) @ attn.proj.weight.t() + attn.proj.bias
                out[b, r0 : r0 + size, c0 : c0 + size] = merged.reshape(size, size, dim)
    x = x + out[:, :h, :w]
    y = F.layer_norm(x, (dim,), block.norm2.weight, block.norm2.bias, 1e-6)
    mlp = F.gelu(y @ block.mlp.fc1.weight.t() + block.mlp.fc1.bias)
    return x + mlp @ block.mlp.fc2.weight.t() + block.mlp.fc2.bias


def test_window_block_matches_naive_per_window_loop():
    torch.manual_seed(5)
    block = Block(
        dim=16,
        num_heads=2,
        mlp_ratio=2.0,
        qkv_bias=True,
        drop_path=0.0,
        use_rel_pos=True,
        window_size=14,
        use_residual_block=False,
        input_size=(32, 32),
    ).eval()
    _randomize(block, seed=6, std=0.3)
    x = torch.randn(2, 17, 20, 16)  # padded to 28x28: 2x2 windows, pad tokens in three of them
    with torch.no_grad():
        out = block(x)
        expected = _naive_block(block, x)
    assert block.attn.rel_pos_h.shape == (27, 8)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_window_partition_round_trip_and_zero_padding():
    x = torch.arange(2 * 5 * 7 * 3, dtype=torch.float32).reshape(2, 5, 7, 3)
    windows, padded = window_partition(x, 4)
    assert padded == (8, 8)
    assert windows.shape == (2 * 2 * 2, 4, 4, 3)
    torch.testing.assert_close(windows[1], F.pad(x[0, :4, 4:7], (0, 0, 0, 1)))
    assert windows[3, 1:, 3:].abs().sum() == 0
    torch.testing.assert_close(window_unpartition(windows, 4, padded, (5, 7)), x)


def test_abs_pos_embed_drops_cls_slot_and_resizes():
    gen = torch.Generator().manual_seed(9)
    pos = torch.randn(1, 197, 8, generator=gen)
    same = resize_abs_pos_embed(pos, (14, 14))
    torch.testing.assert_close(same, pos[:, 1:].reshape(1, 14, 14, 8))
    constant = torch.full((1, 197, 8), 0.25)
    constant[:, 0] = 100.0  # the class slot must not leak into the grid
    resized = resize_abs_pos_embed(constant, (5, 9))
    assert resized.shape == (1, 5, 9, 8)
    torch.testing.assert_close(resized, torch.full((1, 5, 9, 8), 0.25), atol=1e-6, rtol=0)
    # Bicubic with align_corners=False: the 2x upsampled grid at (0, 0) is
    # sum_{a,b} w(a) w(b) g[a, b] with the cubic (A=-0.75) weights of source -0.25, clamped.
    grid = torch.randn(14, 14, generator=gen)
    pos = torch.cat([torch.zeros(1, 1), grid.reshape(1, -1)], 1)[..., None]
    up = resize_abs_pos_embed(pos, (28, 28))[0, :, :, 0]

    def cubic(d):
        d = abs(d)
        if d <= 1:
            return (1.25 * d - 2.25) * d * d + 1
        return ((-0.75 * d + 3.75) * d - 6) * d + 3

    src = -0.25
    taps = [(math.floor(src) + o, cubic(src - (math.floor(src) + o))) for o in (-1, 0, 1, 2)]
    value = sum(
        wa * wb * grid[min(max(a, 0), 13), min(max(b, 0), 13)] for a, wa in taps for b, wb in taps
    )
    assert abs(up[0, 0].item() - value.item()) < 1e-5


def test_residual_block_is_identity_at_init_and_uses_channel_layer_norm():
    model = ViT(embed_dim=32, num_heads=2, depth=1, img_size=64, residual_block_indexes=(0,))
    residual = model.blocks[0].residual
    x = torch.randn(2, 32, 3, 5)
    torch.testing.assert_close(residual(x), x)
    norm = ChannelLayerNorm(6)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(6.0))
        norm.bias.fill_(0.5)
    y = torch.randn(2, 6, 3, 4)
    mean = y.mean(1, keepdim=True)
    var = ((y - mean) ** 2).mean(1, keepdim=True)
    expected = (y - mean) / torch.sqrt(var + 1e-6) * torch.arange(6.0)[:, None, None] + 0.5
    torch.testing.assert_close(norm(y), expected, atol=1e-5, rtol=0)


def test_drop_path_only_in_training():
    torch.manual_seed(10)
    model = ViT(embed_dim=32, num_heads=2, depth=2, img_size=64, drop_path_rate=0.9)
    _randomize(model, seed=11)
    x = torch.randn(4, 4, 32, 32)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
        model.train()
        c = model(x)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert (a - c).abs().max() > 1e-3
    assert model.blocks[1].drop_path.drop_prob == pytest.approx(0.9)


def test_checkpoint_filter_widens_patch_embed_and_drops_extras():
    gen = torch.Generator().manual_seed(12)
    dino = {
        "cls_token": torch.zeros(1, 1, 8),
        "pos_embed": torch.randn(1, 197, 8, generator=gen),
        "patch_embed.proj.weight": torch.randn(8, 3, 16, 16, generator=gen),
        "patch_embed.proj.bias": torch.randn(8, generator=gen),
        "blocks.0.attn.qkv.weight": torch.randn(24, 8, generator=gen),
        "norm.weight": torch.ones(8),
        "head.weight": torch.ones(2, 8),
    }
    model = ViT(embed_dim=8, num_heads=2, depth=1, img_size=64, residual_block_indexes=())
    out = checkpoint_filter_fn({"model": dino}, model)
    assert sorted(out) == [
        "blocks.0.attn.qkv.weight",
        "patch_embed.proj.bias",
        "patch_embed.proj.weight",
        "pos_embed",
    ]
    weight = out["patch_embed.proj.weight"]
    assert weight.shape == (8, 4, 16, 16)
    torch.testing.assert_close(weight[:, :3], dino["patch_embed.proj.weight"])
    assert weight[:, 3].abs().sum() == 0
    missing, unexpected = model.load_state_dict(out, strict=False)
    assert unexpected == []
    assert "blocks.0.attn.rel_pos_h" in missing


def test_output_depends_on_trimap_channel():
    model = _model("ViTS")
    torch.manual_seed(13)
    x = torch.randn(1, 4, 32, 48)
    y = x.clone()
    y[:, 3] = 0.5
    with torch.no_grad():
        assert (model(x) - model(y)).abs().max() > 1e-3
