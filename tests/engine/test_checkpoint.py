"""Strict checkpoint loading, accepted formats, mismatch reports and atomic saving."""

import os
import pickle
import zipfile

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


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pth: file not found$"):
        load_checkpoint(Tiny(), tmp_path / "missing.pth")
    folder = tmp_path / "weights.pth"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="weights.pth: is a folder, not a weights file$"):
        load_checkpoint(Tiny(), folder)


def _one_line_error(path) -> str:
    """The message of reading ``path``, checked to be one line that names the file."""
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(Tiny(), path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"checkpoint {path}: ")
    # Never torch's own text, never the unsafe advice.
    for words in ("weights_only", "PytorchStreamReader", "Weights only load failed", "(101)"):
        assert words not in message
    return message[len(f"checkpoint {path}: ") :]


@pytest.fixture
def real_checkpoint(tmp_path):
    """The bytes of a checkpoint as this library writes it (released format)."""
    return save_model_weights(_filled(0, width=64), tmp_path / "good.pth").read_bytes()


@pytest.mark.parametrize("keep", [0.5, 0.99, 100])
def test_truncated_checkpoint(tmp_path, real_checkpoint, keep):
    size = int(len(real_checkpoint) * keep) if keep < 1 else keep
    path = tmp_path / "truncated.pth"
    path.write_bytes(real_checkpoint[:size])
    assert _one_line_error(path) == (
        f"truncated or damaged ({size:,} bytes): the end of the archive that torch.save writes "
        "is missing; download or copy it again and compare its size and SHA-256 with the source"
    )


def test_truncated_legacy_format_checkpoint(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save(_filled(0).state_dict(), legacy, _use_new_zipfile_serialization=False)
    assert load_checkpoint(_filled(1), legacy).ok  # the legacy format itself is accepted
    path = tmp_path / "truncated.pth"
    path.write_bytes(legacy.read_bytes()[:200])
    assert _one_line_error(path).startswith("truncated (200 bytes): its data ends")


def test_damaged_archive_member(tmp_path, real_checkpoint):
    data = bytearray(real_checkpoint)
    # Corrupt data.pkl (the first member) so torch fails, keeping the archive's structure.
    start = data.index(b"data.pkl") + len(b"data.pkl")
    data[start + 70 : start + 90] = b"\xff" * 20
    path = tmp_path / "damaged.pth"
    path.write_bytes(bytes(data))
    assert _one_line_error(path) == (
        "damaged: its part archive/data.pkl fails its checksum; download or copy it again and "
        "compare its size and SHA-256 with the source"
    )


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    assert _one_line_error(path) == (
        "the file is empty (0 bytes): the download or copy did not finish; fetch it again"
    )


def test_text_html_and_git_lfs_files(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\nsecond line\n")
    assert _one_line_error(text) == (
        "a text file, not a PyTorch checkpoint (it begins 'not a checkpoint second line')"
    )
    page = tmp_path / "page.pth"
    page.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>")
    assert _one_line_error(page).startswith("an HTML page, not a checkpoint: the download saved")
    pointer = tmp_path / "pointer.pth"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 116\n")
    assert _one_line_error(pointer).startswith("a Git LFS pointer, not the weights")


def test_zip_archive_of_a_checkpoint(tmp_path):
    path = tmp_path / "ViTS.zip.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ViTS/ViTS.pth.txt", "weights inside")
    assert _one_line_error(path) == (
        "a zip archive, but not a PyTorch checkpoint (it has no data.pkl); if it is a download "
        "archive, unpack it and use the .pth file inside"
    )


def test_binary_garbage(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(bytes(range(256)) * 4)
    assert _one_line_error(path) == (
        "not a PyTorch checkpoint: unknown format (1,024 bytes, starting with bytes "
        "00 01 02 03 04 05 06 07)"
    )


class _RunsCode:
    """Unpickling this calls ``os.system``: a checkpoint that would run a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save", "torch.save legacy"])
def test_pickle_with_code_is_refused_for_safety_and_never_runs(tmp_path, writer):
    marker = tmp_path / "it_ran"
    payload = {"model.decoder.weight": torch.zeros(2, 4), "hook": _RunsCode(marker)}
    path = tmp_path / "malicious.pth"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=4))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=writer == "torch.save")
    message = _one_line_error(path)
    system = f"{os.system.__module__}.system"  # posix.system on Linux
    assert message.startswith("refused for safety: it refers to code (")
    assert f"{system}) that loading would import and may run" in message
    assert "nothing in it was run" in message
    assert not marker.exists()


def test_pickled_module_is_refused_for_safety(tmp_path):
    path = tmp_path / "object.pth"
    torch.save({"model": Tiny()}, path)  # a whole module: needs unpickling of code
    message = _one_line_error(path)
    assert message.startswith("refused for safety: it refers to code (")
    assert f"{Tiny.__module__}.Tiny" in message


def test_numbers_are_not_a_state_dict(tmp_path):
    numbers = tmp_path / "numbers.pth"
    torch.save({"a": 1, "b": [2, 3]}, numbers)
    with pytest.raises(CheckpointError, match="does not contain a state dict"):
        load_checkpoint(Tiny(), numbers)


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
