"""Slow: export of the real ViT-S config (random weights) and equality with PyTorch at sizes
with and without the padding quirk."""

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from diffmatte.deploy.export import export_model  # noqa: E402
from diffmatte.deploy.runtime import OnnxPredictor  # noqa: E402
from diffmatte.diffusion.samplers import Sampler  # noqa: E402
from diffmatte.inference.functional import build_model, predict_alpha  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_vits_export_equals_pytorch(tmp_path):
    torch.manual_seed(0)
    model = build_model(REPO_ROOT / "configs" / "ViTS.py")
    manifest = export_model(model, tmp_path, "ViTS")
    assert manifest["attention"] == {
        "patch_size": 16,
        "heads": 6,
        "global_blocks": 4,
        "query_chunks": 16,
    }
    runtime = OnnxPredictor(tmp_path)
    rng = np.random.default_rng(0)
    for height, width in ((320, 320), (301, 417)):
        image = rng.random((height, width, 3), dtype=np.float32)
        trimap = np.full((height, width), 0.5, np.float32)
        trimap[: height // 4] = 0.0
        trimap[-(height // 4) :] = 1.0
        for strategy in ("ddim1", "ddim10"):
            expected = predict_alpha(
                model, image, torch.from_numpy(trimap), Sampler.from_strategy(strategy), 8282
            ).alpha
            got = runtime.predict(image, trimap, strategy, seed=8282).alpha
            assert np.abs(got - expected).max() <= 1e-4, (height, width, strategy)


@pytest.mark.slow
def test_side_by_side_benchmark_rows():
    from diffmatte.deploy.compare import format_rows, side_by_side

    config = REPO_ROOT / "tests" / "configs" / "tiny_vit.py"
    rows = side_by_side(str(config), [64], ["ddim1", "ddpm2"], threads=1, repeats=1, warmup=0)
    assert [(row["size"], row["strategy"]) for row in rows] == [(64, "ddim1"), (64, "ddpm2")]
    for row in rows:
        assert row["pytorch_s"] > 0 and row["onnxruntime_s"] > 0
        assert row["max_abs_diff"] <= 1e-4
        assert row["speedup"] == pytest.approx(row["pytorch_s"] / row["onnxruntime_s"])
    assert format_rows(rows).count("\n") == 3
