"""tools/benchmark.py on the tiny test config: output, FLOP bookkeeping, isolation, errors."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from diffmatte.utils import cpu

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "tests" / "configs" / "tiny_vit.py"


def _tool():
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    return _tool()


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


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


def test_table_json_and_flop_bookkeeping(tool, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = _args() + ["--sizes", "48", "--strategies", "ddim1", "ddim3", "--json", str(out)]
    assert tool.main(argv) == 0
    printed = capsys.readouterr().out
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


def test_reference_path_counts_full_steps(tool, capsys):
    argv = _args() + ["--sizes", "32", "--strategies", "ddim2", "--reference", "--json", "-"]
    assert tool.main(argv) == 0
    record = json.loads(capsys.readouterr().out)["results"][0]
    assert record["executed_gmac"] == pytest.approx(
        record["backbone_gmac"] + 2 * record["decoder_step_gmac"]
    )


def test_isolated_case_reports_its_process_peak(tool, capsys):
    argv = _args() + ["--sizes", "32", "--strategies", "ddim1", "--isolate", "--no-flops"]
    assert tool.main(argv + ["--json", "-"]) == 0
    record = json.loads(capsys.readouterr().out)["results"][0]
    assert record["latency_s"] > 0 and "executed_gmac" not in record
    # ru_maxrss of a whole Python process with torch loaded.
    assert record["peak_memory_mb"] > 100


def test_bad_options_exit_2_with_one_line(tool, capsys, monkeypatch):
    assert tool.main(_args() + ["--precision", "fp16", "--sizes", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a CUDA device" in err[0]
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2"}))
    assert tool.main(_args() + ["--precision", "bf16", "--sizes", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no native bf16 (flag avx512_bf16 or amx_bf16 missing" in err[0]
    assert tool.main(_args() + ["--strategies", "euler3"]) == 2
    assert "invalid sampling strategy" in capsys.readouterr().err


def test_table_and_ratios(tool):
    records = [
        {"size": 512, "strategy": "ddim1", "latency_s": 2.0, "images_per_s": 0.5},
        {"size": 512, "strategy": "ddim10", "latency_s": 12.5, "images_per_s": 0.08},
    ]
    table = tool.format_table(records).splitlines()
    assert table[2].startswith("| 512 | ddim1 | 2.000 | 0.500 | - |")
    assert tool.step_ratios(records) == ["512: ddim10/ddim1 = 6.25"]


@pytest.mark.slow
def test_vits_counts_match_the_published_fvcore_figures(tool):
    # TRAINING_RECIPE.md §8: ViT-S at 512 x 512, 33.3 G backbone and 51.1 G per decoder step.
    from diffmatte.engine.predictor import build_model

    torch.set_num_threads(1)
    model = build_model(REPO / "configs" / "ViTS.py")
    counts = tool.count_macs(model, 512)
    assert counts["backbone"] == pytest.approx(33.3, abs=0.05)
    assert counts["decoder_step"] == pytest.approx(51.1, abs=0.05)
    assert counts["decoder_step"] - counts["cached_step"] > 0.08 * counts["decoder_step"]
