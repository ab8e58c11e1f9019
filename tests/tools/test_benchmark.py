"""tools/benchmark.py (run as a process) on the tiny test config: output, FLOP bookkeeping,
isolation, errors; and the library parts of diffmatte.inference.benchmark."""

import json
from pathlib import Path

import pytest
import torch

from diffmatte.inference import benchmark

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "tests" / "configs" / "tiny_vit.py"


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tool(run_script):
    """Runs tools/benchmark.py; returns (exit status, stdout, stderr)."""

    def run(argv):
        result = run_script("tools/benchmark.py", *argv)
        return result.returncode, result.stdout, result.stderr

    return run


def _args():
    return [
        "--config-file",
        str(TINY_CONFIG),
        "--threads",
        "1",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--peak-seconds",
        "0.2",
    ]


def test_table_json_and_flop_bookkeeping(tool, tmp_path):
    out = tmp_path / "bench.json"
    argv = _args() + ["--sizes", "48", "--strategies", "ddim1", "ddim3", "--json", str(out)]
    status, printed, err = tool(argv)
    assert status == 0, err
    assert "| size | strategy | s/img |" in printed and "48: ddim3/ddim1 = " in printed
    payload = json.loads(out.read_text())
    assert payload["info"]["threads"] == 1 and payload["info"]["matmul_peak_gflops"] > 0
    one, three = payload["results"]
    assert (one["strategy"], three["strategy"]) == ("ddim1", "ddim3")
    for record in (one, three):
        assert len(record["times_s"]) == 2
        assert record["images_per_s"] == pytest.approx(1 / record["latency_s"])
        assert record["peak_memory_mb"] > 50
        expected = 100 * 2 * record["executed_gmac"] / record["latency_s"]
        expected /= payload["info"]["matmul_peak_gflops"]
        assert record["percent_of_peak"] == pytest.approx(expected)
    # Two more cached decoder steps: cheaper than two full steps (the mid block's feature
    # branches and the conditioning share are done once), but not free.
    extra_steps = three["executed_gmac"] - one["executed_gmac"]
    assert 0 < extra_steps < 2 * one["decoder_step_gmac"]
    assert one["executed_gmac"] > one["backbone_gmac"] + 0.8 * one["decoder_step_gmac"]


def test_reference_path_counts_full_steps(tool):
    argv = _args() + ["--sizes", "32", "--strategies", "ddim2", "--reference", "--json", "-"]
    status, out, err = tool(argv)
    assert status == 0, err
    record = json.loads(out)["results"][0]
    assert record["executed_gmac"] == pytest.approx(
        record["backbone_gmac"] + 2 * record["decoder_step_gmac"]
    )


def test_isolated_case_reports_its_process_peak(tool):
    argv = _args() + ["--sizes", "32", "--strategies", "ddim1", "--isolate", "--no-flops"]
    status, out, err = tool(argv + ["--json", "-"])
    assert status == 0, err
    record = json.loads(out)["results"][0]
    assert record["latency_s"] > 0 and "executed_gmac" not in record
    # ru_maxrss of a whole Python process with torch loaded.
    assert record["peak_memory_mb"] > 100


def test_bad_options_exit_2_with_one_line(tool):
    for extra, expected in (
        (["--precision", "fp16", "--sizes", "32"], "needs a CUDA device"),
        (["--strategies", "euler3"], "invalid sampling strategy"),
        (["--strategies", "ddim5000"], "1 <= N <= 1000"),
        (["--seed", "-3"], "seed -3: out of range"),
    ):
        status, _, err = tool(_args() + extra)
        lines = err.strip().splitlines()
        assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert expected in lines[0]


def test_table_and_ratios():
    records = [
        {"size": 512, "strategy": "ddim1", "latency_s": 2.0, "images_per_s": 0.5},
        {"size": 512, "strategy": "ddim10", "latency_s": 12.5, "images_per_s": 0.08},
    ]
    table = benchmark.format_table(records).splitlines()
    assert table[2].startswith("| 512 | ddim1 | 2.000 | 0.500 | - |")
    assert benchmark.step_ratios(records) == ["512: ddim10/ddim1 = 6.25"]


@pytest.mark.slow
def test_vits_counts_match_the_published_fvcore_figures():
    # The published fvcore figures of ViT-S at 512 x 512: 33.3 G backbone, 51.1 G per step.
    from diffmatte.inference.functional import build_model

    torch.set_num_threads(1)
    model = build_model(REPO / "configs" / "ViTS.py")
    counts = benchmark.count_macs(model, 512)
    assert counts["backbone"] == pytest.approx(33.3, abs=0.05)
    assert counts["decoder_step"] == pytest.approx(51.1, abs=0.05)
    assert counts["decoder_step"] - counts["cached_step"] > 0.08 * counts["decoder_step"]
