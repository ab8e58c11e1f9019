"""Evaluation timing: its synthetic cases, and a tiny run of tools/benchmark_evaluation.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from diffmatte.evaluation import benchmark


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


def test_tiny_run_prints_a_table_and_writes_json(tmp_path: Path, run_script) -> None:
    out = tmp_path / "timings.json"
    argv = ["--sizes", "48", "--repeats", "1", "--breakdown", "--whole-image", "--json", str(out)]
    result = run_script("tools/benchmark_evaluation.py", *argv)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["size", "mode", "function", "wall", "ms", "CPU", "ms"]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == len(lines) - 2 == 10
    assert {row["function"] for row in rows} == {"all four", "SAD", "MSE", "Grad", "Conn"}
    assert all(row["size"] == 48 and row["wall_ms"] >= 0 for row in rows)
