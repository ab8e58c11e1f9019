"""tools/benchmark_variants.py on the tiny test config, run as a process: every variant is an
InferenceOptions that builds what the variant names, all agree with the original-like variant,
bad options fail in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffmatte.inference import InferenceOptions, build_inference_model
from diffmatte.inference.attention import KernelAttention, rel_pos_attention
from diffmatte.modeling.backbone.vit import attention_reference

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "benchmark_variants.py"


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(TOOL), *argv], capture_output=True, text=True, env=env, cwd=REPO
    )


@pytest.fixture(scope="module")
def records(tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("variants") / "variants.json"
    argv = ["--config-file", str(tiny_config), "--sizes", "48", "--strategies", "ddim2"]
    result = _run(*argv, "--rounds", "1", "--threads", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("| 48 | ddim2 |") == 5
    return json.loads(out.read_text())["records"]


def test_variants_agree_with_the_original_like_one(records):
    names = ["original-like", "+ chunked SDPA", "+ decoder cache", "+ low-res upsample"]
    assert [r["variant"] for r in records] == [*names, "+ channels-last"]
    for record in records:
        assert record["max_abs_diff"] < 1e-4
        assert len(record["times_s"]) == 1 and record["speedup_best"] > 0
    assert records[0]["speedup_best"] == 1.0
    assert InferenceOptions(**records[-1]["options"]) == InferenceOptions()


def test_each_variant_builds_what_it_names(records, build_tiny_model):
    model = build_tiny_model(0).eval()
    built = [build_inference_model(model, InferenceOptions(**r["options"])) for r in records]
    kernels = [
        {
            m.kernel if m.kernel is attention_reference else m.kernel.func
            for m in form.backbone.modules()
            if isinstance(m, KernelAttention)
        }
        for form in built
    ]
    assert kernels == [{attention_reference}] + [{rel_pos_attention}] * 4
    assert [form.decoder is None for form in built] == [True, True, False, False, False]
    decoders = [form.decoder for form in built[2:]]
    assert [d.up[1].upsample_conv is not None for d in decoders] == [False, True, True]
    assert [d.channels_last for d in decoders] == [False, False, True]
    assert [d.head.conv1_weight.is_contiguous() for d in decoders] == [True, True, False]


def test_bad_options_exit_2(tiny_config):
    result = _run("--config-file", str(tiny_config), "--rounds", "0")
    assert result.returncode == 2 and result.stderr.strip() == "error: --rounds must be >= 1"
    result = _run("--config-file", str(tiny_config), "--strategies", "ddix3")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
