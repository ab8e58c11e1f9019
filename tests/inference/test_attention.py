"""The ViT attention in query chunks equals the materialised formula, and the inference backbone
built with it equals the trained backbone while leaving it untouched."""

import pytest
import torch

from diffmatte.inference.attention import (
    KernelAttention,
    _query_chunks,
    inference_backbone,
    rel_pos_attention,
)
from diffmatte.modeling.backbone.vit import ViT, attention_reference

pytestmark = pytest.mark.usefixtures("one_thread")


def test_chunked_attention_matches_reference_values_and_gradients(
    check_attention_against_reference,
):
    def attend(q, k, v, rel_h, rel_w, grid, scale):
        # A budget of 7 queries: 24 chunks, the last one partial.
        budget = 7 * q.shape[0] * q.shape[1] * grid[0] * grid[1] * 4
        return rel_pos_attention(q, k, v, rel_h, rel_w, grid, grid, scale, max_bias_bytes=budget)

    check_attention_against_reference(attend)


@pytest.mark.parametrize(
    ("grid", "queries"), [((15, 11), 25), ((15, 11), 7), ((15, 11), 500), ((6, 5), 1)]
)
def test_chunked_attention_in_whole_rows_and_row_pieces(grid, queries):
    gen = torch.Generator().manual_seed(6)
    b, heads, dim = 2, 3, 8
    q, k, v = (torch.randn(b, heads, grid[0] * grid[1], dim, generator=gen) for _ in range(3))
    rel_h, rel_w = torch.randn(9, dim, generator=gen), torch.randn(9, dim, generator=gen)
    budget = queries * b * heads * grid[0] * grid[1] * 4
    with torch.no_grad():
        expected = attention_reference(q, k, v, rel_h, rel_w, grid, grid, dim**-0.5)
        out = rel_pos_attention(q, k, v, rel_h, rel_w, grid, grid, dim**-0.5, budget)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    chunks = _query_chunks(grid, queries)
    assert [start for start, _ in chunks] == [0] + [stop for _, stop in chunks[:-1]]
    assert chunks[-1][1] == grid[0] * grid[1]
    assert max(stop - start for start, stop in chunks) <= queries


def test_global_attention_memory_is_bounded_at_4096():
    # ViT-S at 4096 x 4096: 256 x 256 = 65,536 tokens, 6 heads; each chunk's float32 bias must
    # stay within the budget (a full one would be 96 GiB).
    tokens, heads, budget = 256 * 256, 6, 256 * 2**20
    bytes_per_query = heads * tokens * 4
    chunks = _query_chunks((256, 256), budget // bytes_per_query)
    assert max(stop - start for start, stop in chunks) * bytes_per_query <= budget
    assert chunks[-1][1] == tokens


def _vit() -> ViT:
    torch.manual_seed(7)
    model = ViT(embed_dim=32, num_heads=2, depth=3, img_size=64, window_block_indexes=(0,))
    gen = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def test_global_block_chunking_does_not_change_the_result():
    model = _vit()
    x = torch.randn(1, 4, 96, 80)  # 6x5 tokens vs. 4x4 tables: interpolated relative positions
    with torch.no_grad():
        full = model(x)
        chunked = inference_backbone(model, "chunked", max_bias_bytes=4 * 2 * 30 * 4)(x)
        materialised = inference_backbone(model, "materialised")(x)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(materialised, full, atol=1e-5, rtol=0)
    assert model.blocks[1].attn.rel_pos_h.shape == (7, 16)


def test_inference_backbone_shares_parameters_and_leaves_the_backbone_untouched():
    model = _vit()
    modules = dict(model.named_modules())
    attributes = {name: dict(vars(module)) for name, module in modules.items()}
    chunked = inference_backbone(model, "chunked", max_bias_bytes=1024)
    assert dict(model.named_modules()) == modules
    for name, module in modules.items():
        assert vars(module) == attributes[name], name
        assert not isinstance(module, KernelAttention)
    # Every attention module of the copy wraps the trained one; nothing else is new.
    replaced = [m for m in chunked.modules() if isinstance(m, KernelAttention)]
    assert [m.attention for m in replaced] == [block.attn for block in model.blocks]
    assert chunked.blocks[0].mlp is model.blocks[0].mlp
    assert [p.data_ptr() for p in chunked.parameters()] == [
        p.data_ptr() for p in model.parameters()
    ]
    with pytest.raises(ValueError, match="attention must be one of"):
        inference_backbone(model, "flash")
