"""Quickstart training turns bf16 on where the CPU has native bf16, and says so."""

from pathlib import Path

import pytest

from diffmatte.config import LazyConfig
from diffmatte.engine import training
from diffmatte.utils import cpu

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def quickstart():
    return training


def _amp(overrides):
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(str(REPO / "configs/quickstart.py")), overrides
    )
    return bool(cfg.train.amp.enabled), str(cfg.train.amp.precision)


def test_bf16_where_native(quickstart, monkeypatch, capsys):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
    overrides = quickstart.bf16_training_overrides()
    assert (
        capsys.readouterr().out
        == "training with bf16 autocast: the CPU has amx_bf16, avx512_bf16\n"
    )
    assert _amp(overrides) == (True, "bf16")
    # A trailing override (the command line's) turns it off again.
    assert _amp([*overrides, "train.amp.enabled=False"])[0] is False


def test_float32_elsewhere_with_the_reason(quickstart, monkeypatch, capsys):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2"}))
    overrides = quickstart.bf16_training_overrides()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("training in float32: this CPU has no native bf16")
    assert overrides == [] and _amp(overrides) == (False, "fp16")
