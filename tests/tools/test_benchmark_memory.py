"""tools/benchmark_memory.py: a long-running CPU inference process stays flat in memory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "tools" / "benchmark_memory.py"
TINY_CONFIG = REPO_ROOT / "tests" / "configs" / "tiny_vit.py"


def _run(tmp_path: Path, *args: str, timeout: float) -> dict:
    output = tmp_path / "memory.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--json", str(output)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(output.read_text())


def test_records_every_image_of_both_passes(tmp_path):
    data = _run(
        tmp_path,
        "--config-file",
        str(TINY_CONFIG),
        "--images",
        "5",
        "--repeat",
        "2",
        "--min-side",
        "24",
        "--max-side",
        "72",
        "--strategy",
        "ddim1",
        timeout=300,
    )
    records = data["records"]
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4, 0, 1]
    assert all(24 <= r["height"] <= 72 and 24 <= r["width"] <= 72 for r in records)
    assert records[5]["height"] == records[0]["height"]
    assert all(0 < r["rss"] <= r["peak_rss"] for r in records)
    peaks = [r["peak_rss"] for r in records]
    assert peaks == sorted(peaks)  # a high-water mark
    assert data["summary"]["peak_at_end"] == peaks[-1]
    assert data["summary"]["rss_max_in_rerun"] == max(records[5]["rss"], records[6]["rss"])


@pytest.mark.slow
def test_vits_process_stays_flat_over_60_images_and_a_rerun(tmp_path):
    """ViT-S, ddim2, 60 images of 256 to 1536 pixels a side, then the first 10 again (CPU)."""
    summary = _run(
        tmp_path,
        "--config-file",
        str(REPO_ROOT / "configs" / "ViTS.py"),
        "--strategy",
        "ddim2",
        "--images",
        "60",
        "--repeat",
        "10",
        timeout=7200,
    )["summary"]
    # The largest image sets the peak; nothing after it raises it by more than 10 %.
    assert summary["peak_at_end"] <= 1.10 * summary["peak_after_largest"]
    # Running images the process has already run raises neither peak nor resident memory.
    assert summary["peak_at_end"] <= 1.05 * summary["peak_after_first_pass"]
    assert summary["rss_max_in_rerun"] <= 1.05 * summary["rss_after_first_pass"]
