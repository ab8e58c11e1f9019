"""Every config in configs/ loads, takes overrides, saves, and builds its model on CPU.

Expected numbers: the released recipe (iterations = int(43100 / batch / GPUs * epochs)) and the
parameter counts of the released configs as built.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from diffmatte.config import ConfigError, LazyConfig, instantiate, target_to_string
from diffmatte.diffusion.gaussian import GaussianDiffusion
from diffmatte.diffusion.samplers import Sampler
from diffmatte.modeling.backbone.resnet import ResNetEncoder
from diffmatte.modeling.backbone.swin import PriorSwinTransformer
from diffmatte.modeling.backbone.vit import ViT
from diffmatte.modeling.diffmatte import DiffMatte

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = ["res34", "swin_t", "ViTS", "ViTB", "ViTS_1024"]
ALL_CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("_"))
COMMON = sorted(p.stem for p in (CONFIG_DIR / "common").glob("*.py") if p.stem != "__init__")

# config: lr, per-GPU batch, crop, max_iter, stage-2 step, milestones, values, checkpoint period
RECIPE = {
    "res34": (4e-4, 20, 512, 161625, 107750, [32325, 96975, 150850], [1, 0.1, 0.05, 0.01], 10775),
    "swin_t": (4e-4, 20, 512, 161625, 107750, [32325, 96975, 150850], [1, 0.1, 0.05, 0.01], 10775),
    "ViTS": (5e-5, 16, 512, 202031, 134687, [40406, 121218], [1, 0.1, 0.05], 13468),
    "ViTB": (2.5e-4, 16, 512, 228968, 107750, [40406, 121218, 188562], [1, 0.1, 0.05, 0.01], 13468),
    "ViTS_1024": (5e-5, 8, 1024, 269375, 134687, [80812, 148156, 228968], [1, 0.1, 0.05, 0.01],
                  13468),
}  # fmt: skip

# config: backbone class, backbone kwargs, trimap encoding, DUNet down / up lists, parameters
ARCHITECTURE = {
    "res34": (ResNetEncoder, {"in_chans": 6}, "onehot",
              [7, 32, 64, 128, 128], [512, 256, 256, 128, 64, 32], 23_867_575),
    "swin_t": (PriorSwinTransformer, {"in_chans": 6, "drop_path_rate": 0.3, "embed_dim": 96},
               "onehot", [7, 32, 64, 128, 128], [768, 256, 256, 128, 64, 32], 38_753_560),
    "ViTS": (ViT, {"in_chans": 4, "embed_dim": 384, "num_heads": 6, "img_size": 512}, "value",
             [7, 32, 64, 128], [384, 256, 128, 64, 32], 29_014_273),
    "ViTB": (ViT, {"in_chans": 4, "embed_dim": 768, "num_heads": 12, "img_size": 512}, "value",
             [7, 32, 64, 128], [768, 256, 128, 64, 32], 101_458_945),
    "ViTS_1024": (ViT, {"in_chans": 4, "embed_dim": 384, "num_heads": 6, "img_size": 1024},
                  "value", [7, 32, 64, 128], [384, 256, 128, 64, 32], 29_047_041),
}  # fmt: skip


def _load(name: str):
    return LazyConfig.load(CONFIG_DIR / f"{name}.py")


def _yaml_tree(cfg) -> dict:
    """The config as plain containers, callables written as import paths."""

    def convert(node):
        if isinstance(node, dict):
            return {
                k: target_to_string(v) if k == "_target_" and callable(v) else convert(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [convert(v) for v in node]
        return node

    return convert(OmegaConf.to_container(cfg, resolve=False))


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_config_loads(name: str) -> None:
    cfg = _load(name)
    assert {"model", "dataloader", "optimizer", "lr_multiplier", "train"} <= set(cfg.keys())
    assert isinstance(cfg.train.max_iter, int) and cfg.train.max_iter > 0


@pytest.mark.parametrize("name", COMMON)
def test_common_configs_load(name: str) -> None:
    cfg = LazyConfig.load(CONFIG_DIR / "common" / f"{name}.py")
    assert len(cfg) >= 1


def test_shared_parts_instantiate_alone() -> None:
    diffusion = instantiate(LazyConfig.load(CONFIG_DIR / "common" / "diffusion.py").diffusion)
    # The signal scale every released model uses.
    assert isinstance(diffusion, GaussianDiffusion) and diffusion.scale == 0.2
    sampler = instantiate(LazyConfig.load(CONFIG_DIR / "common" / "sampler.py").sampler)
    assert isinstance(sampler, Sampler) and (sampler.method, sampler.steps) == ("ddpm", 1)
    multiplier = instantiate(LazyConfig.load(CONFIG_DIR / "common" / "scheduler.py").lr_multiplier)
    assert multiplier(0.0) == pytest.approx(0.001)
    train = LazyConfig.load(CONFIG_DIR / "common" / "train.py").train
    eval_sampler = instantiate(train.eval_sampler)
    assert isinstance(eval_sampler, Sampler) and eval_sampler.strategy == "ddpm1"


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_schedule_follows_max_iter_override(name: str) -> None:
    cfg = _load(name)
    warmup_iters = cfg.lr_multiplier.warmup_length * cfg.train.max_iter
    milestones = list(cfg.lr_multiplier.scheduler.milestones)
    LazyConfig.apply_overrides(cfg, ["train.max_iter=1000"])
    assert cfg.lr_multiplier.scheduler.num_updates == 1000
    assert cfg.lr_multiplier.warmup_length == pytest.approx(warmup_iters / 1000)
    multiplier = instantiate(cfg.lr_multiplier)
    # The warm-up keeps its length in iterations: halfway through it the factor is ~0.5.
    assert multiplier(warmup_iters / 2 / 1000) == pytest.approx(0.5005, abs=2e-3)
    assert multiplier(warmup_iters / 1000) == pytest.approx(1.0)
    # Milestones stay at their iterations; those beyond the shortened run are never reached.
    reached = [m for m in milestones if m < 1000]
    assert multiplier(999 / 1000) == cfg.lr_multiplier.scheduler["values"][len(reached)]
    # A run shorter than the warm-up is all warm-up, rising linearly.
    LazyConfig.apply_overrides(cfg, ["train.max_iter=10"])
    multiplier = instantiate(cfg.lr_multiplier)
    steps = [multiplier(i / 10) for i in range(10)]
    assert steps[0] == pytest.approx(0.001) and steps == sorted(steps) and steps[-1] < 1.0


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_recipe_numbers(name: str) -> None:
    lr, batch, crop, max_iter, stage2, milestones, values, period = RECIPE[name]
    cfg = _load(name)
    assert cfg.optimizer.lr == lr and cfg.optimizer.params.base_lr == lr
    assert cfg.dataloader.train.batch_size == batch
    assert cfg.dataloader.train.dataset.crop_size == crop
    assert cfg.train.max_iter == max_iter
    assert cfg.train.self_align_stage2_step == stage2
    assert cfg.train.self_align_stage1_step > max_iter  # stage 1 never runs
    assert list(cfg.lr_multiplier.scheduler.milestones) == milestones
    assert list(cfg.lr_multiplier.scheduler["values"]) == values
    assert cfg.lr_multiplier.scheduler.num_updates == max_iter
    assert cfg.lr_multiplier.warmup_length * max_iter == pytest.approx(250)
    assert cfg.train.checkpointer.period == period and cfg.train.checkpointer.max_to_keep == 200
    assert cfg.train.seed == 8282 and cfg.train.amp.enabled and cfg.train.amp.precision == "fp16"
    assert cfg.optimizer.weight_decay == 0.1 and list(cfg.optimizer.betas) == [0.9, 0.999]
    assert cfg.optimizer.params.layer_decay is None


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_lr_schedule_shape(name: str) -> None:
    _, _, _, max_iter, _, milestones, values, _ = RECIPE[name]
    multiplier = instantiate(_load(name).lr_multiplier)
    assert multiplier(0.0) == pytest.approx(0.001)
    assert multiplier(125 / max_iter) == pytest.approx(0.5005, abs=1e-3)  # linear warm-up
    assert multiplier(250 / max_iter) == pytest.approx(1.0)
    for milestone, before, after in zip(milestones, values, values[1:], strict=False):
        assert multiplier((milestone - 1) / max_iter) == pytest.approx(before)
        assert multiplier(milestone / max_iter) == pytest.approx(after)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_architecture_hyper_parameters(name: str) -> None:
    backbone_cls, backbone_kwargs, trimap, down, up, _ = ARCHITECTURE[name]
    model = _load(name).model
    assert model.backbone._target_ is backbone_cls
    assert {k: model.backbone[k] for k in backbone_kwargs} == backbone_kwargs
    assert model.backbone_trimap == trimap
    assert list(model.decoder.downsample_in) == down and list(model.decoder.upsample_in) == up
    assert model.diffusion.schedule == "linear" and model.diffusion.scale == 0.2
    assert (model.sampler.method, model.sampler.steps) == ("ddpm", 1)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_model_instantiates_on_cpu(name: str, request: pytest.FixtureRequest) -> None:
    backbone_cls, _, _, _, _, num_params = ARCHITECTURE[name]
    torch.manual_seed(0)
    model = instantiate(_load(name).model)
    assert isinstance(model, DiffMatte) and isinstance(model.backbone, backbone_cls)
    assert sum(p.numel() for p in model.parameters()) == num_params
    assert model.diffusion.scale == 0.2
    try:
        released_keys = request.getfixturevalue("released_keys")
    except pytest.skip.Exception:
        return  # the key list of the released checkpoints is not available here
    spec = released_keys(name)
    expected = {**spec["params"], **spec["buffers"]}
    got = {f"model.{k}": list(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
    assert list(got) == spec["state_dict_order"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_overrides(name: str) -> None:
    cfg = _load(name)
    LazyConfig.apply_overrides(
        cfg,
        [
            "optimizer.lr=1e-4",
            "train.max_iter=1000",
            "train.output_dir='runs/x'",
            "train.init_checkpoint=pretrained/x.pth",
            "dataloader.train.batch_size=2",
            "dataloader.train.dataset.crop_size=64",
            "model.backbone.in_chans=6",
            "model.diffusion.scale=0.5",
            "model.sampler.method=ddim",
            "model.sampler.steps=10",
            "optimizer.params.layer_decay=0.65",
        ],
    )
    assert cfg.optimizer.params.base_lr == pytest.approx(1e-4)  # follows ${..lr}
    assert cfg.train.max_iter == 1000 and cfg.train.output_dir == "runs/x"
    assert cfg.train.init_checkpoint == "pretrained/x.pth"
    assert cfg.dataloader.train.batch_size == 2 and cfg.dataloader.train.dataset.crop_size == 64
    assert cfg.model.backbone.in_chans == 6
    assert instantiate(cfg.model.diffusion).scale == 0.5
    sampler = instantiate(cfg.model.sampler)
    assert (sampler.method, sampler.steps) == ("ddim", 10)
    with pytest.raises(ConfigError, match="does not exist"):
        LazyConfig.apply_overrides(cfg, ["model.backbone.no_such_argument=1"])
    with pytest.raises(ConfigError, match="did you mean 'train.max_iter'"):
        LazyConfig.apply_overrides(cfg, ["train.max_iters=5"])


def test_decoder_width_follows_backbone_width() -> None:
    cfg = LazyConfig.apply_overrides(_load("ViTS"), ["model.backbone.embed_dim=768"])
    assert list(cfg.model.decoder.upsample_in) == [768, 256, 128, 64, 32]


def test_configs_do_not_leak_into_each_other() -> None:
    vitb = _load("ViTB")
    vits = _load("ViTS")
    assert vitb.model.backbone.embed_dim == 768 and vits.model.backbone.embed_dim == 384
    swin = _load("swin_t")
    res34 = _load("res34")
    assert swin.model.backbone._target_ is PriorSwinTransformer
    assert res34.model.backbone._target_ is ResNetEncoder
    assert list(res34.model.decoder.upsample_in) == [512, 256, 256, 128, 64, 32]


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    cfg = _load(name)
    LazyConfig.save(cfg, tmp_path / "config.yaml")
    loaded = LazyConfig.load(tmp_path / "config.yaml")
    assert _yaml_tree(loaded) == _yaml_tree(cfg)
    assert OmegaConf.to_container(loaded.model, resolve=True) == _yaml_tree(
        OmegaConf.create(
            OmegaConf.to_container(cfg.model, resolve=True), flags={"allow_objects": True}
        )
    )
    assert instantiate(loaded.model.diffusion).scale == 0.2
    assert instantiate(loaded.lr_multiplier)(0.5) == instantiate(cfg.lr_multiplier)(0.5)
    # Derived values stay interpolations in the file, so they follow overrides after a reload.
    LazyConfig.apply_overrides(loaded, ["train.max_iter=500"])
    assert loaded.lr_multiplier.scheduler.num_updates == 500
    assert instantiate(loaded.train.eval_sampler).strategy == (
        "ddim10" if name == "quickstart" else "ddpm1"
    )


@pytest.mark.parametrize("name", COMMON)
def test_common_configs_round_trip(name: str, tmp_path: Path) -> None:
    cfg = LazyConfig.load(CONFIG_DIR / "common" / f"{name}.py")
    LazyConfig.save(cfg, tmp_path / "config.yaml")
    assert _yaml_tree(LazyConfig.load(tmp_path / "config.yaml")) == _yaml_tree(cfg)


def test_configs_hold_no_slots_for_scripts() -> None:
    # The model and the resumed iteration are run-time arguments, not config values.
    for name in ALL_CONFIGS:
        cfg = _load(name)
        assert "model" not in cfg.optimizer.params and "start_iter" not in cfg.dataloader.train


def test_optimizer_groups_for_vit() -> None:
    # A three-block ViT keeps this cheap; the groups depend on parameter kinds, not on size.
    cfg = LazyConfig.apply_overrides(
        _load("ViTS"),
        [
            "model.backbone.depth=3",
            "model.backbone.embed_dim=64",
            "model.backbone.num_heads=2",
            "model.backbone.window_block_indexes=[0, 1]",
            "model.backbone.residual_block_indexes=[2]",
        ],
    )
    model = instantiate(cfg.model)
    optimizer = instantiate(cfg.optimizer, runtime={"params.model": model})
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.9, 0.999)
    decay_of = {
        id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]
    }
    assert decay_of[id(model.backbone.pos_embed)] == (5e-5, 0.0)
    assert decay_of[id(model.backbone.blocks[0].norm1.weight)] == (5e-5, 0.0)
    assert decay_of[id(model.backbone.blocks[0].attn.qkv.weight)] == (5e-5, 0.1)
    assert decay_of[id(model.decoder.up_blks[0].bn1.weight)] == (5e-5, 0.0)
    assert len(decay_of) == len(list(model.parameters()))


def _write_dim_folders(root: Path) -> None:
    rng = np.random.default_rng(0)
    for sub in ("fg", "alpha"):
        (root / "fg_set" / sub).mkdir(parents=True)
    for sub in ("merged", "trimaps", "alpha_copy"):
        (root / "test" / sub).mkdir(parents=True)
    (root / "bg").mkdir()
    alpha = np.zeros((80, 96), np.uint8)
    alpha[20:60, 30:70] = 255
    alpha[15:20, 30:70] = 128
    trimap = np.full_like(alpha, 128)
    trimap[alpha == 0] = 0
    for i in range(2):
        cv2.imwrite(str(root / "fg_set" / "fg" / f"f{i}.png"), rng.integers(0, 256, (80, 96, 3)))
        cv2.imwrite(str(root / "fg_set" / "alpha" / f"f{i}.png"), alpha)
        cv2.imwrite(str(root / "bg" / f"b{i}.jpg"), rng.integers(0, 256, (90, 100, 3)))
        cv2.imwrite(str(root / "test" / "merged" / f"t{i}.png"), rng.integers(0, 256, (80, 96, 3)))
        cv2.imwrite(str(root / "test" / "trimaps" / f"t{i}.png"), trimap)
        cv2.imwrite(str(root / "test" / "alpha_copy" / f"t{i}.png"), alpha)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_dataloader_instantiates(name: str, tmp_path: Path) -> None:
    _write_dim_folders(tmp_path)
    cfg = LazyConfig.apply_overrides(
        _load(name),
        [
            f"dataloader.train.dataset.foregrounds=['{tmp_path / 'fg_set'}']",
            f"dataloader.train.dataset.backgrounds='{tmp_path / 'bg'}'",
            "dataloader.train.dataset.crop_size=32",
            "dataloader.train.batch_size=2",
            "dataloader.train.num_workers=0",
            "dataloader.train.pin_memory=False",
            f"dataloader.test.root='{tmp_path / 'test'}'",
        ],
    )
    loaded = instantiate(cfg.dataloader)
    assert len(loaded["test"]) == 2
    batch = next(iter(loaded["train"]))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["alpha"].shape == (2, 1, 32, 32)
    assert set(torch.unique(batch["trimap"]).tolist()) <= {0.0, 0.5, 1.0}


def test_crop_size_is_mandatory() -> None:
    cfg = LazyConfig.load(CONFIG_DIR / "common" / "dataloader.py")
    cfg.train = {"seed": 1}
    with pytest.raises(ConfigError, match="crop_size"):
        instantiate(cfg.dataloader.train)
