"""bf16 mixed precision in the training loop on the CPU (autocast, no gradient scaler)."""

import math

import pytest
import torch

from diffmatte.engine.trainer import Trainer
from diffmatte.modeling.criterion import MattingCriterion
from diffmatte.utils import cpu

CROP = 64

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, CROP, CROP, generator=gen)
    # A learnable target: alpha is the image's mean brightness, known rows at the borders.
    alpha = image.mean(1, keepdim=True)
    trimap = torch.full((n, 1, CROP, CROP), 0.5)
    trimap[..., :8, :] = 0.0
    trimap[..., -8:, :] = 1.0
    return {"image": image, "trimap": trimap, "alpha": alpha}


def _endless(batch):
    while True:
        yield batch


def _fixed_loss(model, batch) -> float:
    """Total loss at fixed times and noise (a generator), without updating anything."""
    with torch.no_grad():
        losses = model(batch, generator=torch.Generator().manual_seed(7))
    return float(sum(losses.values()))


def _train(build_tiny_model, amp: str) -> tuple[float, float, list[torch.dtype], Trainer]:
    """Loss at fixed noise before and after 20 iterations on one batch, the decoder's output
    dtypes during training, and the trainer."""
    torch.manual_seed(0)
    model = build_tiny_model(
        criterion=MattingCriterion, overrides=[f"model.backbone.pretrain_img_size={CROP}"]
    )
    batch = _batch()
    model.eval()
    before = _fixed_loss(model, batch)
    dtypes = []
    hook = model.decoder.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    trainer = Trainer(
        model, _endless(batch), torch.optim.AdamW(model.parameters(), lr=3e-3), amp=amp
    )
    trainer.train(0, 20)
    hook.remove()
    model.eval()
    return before, _fixed_loss(model, batch), dtypes, trainer


def test_bf16_autocast_trains_on_a_cpu_with_native_bf16(build_tiny_model, monkeypatch):
    # bf16 arithmetic is only slow without native support, so the check runs on every CPU.
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    before, fp32_after, fp32_dtypes, _ = _train(build_tiny_model, "off")
    same_before, bf16_after, bf16_dtypes, trainer = _train(build_tiny_model, "bf16")
    assert trainer.amp == "bf16" and not trainer.grad_scaler.is_enabled()
    # The networks ran in bf16; the losses (float32 in the criterion) stayed finite.
    assert set(fp32_dtypes) == {torch.float32} and set(bf16_dtypes) == {torch.bfloat16}
    assert math.isfinite(trainer.storage.latest()["total_loss"][0])
    # Measured: 154.4 -> 88.9 in fp32, -> 89.4 in bf16.
    assert same_before == before
    assert bf16_after < 0.7 * before
    assert abs(bf16_after - fp32_after) < 0.05 * fp32_after


@pytest.mark.parametrize(
    ("flags", "missing"), [("avx2 avx512f", "AVX-512 without BF16"), ("avx2", "AVX2 only")]
)
def test_bf16_training_is_refused_on_a_cpu_without_native_bf16(
    build_tiny_model, monkeypatch, flags, missing
):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags.split()))
    model = build_tiny_model(criterion=MattingCriterion)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError) as info:
        Trainer(model, _endless(_batch()), optimizer, amp="bf16")
    message = str(info.value)
    assert "\n" not in message and message.startswith("train.amp.precision=bf16 refused on the CPU")
    assert "avx512_bf16 or amx_bf16 missing" in message and missing in message
    # fp16 on the CPU still trains in fp32, whatever the flags.
    assert Trainer(model, _endless(_batch()), optimizer, amp="fp16").amp == "off"
