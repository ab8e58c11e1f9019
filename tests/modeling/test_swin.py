"""Tests of the prior-token Swin-T backbone (swin_t)."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffmatte.modeling.backbone.swin import (
    PriorSwinBlock,
    PriorSwinTransformer,
    checkpoint_filter_fn,
    prior_relative_position_index,
    region_priors,
    shifted_window_mask,
    trimap_region_masks,
    window_partition,
    window_reverse,
)

PREFIX = "model.backbone."


@pytest.fixture(scope="module")
def swin() -> PriorSwinTransformer:
    torch.manual_seed(0)
    return PriorSwinTransformer().eval()


@pytest.fixture(scope="module")
def swin_keys(released_keys):
    return released_keys("swin_t")


def _random_input(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, 3, h, w, generator=g)
    labels = torch.randint(0, 3, (n, h, w), generator=g)
    onehot = F.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    return torch.cat([image, onehot], dim=1)


def test_state_dict_matches_released_keys_shapes_and_order(swin, swin_keys):
    expected = [k for k in swin_keys["state_dict_order"] if k.startswith(PREFIX)]
    state = swin.state_dict()
    assert [PREFIX + k for k in state] == expected
    shapes = {**swin_keys["params"], **swin_keys["buffers"]}
    for key, value in state.items():
        assert list(value.shape) == shapes[PREFIX + key], key
    buffers = [k for k in state if PREFIX + k in swin_keys["buffers"]]
    assert len(buffers) == 12 and all(state[k].dtype == torch.int64 for k in buffers)


def test_parameter_count_matches_released_model(swin, swin_keys):
    total = sum(p.numel() for p in swin.parameters())
    assert total == swin_keys["params_by_part"]["backbone"] == 27_523_479
    assert total + swin_keys["params_by_part"]["decoder"] == swin_keys["total_params"]
    assert swin_keys["total_params"] == 38_753_560


def test_strict_load_of_random_state_dict(swin):
    g = torch.Generator().manual_seed(1)
    random_state = {
        k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
        for k, v in swin.state_dict().items()
    }
    fresh = PriorSwinTransformer()
    fresh.load_state_dict(random_state, strict=True)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, random_state[key]), key


@pytest.mark.parametrize(("n", "h", "w"), [(1, 64, 96), (1, 96, 128)])
def test_forward_shape(swin, n, h, w):
    with torch.no_grad():
        out = swin(_random_input(n, h, w, seed=2))
    assert out.shape == (n, 768, h // 32, w // 32)
    assert torch.isfinite(out).all()
    assert swin.out_channels == 768 and swin.size_divisibility == 32


def test_batch_items_are_independent(swin):
    x = _random_input(2, 32, 64, seed=3)
    with torch.no_grad():
        both = swin(x)
        first = swin(x[:1])
        second = swin(x[1:])
    torch.testing.assert_close(both, torch.cat([first, second]), rtol=1e-4, atol=1e-4)


def test_trimap_changes_output_through_priors(swin):
    x = _random_input(1, 32, 32, seed=4)
    flipped = x.clone()
    flipped[:, 3:] = flipped[:, [5, 4, 3]]  # swap background and foreground
    with torch.no_grad():
        diff = (swin(x) - swin(flipped)).abs().max().item()
    assert diff > 1e-2


@pytest.mark.parametrize("shape", [(1, 6, 64, 80), (1, 4, 64, 64), (6, 64, 64)])
def test_bad_input_is_rejected(swin, shape):
    with pytest.raises(ValueError, match="PriorSwinTransformer"):
        swin(torch.zeros(shape))


def test_drop_path_only_in_training():
    torch.manual_seed(5)
    model = PriorSwinTransformer(embed_dim=12, depths=(2, 2), num_heads=(1, 2), drop_path_rate=0.5)
    plain = PriorSwinTransformer(embed_dim=12, depths=(2, 2), num_heads=(1, 2), drop_path_rate=0.0)
    plain.load_state_dict(model.state_dict())
    x = _random_input(4, 32, 32, seed=6)
    model.eval()
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x))
        model.train()
        torch.manual_seed(7)
        a = model(x)
        torch.manual_seed(8)
        b = model(x)
    assert not torch.allclose(a, b)
    rates = [blk.drop_path.drop_prob for stage in model.layers for blk in stage.blocks]
    assert rates == pytest.approx([0.0, 0.5 / 3, 1.0 / 3, 0.5])


def test_relative_position_index_known_values():
    index = prior_relative_position_index(7, 6)
    assert index.shape == (49, 55) and index.dtype == torch.int64
    assert index[0, 0] == 84  # same position: (0 + 6) * 13 + (0 + 6)
    assert index[0, 48] == 0  # key 6 rows below and 6 columns right
    assert index[48, 0] == 168
    assert index[1, 0] == 85 and index[7, 0] == 97
    assert torch.equal(index[:, 49:], torch.arange(169, 175).expand(49, 6))
    assert torch.equal(index[:, :49].diagonal(), torch.full((49,), 84))


def test_shifted_window_mask_known_values():
    mask = shifted_window_mask(14, 14, 7, 3)
    assert mask.shape == (4, 49, 49)
    assert torch.all(mask[0] == 0)
    # Top-right window: local columns 0..3 and 4..6 come from opposite borders.
    col = torch.arange(49) % 7
    row = torch.arange(49) // 7
    expected = torch.where((col[:, None] < 4) != (col[None, :] < 4), -100.0, 0.0)
    assert torch.equal(mask[1], expected)
    same = ((col[:, None] < 4) == (col[None, :] < 4)) & ((row[:, None] < 4) == (row[None, :] < 4))
    assert torch.equal(mask[3], torch.where(same, 0.0, -100.0))


def test_window_partition_roundtrip():
    x = torch.arange(2 * 14 * 21 * 3, dtype=torch.float32).view(2, 14, 21, 3)
    windows = window_partition(x, 7)
    assert windows.shape == (12, 49, 3)
    assert torch.equal(windows[1, 0], x[0, 0, 7])  # second window starts at column 7
    assert torch.equal(windows[6, 8], x[1, 1, 1])
    assert torch.equal(window_reverse(windows, 7, 14, 21), x)


def test_region_masks_match_nearest_interpolation():
    x = _random_input(2, 128, 96, seed=9)
    trimap = x[:, 3:]
    quarter = F.interpolate(trimap, scale_factor=1 / 4, mode="nearest")
    for stage in range(4):
        reference = F.interpolate(quarter, scale_factor=1 / 2**stage, mode="nearest")
        expected = reference[:, [1, 0, 2]].flatten(2)
        assert torch.equal(trimap_region_masks(trimap, 4 * 2**stage), expected)


def test_region_masks_and_priors_on_hand_made_trimap():
    trimap = torch.zeros(1, 3, 32, 32)
    trimap[:, 0] = 1.0  # background everywhere
    trimap[:, :, 4, 8] = torch.tensor([0.0, 1.0, 0.0])  # unknown at pixel (4, 8) -> token (1, 2)
    trimap[:, :, 8:16, 0:8] = torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1)  # fg block
    trimap[:, :, 5, 5] = torch.tensor([0.0, 1.0, 0.0])  # off the stride-4 grid: ignored
    masks = trimap_region_masks(trimap, 4)
    assert masks.shape == (1, 3, 64)
    assert masks[0, 0].nonzero().flatten().tolist() == [1 * 8 + 2]
    fg_tokens = [r * 8 + c for r in (2, 3) for c in (0, 1)]
    assert masks[0, 2].nonzero().flatten().tolist() == fg_tokens
    assert masks[0, 1].sum() == 64 - 1 - 4
    # Features: token l has channels (l, -2l).
    feats = torch.stack([torch.arange(64.0), -2 * torch.arange(64.0)], dim=-1).unsqueeze(0)
    priors = region_priors(feats, masks)
    bg_mean = (sum(range(64)) - 10 - sum(fg_tokens)) / 59
    expected = torch.tensor([[10.0, -20.0], [bg_mean, -2 * bg_mean], [20.5, -41.0]])
    torch.testing.assert_close(priors[0], expected)
    # An empty region gives a zero token, not NaN.
    assert torch.equal(region_priors(feats, torch.zeros(1, 1, 64)), torch.zeros(1, 1, 2))


def _naive_block(block: PriorSwinBlock, x, hw, memory, masks):
    """Reference block computed token by token in map coordinates (float64)."""
    h, w = hw
    ws, shift = block.window_size, block.shift_size
    attn = block.attn
    heads = attn.num_heads
    c = x.shape[-1]
    hd = c // heads
    hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
    n_win_rows = (2 * ws - 1) ** 2

    def region(pos: int, size: int) -> int:
        # Region of a rolled coordinate, as cut by the cyclic shift.
        if shift == 0 or pos < size - ws:
            return 0
        return 1 if pos < size - shift else 2

    out_x = torch.empty_like(x)
    out_mem = torch.empty(x.shape[0], memory.shape[1] + 3, c, dtype=x.dtype)
    for b in range(x.shape[0]):
        tokens = x[b]
        priors = []
        for r in range(3):
            m = masks[b, r]
            priors.append((m[:, None] * tokens).sum(0) / (m.sum() + 1e-9))
        mem = torch.cat([memory[b], torch.stack(priors)])
        normed = torch.zeros(hp, wp, c, dtype=x.dtype)
        normed[:h, :w] = block.norm1(tokens).view(h, w, c)
        mem_n = block.norm1(mem)
        qkv = attn.qkv(normed)
        qkv_p = attn.qkv(mem_n)
        q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
        kp, vp = qkv_p[:, c : 2 * c], qkv_p[:, 2 * c :]
        table = attn.relative_position_bias_table
        attn_out = torch.zeros(h, w, c, dtype=x.dtype)
        for i in range(h):
            for j in range(w):
                ri, rj = (i - shift) % hp, (j - shift) % wp  # rolled coordinates
                wi, wj = ri // ws, rj // ws
                keys = [
                    ((a + shift) % hp, (bb + shift) % wp, a, bb)
                    for a in range(wi * ws, wi * ws + ws)
                    for bb in range(wj * ws, wj * ws + ws)
                ]
                head_out = []
                for hh in range(heads):
                    sl = slice(hh * hd, (hh + 1) * hd)
                    qv = q[i, j, sl] * hd**-0.5
                    logits, values = [], []
                    for ki, kj, ra, rb in keys:
                        rel = (ri - ra + ws - 1) * (2 * ws - 1) + (rj - rb + ws - 1)
                        bias = table[rel, hh]
                        if (region(ri, hp), region(rj, wp)) != (region(ra, hp), region(rb, wp)):
                            bias = bias - 100.0
                        logits.append(qv @ k[ki, kj, sl] + bias)
                        values.append(v[ki, kj, sl])
                    for t in range(mem.shape[0]):
                        logits.append(qv @ kp[t, sl] + table[n_win_rows + t, hh])
                        values.append(vp[t, sl])
                    weights = torch.softmax(torch.stack(logits), dim=0)
                    head_out.append((weights[:, None] * torch.stack(values)).sum(0))
                attn_out[i, j] = attn.proj(torch.cat(head_out))
        y = tokens + attn_out.view(h * w, c)
        out_x[b] = y + block.mlp(block.norm2(y))
        p = mem + attn.proj(vp)
        out_mem[b] = p + block.mlp(block.norm2(p))
    return out_x, out_mem


@pytest.mark.parametrize(("block_index", "hw"), [(0, (5, 9)), (1, (10, 12)), (1, (4, 3))])
def test_block_matches_naive_token_by_token_computation(block_index, hw):
    torch.manual_seed(10)
    block = PriorSwinBlock(
        dim=8, num_heads=2, window_size=7, shift_size=3 * (block_index % 2),
        num_prior_sets=block_index + 1,
    ).double().eval()  # fmt: skip
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0, 1)
        for p in block.norm1.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    h, w = hw
    x = torch.randn(2, h * w, 8, dtype=torch.float64)
    memory = torch.randn(2, 3 * block_index, 8, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, h * w))
    masks = F.one_hot(labels, 3).permute(0, 2, 1).double()
    hp, wp = math.ceil(h / 7) * 7, math.ceil(w / 7) * 7
    shift_mask = shifted_window_mask(hp, wp, 7, 3).double()
    with torch.no_grad():
        got_x, got_mem = block(x, hw, memory, masks, shift_mask)
        exp_x, exp_mem = _naive_block(block, x, hw, memory, masks)
    assert got_mem.shape == (2, 3 * (block_index + 1), 8)
    torch.testing.assert_close(got_x, exp_x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_mem, exp_mem, rtol=1e-10, atol=1e-10)


def test_checkpoint_filter_extends_imagenet_swin(swin):
    g = torch.Generator().manual_seed(11)
    imagenet = {}
    for key, value in swin.state_dict().items():
        if key == "patch_embed.proj.weight":
            value = torch.randn(96, 3, 4, 4, generator=g)
        elif key.endswith("relative_position_bias_table"):
            value = torch.randn(169, value.shape[1], generator=g)
        elif key.endswith("relative_position_index"):
            value = prior_relative_position_index(7, 0)
        imagenet[key] = value
    imagenet["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    imagenet["norm.weight"] = torch.ones(768)
    imagenet["head.weight"] = torch.zeros(1000, 768)
    checkpoint = {"model": imagenet}

    converted = checkpoint_filter_fn(checkpoint, swin, generator=torch.Generator().manual_seed(0))
    fresh = PriorSwinTransformer()
    fresh.load_state_dict(converted, strict=True)
    assert set(converted) == set(swin.state_dict())
    embed = converted["patch_embed.proj.weight"]
    assert embed.shape == (96, 6, 4, 4)
    assert torch.equal(embed[:, :3], imagenet["patch_embed.proj.weight"])
    # Xavier-normal std for a (96, 6, 4, 4) kernel: sqrt(2 / (6*16 + 96*16)).
    assert embed[:, 3:].std().item() == pytest.approx(math.sqrt(2 / 1632), rel=0.15)
    table = converted["layers.2.blocks.5.attn.relative_position_bias_table"]
    assert table.shape == (169 + 18, 12)
    assert torch.equal(table[:169], imagenet["layers.2.blocks.5.attn.relative_position_bias_table"])
    for key, value in swin.state_dict().items():
        if key.endswith("relative_position_index"):
            assert torch.equal(converted[key], value), key
    # Deterministic given the generator, and idempotent on already converted weights.
    again = checkpoint_filter_fn(checkpoint, swin, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(again[k], converted[k]) for k in converted)
    twice = checkpoint_filter_fn(converted, swin, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(twice[k], converted[k]) for k in converted)
    assert imagenet["patch_embed.proj.weight"].shape == (96, 3, 4, 4)
