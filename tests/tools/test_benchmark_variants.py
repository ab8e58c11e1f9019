"""tools/benchmark_variants.py on the tiny test config: every variant runs what it names, all
agree with the original-like variant, settings are restored, bad options fail in one line."""

import importlib.util
import json
from pathlib import Path

import pytest

import diffmatte.modeling.backbone.vit as vit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location(
        "benchmark_variants", REPO / "tools" / "benchmark_variants.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants_agree_and_use_their_settings(tool, tiny_config, one_thread, monkeypatch):
    model = tool.build_model(tiny_config)
    seen = []
    reference = vit.attention_reference
    monkeypatch.setattr(
        vit, "attention_reference", lambda *a: seen.append("materialised") or reference(*a)
    )
    prepare = model.decoder.prepare

    def recording_prepare(*args, **kwargs):
        cache = prepare(*args, **kwargs)
        seen.append((cache.channels_last, cache.up[1].upsample_conv is not None))
        return cache

    monkeypatch.setattr(model.decoder, "prepare", recording_prepare)
    records = tool.compare(model, 48, "ddim2", rounds=1)
    assert [r["variant"] for r in records] == [name for name, *_ in tool.VARIANTS]
    for record in records:
        assert record["max_abs_diff"] < 1e-4
        assert len(record["times_s"]) == 1 and record["speedup_best"] > 0
    # Two rounds (warm-up + 1): the original-like variant materialises attention (twice per
    # sample: window and global blocks of the tiny ViT), the fast variants prepare their cache.
    per_round = [
        "materialised",
        "materialised",
        (False, False),
        (False, True),
        (True, True),
    ]
    assert seen == per_round * 2
    assert vit.rel_pos_attention.__name__ == "rel_pos_attention"
    assert model.decoder.channels_last and model.decoder.low_res_upsample


def test_main_prints_table_and_writes_json(tool, tiny_config, one_thread, tmp_path, capsys):
    out = tmp_path / "variants.json"
    argv = ["--config-file", str(tiny_config), "--sizes", "32", "--strategies", "ddim1"]
    assert tool.main([*argv, "--rounds", "1", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.count("| 32 | ddim1 |") == len(tool.VARIANTS)
    records = json.loads(out.read_text())["records"]
    assert records[0]["variant"] == "original-like" and records[0]["speedup_best"] == 1.0


def test_bad_options_exit_2(tool, tiny_config, capsys):
    assert tool.main(["--config-file", str(tiny_config), "--rounds", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --rounds must be >= 1"
    assert tool.main(["--config-file", str(tiny_config), "--strategies", "ddix3"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
