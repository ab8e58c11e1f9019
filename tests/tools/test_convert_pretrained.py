"""Tests for pretrained-backbone conversion on checkpoints with the original files' layouts.

The pretrained files themselves cannot be downloaded here; their layouts are rebuilt from timm
models created with ``pretrained=False`` (DINO / MAE ViT, Microsoft Swin) and, for GCA-Matting's
ResNet-34-D, from the encoder itself with GCA's DataParallel prefix and classifier head. The
conversion runs through the library, as ``tools/convert_pretrained.py`` wires it; the command
line itself is run as a process (its success path and its fault matrix).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from diffmatte.config import LazyConfig, instantiate
from diffmatte.engine.checkpoint import load_checkpoint, read_checkpoint
from diffmatte.engine.pretrained import convert_pretrained, detect_format, unwrap_state_dict
from diffmatte.modeling.backbone.resnet import ResNetEncoder

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "convert_pretrained.py"
TINY_VIT = REPO / "tests" / "configs" / "tiny_vit.py"


def _convert(source: Path, output: Path) -> str:
    """Converts ``source`` for its default config as the tool does; returns the config name."""
    state = unwrap_state_dict(read_checkpoint(source), source)
    fmt = detect_format(state, source)
    config = fmt.default_config(state)
    weights, _ = convert_pretrained(state, fmt, _backbone(config))
    torch.save(weights, output)
    return config


def _backbone(config: str):
    return instantiate(LazyConfig.load(str(REPO / "configs" / f"{config}.py")).model.backbone)


def _converted(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    assert all(k.startswith("model.backbone.") for k in state)
    return {k[len("model.backbone.") :]: v for k, v in state.items()}


def _timm_state(name: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).state_dict()


def test_dino_vit_small(tmp_path):
    source = _timm_state("vit_small_patch16_224")
    # DINO's file: a raw state dict with class token and final norm, without classifier head.
    dino = {k: v for k, v in source.items() if not k.startswith("head.")}
    torch.save(dino, tmp_path / "dino.pth")
    assert _convert(tmp_path / "dino.pth", tmp_path / "vits_init.pth") == "ViTS"

    converted = _converted(tmp_path / "vits_init.pth")
    assert "cls_token" not in converted and "norm.weight" not in converted
    assert converted["pos_embed"].shape == (1, 197, 384)
    weight = converted["patch_embed.proj.weight"]
    assert weight.shape == (384, 4, 16, 16)
    torch.testing.assert_close(weight[:, :3], dino["patch_embed.proj.weight"])
    assert torch.count_nonzero(weight[:, 3]) == 0
    torch.testing.assert_close(
        converted["blocks.7.mlp.fc2.weight"], dino["blocks.7.mlp.fc2.weight"]
    )

    # As train.init_checkpoint of the whole model: relative positions, residual blocks and the
    # decoder start from scratch, everything else is loaded.
    model = instantiate(LazyConfig.load(str(REPO / "configs/ViTS.py")).model)
    report = load_checkpoint(model, tmp_path / "vits_init.pth", strict=False)
    assert not report.unexpected and not report.mismatched
    new_parts = re.compile(r"^backbone\.blocks\.\d+\.(attn\.rel_pos_[hw]$|residual\.)|^decoder\.")
    assert report.missing and all(new_parts.search(k) for k in report.missing)
    torch.testing.assert_close(model.backbone.patch_embed.proj.weight, weight)
    torch.testing.assert_close(model.backbone.pos_embed, dino["pos_embed"])


@pytest.mark.slow
def test_mae_vit_base(tmp_path):
    source = _timm_state("vit_base_patch16_224")
    mae = {"model": {k: v for k, v in source.items() if not k.startswith("head.")}}
    torch.save(mae, tmp_path / "mae.pth")
    assert _convert(tmp_path / "mae.pth", tmp_path / "vitb_init.pth") == "ViTB"
    converted = _converted(tmp_path / "vitb_init.pth")
    assert converted["patch_embed.proj.weight"].shape == (768, 4, 16, 16)
    result = _backbone("ViTB").load_state_dict(converted, strict=False)
    assert result.unexpected_keys == []


def _gca_layout(seed: int = 0) -> tuple[ResNetEncoder, dict]:
    """GCA-Matting's ImageNet encoder file: {"state_dict": {"module.<key>": ...}} with a head."""
    torch.manual_seed(seed)
    encoder = ResNetEncoder(in_chans=3)
    state = {f"module.{k}": v.clone() for k, v in encoder.state_dict().items()}
    state["module.fc.weight"] = torch.randn(1000, 512)
    state["module.fc.bias"] = torch.zeros(1000)
    return encoder, {"state_dict": state, "epoch": 90}


