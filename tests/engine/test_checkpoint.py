"""Strict checkpoint loading, accepted formats, mismatch reports and atomic saving."""

import os

import pytest
import torch
from torch import nn

from diffmatte.engine.checkpoint import (
    CheckpointError,
    compare_state_dicts,
    describe_config,
    load_checkpoint,
    save_model_weights,
)


class Tiny(nn.Module):
    """Stands in for DiffMatte: a backbone and a decoder with a BatchNorm."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width))
        self.decoder = nn.Linear(width, 2)
        self.register_buffer("pixel_mean", torch.zeros(3), persistent=False)


def _filled(seed: int = 0, width: int = 4) -> Tiny:
    torch.manual_seed(seed)
    model = Tiny(width)
    with torch.no_grad():
        for buffer in model.buffers():
            if buffer.is_floating_point():
                buffer.uniform_()
    return model


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_writes_released_format_and_loads_back(tmp_path):
    source = _filled(0)
    umask = os.umask(0o022)
    try:
        path = save_model_weights(source, tmp_path / "sub" / "model.pth")
    finally:
        os.umask(umask)
    if os.name == "posix":
        assert path.stat().st_mode & 0o777 == 0o644  # readable by others, as released files
    saved = torch.load(path, weights_only=True)
    assert list(saved) == ["model." + k for k in source.state_dict()]
    assert not [p for p in path.parent.iterdir() if p.name != "model.pth"]  # no temp files left
    target = _filled(1)
    report = load_checkpoint(target, path)
    assert report.ok
    _assert_same_weights(source, target)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model." + k: v for k, v in sd.items()},
        lambda sd: {"model": {"model." + k: v for k, v in sd.items()}, "iteration": 5},
        lambda sd: {"module.model." + k: v for k, v in sd.items()},
        lambda sd: {"model": {"module." + k: v for k, v in sd.items()}},
        lambda sd: {"state_dict": dict(sd)},
    ],
    ids=["raw", "prefixed", "detectron2", "ddp-prefixed", "ddp-raw", "state_dict"],
)
def test_accepted_layouts(tmp_path, wrap):
    source = _filled(0)
    path = tmp_path / "w.pth"
    torch.save(wrap(source.state_dict()), path)
    target = _filled(1)
    load_checkpoint(target, path)
    _assert_same_weights(source, target)


def test_mismatch_report_is_one_clear_line(tmp_path):
    state_dict = {"model." + k: v for k, v in _filled(0).state_dict().items()}
    del state_dict["model.decoder.bias"]
    state_dict["model.decoder.weight"] = torch.zeros(2, 5)
    for i in range(7):
        state_dict[f"model.extra.{i}"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state_dict, path)
    target = _filled(1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(target, path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert "1 missing key (decoder.bias)" in message
    assert "7 unexpected keys (extra.0, extra.1, extra.2, extra.3, extra.4, ...)" in message
    assert "1 key with different shapes (decoder.weight file [2, 5] vs model [2, 4])" in message
    # A failed strict load leaves the model untouched.
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_non_strict_loads_what_matches(tmp_path):
    source = _filled(0)
    state_dict = dict(source.state_dict())
    state_dict["decoder.weight"] = torch.zeros(2, 5)
    path = tmp_path / "partial.pth"
    torch.save(state_dict, path)
    target = _filled(1)
    original_weight = target.decoder.weight.clone()
    report = load_checkpoint(target, path, strict=False)
    assert [k for k, _, _ in report.mismatched] == ["decoder.weight"]
    assert torch.equal(target.decoder.weight, original_weight)
    assert torch.equal(target.backbone[0].weight, source.backbone[0].weight)


def test_unreadable_files_give_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="file not found"):
        load_checkpoint(Tiny(), tmp_path / "missing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="cannot be read as a PyTorch weights file") as info:
        load_checkpoint(Tiny(), text)
    assert "\n" not in str(info.value) and str(text) in str(info.value)
    numbers = tmp_path / "numbers.pth"
    torch.save({"a": 1, "b": [2, 3]}, numbers)
    with pytest.raises(CheckpointError, match="does not contain a state dict"):
        load_checkpoint(Tiny(), numbers)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "object.pth"
    torch.save({"model": Tiny()}, path)  # a whole module: needs unpickling of code
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(Tiny(), path)


def _spec_shapes(released_keys, config):
    data = released_keys(config)
    return {k: tuple(v) for part in ("params", "buffers") for k, v in data[part].items()}


@pytest.mark.parametrize("config", ["ViTS", "ViTS_1024", "ViTB", "res34", "swin_t"])
def test_describe_config_recognises_released_key_lists(released_keys, config):
    assert describe_config(_spec_shapes(released_keys, config)) == config


def test_vits_1024_file_in_vits_model_gets_a_hint(released_keys, tmp_path):
    def backbone_positions(config):
        shapes = _spec_shapes(released_keys, config)
        return {
            k[len("model.") :]: s
            for k, s in shapes.items()
            if k.endswith(("pos_embed", "rel_pos_h", "rel_pos_w"))
        }

    file_shapes, model_shapes = backbone_positions("ViTS_1024"), backbone_positions("ViTS")
    report = compare_state_dicts(file_shapes, model_shapes)
    assert not report.missing and not report.unexpected
    assert len(report.mismatched) == 8  # rel_pos_h/w of the 4 global blocks
    assert {(fs[0], ms[0]) for _, fs, ms in report.mismatched} == {(127, 63)}

    class Shapes(nn.Module):
        """Only the position tables of ViTS, as meta tensors."""

        def state_dict(self, *args, **kwargs):
            return {k: torch.empty(s, device="meta") for k, s in model_shapes.items()}

    path = tmp_path / "vits_1024.pth"
    torch.save({"model." + k: torch.zeros(s) for k, s in file_shapes.items()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(Shapes(), path)
    message = str(info.value)
    assert (
        "8 keys with different shapes (backbone.blocks.2.attn.rel_pos_h file [127, 64]" in message
    )
    assert "looks like a checkpoint of ViTS_1024, but the model is built as ViTS" in message


def _diffmatte(backbone, decoder):
    from diffmatte.diffusion.gaussian import GaussianDiffusion
    from diffmatte.diffusion.samplers import Sampler
    from diffmatte.modeling.diffmatte import DiffMatte

    return DiffMatte(backbone, decoder, GaussianDiffusion(scale=0.2), Sampler("ddim", 1))


def test_vits_wrapper_matches_the_released_key_list(released_keys):
    from diffmatte.modeling.backbone.vit import ViT
    from diffmatte.modeling.decoder.dunet import DUNet

    model = _diffmatte(ViT(), DUNet())
    released = {k[len("model.") :]: s for k, s in _spec_shapes(released_keys, "ViTS").items()}
    model_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert compare_state_dicts(released, model_shapes).ok
    assert describe_config(model_shapes) == "ViTS"


def test_round_trip_with_real_modules(tmp_path, build_tiny_model):
    source, target = build_tiny_model(0).eval(), build_tiny_model(1).eval()
    path = save_model_weights(source, tmp_path / "tiny.pth")
    assert load_checkpoint(target, path).ok
    image, trimap = torch.rand(1, 3, 32, 32), torch.full((1, 1, 32, 32), 0.5)
    noise = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        source.sample(image, trimap, noise=noise).alpha,
        target.sample(image, trimap, noise=noise).alpha,
    )
