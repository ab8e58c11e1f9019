"""tools/benchmark_evaluation.py: its synthetic cases and a tiny timing run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_tool():
    path = REPO_ROOT / "tools" / "benchmark_evaluation.py"
    spec = importlib.util.spec_from_file_location("_benchmark_evaluation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


benchmark = _load_tool()


def test_synthetic_case_is_a_realistic_triple() -> None:
    pred, gt, trimap = benchmark.make_case(96, seed=1)
    assert pred.shape == gt.shape == trimap.shape == (96, 96)
    assert pred.dtype == gt.dtype == trimap.dtype == np.uint8
    assert set(np.unique(trimap)) == {0, 128, 255}
    fractional = (gt > 0) & (gt < 255)
    # Every fractional pixel lies in the unknown band, and the prediction has errors there.
    assert fractional.any() and np.all(trimap[fractional] == 128)
    assert np.all(pred[trimap == 0] == 0)
    assert 0 < np.abs(pred.astype(int) - gt)[trimap == 128].mean() < 64
    again = benchmark.make_case(96, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((pred, gt, trimap), again, strict=True))


def test_tiny_run_prints_a_table_and_writes_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "timings.json"
    argv = ["--sizes", "48", "--repeats", "1", "--breakdown", "--whole-image", "--json", str(out)]
    assert benchmark.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["size", "mode", "function", "wall", "ms", "CPU", "ms"]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == len(lines) - 2 == 10
    assert {row["function"] for row in rows} == {"all four", "SAD", "MSE", "Grad", "Conn"}
    assert all(row["size"] == 48 and row["wall_ms"] >= 0 for row in rows)