def test_gca_resnet34(tmp_path):
    encoder, checkpoint = _gca_layout()
    torch.save(checkpoint, tmp_path / "gca.pth")
    assert _convert(tmp_path / "gca.pth", tmp_path / "res34_init.pth") == "res34"
    converted = _converted(tmp_path / "res34_init.pth")
    assert "fc.weight" not in converted
    bar = converted["conv1.module.weight_bar"]
    assert bar.shape == (32, 6, 3, 3) and torch.count_nonzero(bar[:, 3:]) == 0
    v = converted["conv1.module.weight_v"].reshape(6, 3, 3)
    torch.testing.assert_close(
        v[:3].reshape(-1), checkpoint["state_dict"]["module.conv1.module.weight_v"]
    )
    assert torch.count_nonzero(v[3:]) == 0

    wide = _backbone("res34")
    wide.load_state_dict(converted, strict=True)
    # Same features on RGB input when the trimap channels are zero (sigma is unchanged).
    encoder.eval()
    wide.eval()
    rgb = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = encoder(rgb)
        got = wide(torch.cat([rgb, torch.zeros(1, 3, 64, 64)], dim=1))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def _microsoft_swin_layout() -> dict:
    """swin_tiny_patch4_window7_224.pth: {"model": ...}, patch merging at the END of a stage,
    relative-position indices and shift masks stored, classifier "head"."""
    source = _timm_state("swin_tiny_patch4_window7_224")
    state = {}
    for key, value in source.items():
        match = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
        if match:  # timm keeps patch merging at the start of the next stage
            key = f"layers.{int(match.group(1)) - 1}.downsample.{match.group(2)}"
        state[key.replace("head.fc.", "head.")] = value
    coords = torch.stack(torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + 6
    index = rel[..., 0] * 13 + rel[..., 1]
    for key in [k for k in state if k.endswith("relative_position_bias_table")]:
        state[key.replace("bias_table", "index")] = index.clone()
        state[key.replace("relative_position_bias_table", "attn_mask")] = torch.zeros(4, 49, 49)
    return {"model": state}


def test_swin_tiny(tmp_path):
    checkpoint = _microsoft_swin_layout()
    source = checkpoint["model"]
    torch.save(checkpoint, tmp_path / "swin.pth")
    assert _convert(tmp_path / "swin.pth", tmp_path / "swin_init.pth") == "swin_t"
    converted = _converted(tmp_path / "swin_init.pth")
    assert not any("attn_mask" in k or k.startswith(("head.", "norm.")) for k in converted)
    embed = converted["patch_embed.proj.weight"]
    assert embed.shape == (96, 6, 4, 4)
    torch.testing.assert_close(embed[:, :3], source["patch_embed.proj.weight"])
    assert embed[:, 3:].abs().sum() > 0  # re-drawn, not zero
    for stage, depth in enumerate((2, 2, 6, 2)):
        for block in range(depth):
            key = f"layers.{stage}.blocks.{block}.attn.relative_position_bias_table"
            table = converted[key]
            assert table.shape[0] == 169 + 3 * (block + 1)
            torch.testing.assert_close(table[:169], source[key])
            index = converted[key.replace("bias_table", "index")]
            assert index.shape == (49, 49 + 3 * (block + 1))
            torch.testing.assert_close(index[:, :49], source[key.replace("bias_table", "index")])
            assert index[0, 49:].tolist() == list(range(169, 169 + 3 * (block + 1)))
    backbone = _backbone("swin_t")
    backbone.load_state_dict(converted, strict=True)
    torch.testing.assert_close(
        backbone.layers[0].downsample.reduction.weight,
        source["layers.0.downsample.reduction.weight"],
    )


def _run(*args: object) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def tiny_vit_pretraining(tmp_path_factory) -> Path:
    """A plain-ViT pre-training file (class token, final norm, 3-channel patches) for tiny_vit."""
    torch.manual_seed(0)
    backbone = instantiate(LazyConfig.load(str(TINY_VIT)).model.backbone)
    state = {
        k: v
        for k, v in backbone.state_dict().items()
        if not re.search(r"rel_pos_[hw]|residual\.", k)
    }
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"][:, :3].clone()
    state["cls_token"] = torch.zeros(1, 1, 32)
    state["norm.weight"] = torch.ones(32)
    path = tmp_path_factory.mktemp("pretrained") / "tiny_dino.pth"
    torch.save({"model": state}, path)
    return path


def test_command_line_writes_prefixed_weights(tiny_vit_pretraining, tmp_path):
    output = tmp_path / "out" / "init.pth"
    result = _run(tiny_vit_pretraining, output, "--config", TINY_VIT)
    assert result.returncode == 0, result.stderr
    assert "(vit)" in result.stdout and "4 input channels" in result.stdout
    state = torch.load(output, weights_only=True)
    assert state["model.backbone.patch_embed.proj.weight"].shape == (32, 4, 16, 16)
    assert not any("cls_token" in k or k.startswith("model.backbone.norm.") for k in state)


def _fault_cases(tmp_path: Path, pretraining: Path) -> dict[str, tuple[list, str]]:
    """Case name -> (arguments after the input, expected text of the error line)."""
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a PyTorch file" * 10)
    other = tmp_path / "other.pth"
    torch.save({"something": torch.zeros(3)}, other)
    blocker = tmp_path / "a_file"
    blocker.write_text("a regular file, not a folder")
    out = tmp_path / "out.pth"
    return {
        "missing file": ([tmp_path / "missing.pth", out], "file not found"),
        "unreadable file": ([garbage, out], "a text file, not a PyTorch checkpoint"),
        "unknown family": ([other, out], "pass --kind"),
        "no released config for the width": ([pretraining, out], "pass --config"),
        "forced kind of another family": (
            [pretraining, out, "--kind", "resnet"],
            "converted resnet weights do not fit the backbone",
        ),
        "config of another family": (
            [pretraining, out, "--config", "res34"],
            "needs a ViT backbone, the config has ResNetEncoder",
        ),
        "output folder not writable": (
            [pretraining, blocker / "sub" / "init.pth", "--config", TINY_VIT],
            "cannot write",
        ),
    }


def test_fault_matrix(tiny_vit_pretraining, tmp_path):
    """Every bad input: exit 2, exactly one ``error:`` line, no traceback, nothing written."""
    cases = _fault_cases(tmp_path, tiny_vit_pretraining)
    before = sorted(tmp_path.rglob("*"))
    for name, (args, expected) in cases.items():
        result = _run(*args)
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
        assert expected in lines[0], (name, lines[0])
        assert "Traceback" not in result.stderr
        assert sorted(tmp_path.rglob("*")) == before, name  # no output, no temporary file
