"""InferenceOptions.check_device: which precisions each device accepts."""

import numpy as np
import pytest
import torch

from diffmatte.inference import InferenceOptions, Predictor
from diffmatte.utils import cpu

CPU = torch.device("cpu")


def _flags(monkeypatch, flags: str) -> None:
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags.split()))


def test_bf16_on_a_cpu_with_native_bf16_is_accepted(monkeypatch):
    _flags(monkeypatch, "avx2 avx512f avx512_bf16")
    InferenceOptions(precision="bf16").check_device(CPU)
    _flags(monkeypatch, "avx2 avx512f avx512_bf16 amx_bf16 amx_tile")
    InferenceOptions(precision="bf16").check_device(CPU)


@pytest.mark.parametrize(
    ("flags", "missing"),
    [("avx2 avx512f avx512bw", "AVX-512 without BF16"), ("avx avx2 fma", "AVX2 only")],
)
def test_bf16_on_a_cpu_without_native_bf16_is_refused_in_one_line(monkeypatch, flags, missing):
    _flags(monkeypatch, flags)
    with pytest.raises(ValueError) as info:
        InferenceOptions(precision="bf16").check_device(CPU)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("precision bf16 refused on the CPU: ")
    assert "avx512_bf16 or amx_bf16 missing" in message and missing in message


def test_fp16_stays_refused_on_cpu_even_with_native_bf16(monkeypatch):
    _flags(monkeypatch, "avx512_bf16 amx_bf16 amx_fp16")
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA device"):
        InferenceOptions(precision="fp16").check_device(CPU)
    InferenceOptions().check_device(CPU)


def test_this_machine_accepts_bf16_exactly_when_it_has_native_bf16():
    cpu.cpu_flags.cache_clear()
    options = InferenceOptions(precision="bf16")
    if cpu.bf16_support().native:
        options.check_device(CPU)
    else:
        with pytest.raises(ValueError, match="refused on the CPU"):
            options.check_device(CPU)


def test_predictor_runs_bf16_on_a_cpu_with_native_bf16(build_tiny_model, monkeypatch, one_thread):
    _flags(monkeypatch, "avx512f avx512_bf16")
    rng = np.random.default_rng(0)
    image = rng.random((40, 48, 3), dtype=np.float32)
    trimap = np.full((40, 48), 128, np.uint8)
    trimap[:8], trimap[-8:] = 0, 255
    model = build_tiny_model()
    fp32 = Predictor(model, InferenceOptions(), "cpu").predict(image, trimap, "ddim2").alpha
    bf16_predictor = Predictor(model, InferenceOptions(precision="bf16"), "cpu")
    bf16 = bf16_predictor.predict(image, trimap, "ddim2").alpha
    assert bf16.dtype == np.float32
    assert 0 < np.abs(bf16 - fp32).max() < 0.05
    _flags(monkeypatch, "avx2")
    with pytest.raises(ValueError, match="refused on the CPU"):
        Predictor(model, InferenceOptions(precision="bf16"), "cpu")
