"""Tests for parameter groups, warm-up and the per-iteration LR multiplier."""

import pytest
import torch
from fvcore.common.param_scheduler import MultiStepParamScheduler
from torch import nn

from diffmatte.engine.optim import (
    LRMultiplier,
    MilestoneParamScheduler,
    WarmupParamScheduler,
    get_param_groups,
    vit_layer_id,
)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(4)
        self.attn = nn.Linear(4, 4)
        self.residual = nn.Conv2d(4, 4, 1)


class _TinyViT(nn.Module):
    def __init__(self, depth: int = 2) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 4))
        self.patch_embed = nn.Conv2d(4, 4, 2)
        self.blocks = nn.ModuleList(_Block() for _ in range(depth))


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = _TinyViT()
        self.decoder = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
        self.frozen = nn.Parameter(torch.zeros(3), requires_grad=False)


def _lookup(groups, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}


def test_flat_groups_weight_decay_rules():
    model = _Model()
    groups = get_param_groups(
        model, base_lr=1e-4, weight_decay=0.1, weight_decay_overrides={"pos_embed": 0.0}
    )
    table = _lookup(groups, model)
    assert "frozen" not in table
    assert len(table) == sum(1 for p in model.parameters() if p.requires_grad)
    assert table["backbone.pos_embed"] == (1e-4, 0.0)
    assert table["backbone.blocks.0.norm1.weight"] == (1e-4, 0.0)
    assert table["backbone.blocks.0.norm1.bias"] == (1e-4, 0.0)
    assert table["decoder.1.bias"] == (1e-4, 0.0)
    assert table["backbone.blocks.1.attn.weight"] == (1e-4, 0.1)
    assert table["decoder.0.bias"] == (1e-4, 0.1)  # conv bias: not a norm, decayed
    assert len(groups) == 2  # merged by (lr, wd)


def test_layer_decay_follows_vit_rule():
    model = _Model()
    groups = get_param_groups(model, base_lr=1.0, layer_decay=0.5, num_layers=2)
    table = _lookup(groups, model)
    assert table["backbone.pos_embed"][0] == pytest.approx(0.5**3)
    assert table["backbone.patch_embed.weight"][0] == pytest.approx(0.5**3)
    assert table["backbone.blocks.0.attn.weight"][0] == pytest.approx(0.5**2)
    assert table["backbone.blocks.1.attn.weight"][0] == pytest.approx(0.5**1)
    assert table["backbone.blocks.1.residual.weight"][0] == pytest.approx(1.0)
    assert table["decoder.0.weight"][0] == pytest.approx(1.0)
    assert vit_layer_id("model.backbone.blocks.3.attn.qkv.weight", 12) == 13  # wrapper names


def test_layer_decay_rejects_non_vit():
    model = nn.Module()
    model.backbone = nn.Sequential(nn.Conv2d(3, 3, 3))
    with pytest.raises(ValueError, match="ViT"):
        get_param_groups(model, base_lr=1.0, layer_decay=0.65)


def _schedule(max_iter: int = 1000) -> WarmupParamScheduler:
    return WarmupParamScheduler(
        MultiStepParamScheduler([1.0, 0.1, 0.05], num_updates=max_iter, milestones=[400, 800]),
        warmup_factor=0.001,
        warmup_length=250 / max_iter,
    )


def test_warmup_multistep_lr_sequence():
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=2e-4)
    sched = LRMultiplier(opt, _schedule(), max_iter=1000)
    lrs = []
    for _ in range(1000):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2e-7)
    assert lrs[125] == pytest.approx(2e-4 * (0.001 + 0.999 * 0.5))
    assert lrs[250] == pytest.approx(2e-4)
    assert lrs[399] == pytest.approx(2e-4)
    assert lrs[400] == pytest.approx(2e-5)
    assert lrs[800] == pytest.approx(1e-5)


def test_lr_multiplier_resume_restores_lr():
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1.0)
    sched = LRMultiplier(opt, _schedule(), max_iter=1000)
    for _ in range(300):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
    opt2.load_state_dict(opt.state_dict())
    sched2 = LRMultiplier(opt2, _schedule(), max_iter=1000)
    sched2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_warmup_validation():
    base = MultiStepParamScheduler([1.0], num_updates=10)
    with pytest.raises(ValueError, match="fraction"):
        WarmupParamScheduler(base, 0.001, -0.1)
    with pytest.raises(ValueError, match="warmup_method"):
        WarmupParamScheduler(base, 0.001, 0.1, warmup_method="cosine")


def test_warmup_longer_than_the_run_covers_it():
    # 250 warm-up iterations in a 100-iteration run: the run ends 40 % up the ramp.
    schedule = WarmupParamScheduler(
        MultiStepParamScheduler([1.0], num_updates=100), warmup_factor=0.001, warmup_length=2.5
    )
    assert schedule(0.0) == pytest.approx(0.001)
    assert schedule(0.5) == pytest.approx(0.001 + 0.999 * 0.2)
    assert schedule(1.0) == pytest.approx(0.001 + 0.999 * 0.4)


def test_milestones_beyond_the_run_are_never_reached():
    schedule = MilestoneParamScheduler([1.0, 0.1, 0.01], num_updates=500, milestones=[400, 800])
    assert [schedule(i / 500) for i in (0, 399, 400, 499)] == [1.0, 1.0, 0.1, 0.1]
    full = MilestoneParamScheduler([1.0, 0.1, 0.01], num_updates=1000, milestones=[400, 800])
    fvcore = MultiStepParamScheduler([1.0, 0.1, 0.01], num_updates=1000, milestones=[400, 800])
    assert [full(i / 1000) for i in range(1000)] == [fvcore(i / 1000) for i in range(1000)]
    with pytest.raises(ValueError, match="one more value"):
        MilestoneParamScheduler([1.0, 0.1], num_updates=500, milestones=[100, 200])


def test_lr_multiplier_needs_iterations():
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="at least 1"):
        LRMultiplier(opt, _schedule(), max_iter=0)
