"""tools/verify_checkpoint.py and the library's verify_checkpoint: keys, shapes, parameter count,
SHA-256, and a fault matrix of bad inputs (one ``error:`` line, exit 2, nothing written)."""

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffmatte.config import LazyConfig, instantiate
from diffmatte.engine.checkpoint import save_model_weights, verify_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "tools" / "verify_checkpoint.py"
TINY_CONFIG = REPO_ROOT / "tests" / "configs" / "tiny_vit.py"
# tests/configs/tiny_vit.py: counted from its modules (backbone 86,656 + decoder 20,529).
TINY_PARAMETERS = 107_185

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def verify_cli(script_main):
    return script_main("tools/verify_checkpoint.py")


@pytest.fixture(scope="module")
def tiny_model(build_tiny_model):
    return build_tiny_model(0)


@pytest.fixture(scope="module")
def weights(tmp_path_factory, tiny_model):
    return save_model_weights(tiny_model, tmp_path_factory.mktemp("weights") / "tiny.pth")


def test_library_reports_counts_and_digest(tiny_model, weights):
    result = verify_checkpoint(tiny_model, weights)
    assert result.ok and result.report.ok and result.mismatch == ""
    assert result.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert result.size_bytes == weights.stat().st_size
    assert result.tensors == len(tiny_model.state_dict())
    assert result.parameter_values == result.model_parameter_values == TINY_PARAMETERS
    buffers = sum(b.numel() for k, b in tiny_model.state_dict().items() if "running" in k)
    buffers += sum(b.numel() for k, b in tiny_model.state_dict().items() if "num_batches" in k)
    assert result.buffer_values == buffers


def test_library_names_a_file_of_another_width(tiny_model, tmp_path):
    other = instantiate(
        LazyConfig.apply_overrides(
            LazyConfig.load(str(TINY_CONFIG)), ["model.backbone.embed_dim=48"]
        ).model
    )
    path = save_model_weights(other, tmp_path / "wide.pth")
    result = verify_checkpoint(tiny_model, path)
    assert not result.ok
    assert len(result.report.mismatched) == 42 and not result.report.missing
    assert result.mismatch.startswith(f"checkpoint {path} does not match the model: 42 keys")
    assert result.parameter_values != TINY_PARAMETERS


def test_cli_prints_summary_and_exits_0(verify_cli, weights, capsys):
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert verify_cli.main(["--config-file", str(TINY_CONFIG), "--checkpoint", str(weights)]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    lines = out.out.splitlines()
    assert lines[0] == f"file        {weights} ({weights.stat().st_size:,} bytes)"
    assert lines[1] == f"sha256      {digest}"
    assert lines[3].startswith(f"parameters  {TINY_PARAMETERS:,} in the file, {TINY_PARAMETERS:,}")
    assert lines[-1].startswith("ok          keys, shapes and parameter count match")
    argv = ["--config-file", str(TINY_CONFIG), "--checkpoint", str(weights)]
    assert verify_cli.main([*argv, "--sha256", digest.upper()]) == 0
    assert "and the expected SHA-256 match" in capsys.readouterr().out


def _bad_files(root: Path, weights: Path) -> dict[str, Path]:
    """Each bad checkpoint of the fault matrix, written under ``root``."""
    files = {}
    data = weights.read_bytes()
    files["truncated"] = root / "truncated.pth"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["empty"] = root / "empty.pth"
    files["empty"].write_bytes(b"")
    files["text"] = root / "text.pth"
    files["text"].write_text("404: Not Found\n")
    files["html"] = root / "html.pth"
    files["html"].write_text("<!DOCTYPE html><html><body>Google Drive can't scan</body></html>")
    files["code"] = root / "code.pth"
    marker = root / "it_ran"
    # os.system("touch <marker>") when unpickled: REDUCE on the global posix.system.
    files["code"].write_bytes(
        b"\x80\x04cposix\nsystem\n" + pickle.dumps(f"touch {marker}")[2:-1] + b"\x85R."
    )
    files["folder"] = root / "folder.pth"
    files["folder"].mkdir()
    files["no state dict"] = root / "numbers.pth"
    torch.save({"epoch": 3}, files["no state dict"])
    return files


# case -> (argv after the script, with {tiny}/{weights}/{file} placeholders; the error's text).
FAULTS = {
    "missing file": (["--checkpoint", "{root}/absent.pth"], "absent.pth: file not found"),
    "folder": (["--checkpoint", "{folder}"], "folder.pth: is a folder, not a weights file"),
    "truncated": (["--checkpoint", "{truncated}"], "truncated.pth: truncated or damaged ("),
    "empty": (["--checkpoint", "{empty}"], "empty.pth: the file is empty (0 bytes)"),
    "text": (["--checkpoint", "{text}"], "text.pth: a text file, not a PyTorch checkpoint"),
    "html": (["--checkpoint", "{html}"], "html.pth: an HTML page, not a checkpoint"),
    "code": (["--checkpoint", "{code}"], "code.pth: refused for safety: it refers to code ("),
    "no state dict": (["--checkpoint", "{no state dict}"], "does not contain a state dict"),
    "other model": (
        ["--checkpoint", "{weights}", "model.backbone.embed_dim=48"],
        "does not match the model: 42 keys with different shapes",
    ),
    "wrong sha256": (["--checkpoint", "{weights}", "--sha256", "0" * 64], "differs from the"),
    "malformed sha256": (["--checkpoint", "{weights}", "--sha256", "xyz"], "64 hexadecimal"),
    "missing config": (
        ["--checkpoint", "{weights}", "--config-file", "{root}/none.py"],
        "none.py: config file not found",
    ),
    "unbuildable override": (
        ["--checkpoint", "{weights}", "model.backbone.depth=-1"],
        "cannot build the model (",
    ),
}


def _argv(case: str, root: Path, weights: Path) -> list[str]:
    names = {"root": str(root), "weights": str(weights)}
    names.update({k: str(v) for k, v in _bad_files(root, weights).items()})
    argv, _ = FAULTS[case]
    filled = [arg.replace("{", "{0[").replace("}", "]}").format(names) for arg in argv]
    if "--config-file" not in filled:
        filled = ["--config-file", str(TINY_CONFIG), *filled]
    return filled


def _listing(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(FAULTS))
def test_fault_matrix_as_a_process(case, weights, tmp_path):
    argv = _argv(case, tmp_path, weights)
    before = _listing(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 2
    err = result.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and FAULTS[case][1] in err[0]
    assert "Traceback" not in result.stdout
    assert _listing(tmp_path) == before


def test_one_bad_case_as_a_process(weights, tmp_path):
    """The default run also checks one case end to end: exit status and stderr of a process."""
    test_fault_matrix_as_a_process("code", weights, tmp_path)
