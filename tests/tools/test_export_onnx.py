"""tools/export_onnx.py as a user runs it: bad input, and (slow) a whole export with its check."""

import json
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO_ROOT / "tests" / "configs" / "tiny_vit.py"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--config-file", "nope.py", "--random-weights"],
            "error: nope.py: config file not found\n",
        ),
        (
            ["--config-file", str(TINY_CONFIG), "--checkpoint", "none.pth"],
            "error: none.pth: checkpoint file not found\n",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(run_script, tmp_path, args, message):
    result = run_script("tools/export_onnx.py", *args, "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.endswith(message) and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_export_writes_four_graphs_and_checks_them(run_script, tmp_path):
    out = tmp_path / "tiny"
    args = ["--config-file", str(TINY_CONFIG), "--random-weights", "--output-dir", str(out)]
    result = run_script("tools/export_onnx.py", *args, "--check-sizes", "64x96", "45x77")
    assert result.returncode == 0, result.stderr
    assert "check: onnxruntime alpha within" in result.stdout + result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["graphs"]) == [
        "backbone",
        "decoder_prepare",
        "decoder_step",
        "decoder_step_banded",
    ]
    assert all((out / graph["file"]).is_file() for graph in manifest["graphs"].values())
