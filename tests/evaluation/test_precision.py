"""Lower inference precision against float32 (diffmatte.evaluation.precision and its tool)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from diffmatte.data.composition1k import MattingSample
from diffmatte.evaluation.metrics import compute_all
from diffmatte.evaluation.precision import (
    METRICS,
    ImageDifference,
    PrecisionReport,
    compare_precision,
    downscale,
)
from diffmatte.inference import InferenceOptions, build_inference_model
from diffmatte.inference.functional import predict_alpha, trimap_to_model
from diffmatte.utils import cpu
from diffmatte.utils.image_io import alpha_to_uint8

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def native_bf16(monkeypatch):
    # bf16 is correct (only slow) without native support, so these checks run on every CPU.
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))


def _sample(name: str, height: int = 40, width: int = 56, seed: int = 0) -> MattingSample:
    rng = np.random.default_rng(seed)
    image = rng.random((height, width, 3), dtype=np.float32)
    trimap = np.full((height, width), 128, np.uint8)
    trimap[: height // 4] = 0
    trimap[-height // 4 :] = 255
    alpha = np.zeros((height, width), np.uint8)
    alpha[height // 2 :] = 255
    alpha[height // 4 : height // 2] = rng.integers(0, 256, (height // 4, width), dtype=np.uint8)
    return MattingSample(name, image, trimap, alpha)


def test_same_precision_gives_no_difference(build_tiny_model):
    model = build_tiny_model().eval()
    report = compare_precision(model, [_sample("a"), _sample("b", seed=1)], "fp32")
    assert (report.max_abs, report.mean_abs, report.levels_changed) == (0.0, 0.0, 0.0)
    assert report.metric_changes() == dict.fromkeys(METRICS, 0.0)
    assert [image.unknown_pixels for image in report.images] == [20 * 56, 20 * 56]


def test_bf16_differs_slightly_and_leaves_the_model_float32(build_tiny_model, native_bf16):
    model = build_tiny_model().eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    sample = _sample("a")
    report = compare_precision(model, [sample], "bf16", seed=3)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(value.dtype == before[name].dtype for name, value in after.items())
    image = report.images[0]
    assert 0 < report.max_abs < 0.05 and 0 < report.mean_abs < report.max_abs
    assert report.levels_changed == image.levels_changed / image.unknown_pixels
    # The float32 errors are those of a plain float32 prediction against the GT.
    fp32 = build_inference_model(model, InferenceOptions())
    alpha = predict_alpha(fp32, sample.image, trimap_to_model(sample.trimap), seed=3).alpha
    assert image.reference == compute_all(alpha_to_uint8(alpha), sample.alpha, sample.trimap)


def test_report_weights_pixels_and_metric_changes():
    metrics = dict.fromkeys(METRICS, 2.0)
    report = PrecisionReport(
        "bf16",
        [
            ImageDifference("a", 100, 0.01, 0.2, 5, metrics, dict.fromkeys(METRICS, 2.2)),
            ImageDifference("b", 300, 0.03, 0.2, 15, metrics, dict.fromkeys(METRICS, 1.8)),
        ],
    )
    assert report.max_abs == 0.03
    assert report.mean_abs == pytest.approx(0.4 / 400)
    assert report.levels_changed == pytest.approx(20 / 400)
    assert report.metric_changes() == pytest.approx(dict.fromkeys(METRICS, 0.0))


def test_downscale_keeps_trimap_levels_and_aspect():
    sample = _sample("a", 80, 120)
    small = downscale(sample, 60)
    assert small.image.shape == (40, 60, 3) and small.alpha.shape == small.trimap.shape == (40, 60)
    assert set(np.unique(small.trimap)) == {0, 128, 255}
    assert downscale(sample, 200) is sample and downscale(sample, None) is sample


@pytest.fixture
def tool(script_main):
    return script_main("tools/precision_accuracy.py")


def _write_folder(root: Path) -> None:
    for sub in ("image", "trimap", "alpha"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        sample = _sample(f"s{i}", 48, 64, seed=i)
        bgr = cv2.cvtColor((sample.image * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(root / "image" / f"s{i}.png"), bgr)
        cv2.imwrite(str(root / "trimap" / f"s{i}.png"), sample.trimap)
        cv2.imwrite(str(root / "alpha" / f"s{i}.png"), sample.alpha)


@pytest.mark.skipif(
    not cpu.bf16_support().native, reason="the tool runs bf16 only where the CPU has native bf16"
)
def test_tool_prints_a_row_per_config_and_writes_json(tool, tmp_path, capsys):
    _write_folder(tmp_path / "data")
    argv = [
        "--data-dir",
        str(tmp_path / "data"),
        "--config-file",
        str(REPO / "tests/configs/tiny_vit.py"),
        "--sample-strategy",
        "ddim2",
        "--max-side",
        "32",
        "--json",
        str(tmp_path / "r.json"),
    ]
    assert tool.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("bf16 vs fp32, ddim2, seed 8282, 2 images (first 32x24)")
    assert out[3].startswith("| tiny_vit | init seed 0 | 2 | ")
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert rows[0]["images"] == 2 and 0 < rows[0]["max_abs_255"] < 13


def test_tool_refuses_bad_input_in_one_line(tool, tmp_path, capsys, monkeypatch):
    assert tool.main(["--data-dir", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    # The tool's precision check (a CPU without native bf16 refuses bf16 in one line).
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2"}))
    with pytest.raises(ValueError, match="no native bf16") as refused:
        InferenceOptions(precision="bf16").check_device("cpu")
    assert "\n" not in str(refused.value)
    argv = ["--data-dir", str(tmp_path), "--checkpoint", "w.pth"]
    assert tool.main(argv) == 2
    assert "exactly one --config-file" in capsys.readouterr().err
