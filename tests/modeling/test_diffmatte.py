"""DiffMatte wrapper: preprocessing, sampling loop, postprocessing, training forward."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffmatte.diffusion.gaussian import GaussianDiffusion
from diffmatte.diffusion.samplers import Sampler
from diffmatte.modeling.diffmatte import DiffMatte, postprocess_alpha
from diffmatte.modeling.trimap import trimap_onehot

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
H, W = 40, 64  # W is a multiple of 32, H is not: both grow (quirk) to 64 x 96.
PADDED = (64, 96)


class DummyBackbone(nn.Module):
    """Patchify conv at stride 16 that counts and records its calls."""

    size_divisibility = 16

    def __init__(self, in_chans: int = 4, out_channels: int = 8):
        super().__init__()
        self.out_channels = out_channels
        self.proj = nn.Conv2d(in_chans, out_channels, 16, stride=16)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.proj(x)


class DummyDecoder(nn.Module):
    """Uses x, t and features; has BatchNorm; records inputs, times and x0 predictions."""

    def __init__(self, feature_channels: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(7, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.feature = nn.Conv2d(feature_channels, 4, 1)
        self.time = nn.Linear(1, 4)
        self.head = nn.Conv2d(4, 1, 1)
        self.inputs: list[torch.Tensor] = []
        self.times: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def forward(self, x, t, features):
        self.inputs.append(x.detach().clone())
        self.times.append(t.detach().clone())
        feat = F.interpolate(self.feature(features), size=x.shape[-2:], mode="nearest")
        h = self.bn(self.conv(x)) + feat + self.time(t[:, None])[:, :, None, None]
        logits = self.head(torch.tanh(h))
        self.outputs.append(logits.detach().clone())
        return logits


class DummyCriterion(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.ones(1))

    def forward(self, pred, target, trimap):
        unknown = (trimap == 0.5).float()
        return {
            "loss_mse": ((pred - target) ** 2).mean() * self.weight.item(),
            "loss_unknown": ((pred - target).abs() * unknown).mean(),
        }


def _model(encoding: str = "value", criterion=None, seed: int = 0) -> DiffMatte:
    torch.manual_seed(seed)
    model = DiffMatte(
        backbone=DummyBackbone(4 if encoding == "value" else 6),
        decoder=DummyDecoder(),
        diffusion=GaussianDiffusion(schedule="linear", scale=0.2),
        sampler=Sampler("ddpm", 1),
        criterion=criterion,
        backbone_trimap=encoding,
    )
    return model.eval()


def _inputs(n: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, H, W, generator=generator)
    levels = torch.tensor([0.0, 0.5, 1.0])
    trimap = levels[torch.randint(0, 3, (n, 1, H, W), generator=generator)]
    noise = torch.randn(n, 1, H, W, generator=generator)
    return image, trimap, noise


def _original_padded_inputs(image, trimap, x_t_norm, encoding="value"):
    """The original's construction: zero canvases of the padded size, then copies."""
    x = (image - MEAN) / STD
    n = image.shape[0]
    tri = trimap if encoding == "value" else trimap_onehot(trimap)
    backbone_in = torch.zeros(n, 3 + tri.shape[1], *PADDED)
    backbone_in[:, :, :H, :W] = torch.cat([x, tri], dim=1)
    decoder_in = torch.zeros(n, 7, *PADDED)
    decoder_in[:, :, :H, :W] = torch.cat(
        [torch.cat([x, trimap_onehot(trimap)], 1) * 2 - 1, x_t_norm], 1
    )
    return backbone_in, decoder_in


def test_ddim1_equals_the_original_single_step():
    model = _model()
    image, trimap, noise = _inputs()
    out = model.sample(image, trimap, Sampler("ddim", 1), noise=noise)

    backbone_in, decoder_in = _original_padded_inputs(
        image, trimap, model.diffusion.normalize(noise)
    )
    assert torch.equal(model.backbone.inputs[0], backbone_in)
    assert torch.equal(model.decoder.inputs[0], decoder_in)
    assert torch.equal(model.decoder.times[0], torch.ones(2))
    with torch.no_grad():
        logits = model.decoder(decoder_in, torch.ones(2), model.backbone(backbone_in))
    x0 = torch.sigmoid(logits[:, :, :H, :W]) * 2 - 1
    expected = ((x0 + 1) / 2).clamp(0, 1)
    expected[trimap == 0] = 0
    expected[trimap == 1] = 1
    assert out.alpha.shape == (2, 1, H, W) and out.alpha.dtype == torch.float32
    assert torch.allclose(out.alpha, expected, atol=1e-6)
    assert out.trajectory is None


def test_known_regions_are_forced_and_alpha_in_range():
    model = _model()
    image, trimap, noise = _inputs(seed=1)
    alpha = model.sample(image, trimap, Sampler("ddim", 3), noise=noise).alpha
    assert torch.all(alpha[trimap == 0] == 0)
    assert torch.all(alpha[trimap == 1] == 1)
    unknown = alpha[trimap == 0.5]
    assert unknown.min() >= 0 and unknown.max() <= 1 and unknown.std() > 0


def test_backbone_runs_once_and_decoder_once_per_step():
    model = _model()
    image, trimap, noise = _inputs()
    calls = {"backbone": 0, "decoder": 0}
    model.backbone.register_forward_hook(
        lambda *_: calls.__setitem__("backbone", calls["backbone"] + 1)
    )
    model.decoder.register_forward_hook(
        lambda *_: calls.__setitem__("decoder", calls["decoder"] + 1)
    )
    model.sample(image, trimap, Sampler.from_strategy("ddim10"), noise=noise)
    assert calls == {"backbone": 1, "decoder": 10}
    times = [t[0].item() for t in model.decoder.times]
    assert times == pytest.approx([1 - k / 10 for k in range(10)])
    # The padded region of every decoder input is zero, including the x_t channel.
    for x in model.decoder.inputs:
        assert x.shape == (2, 7, *PADDED)
        assert x[:, :, H:].abs().sum() == 0 and x[:, :, :, W:].abs().sum() == 0


@pytest.mark.parametrize("strategy", ["ddim5", "ddpm4"])
def test_sample_equals_sampler_on_the_original_decoder_input(strategy):
    model = _model()
    image, trimap, noise = _inputs(seed=2)
    out = model.sample(
        image,
        trimap,
        Sampler.from_strategy(strategy),
        noise=noise,
        generator=torch.Generator().manual_seed(9),
    )

    backbone_in, _ = _original_padded_inputs(image, trimap, torch.zeros_like(noise))
    with torch.no_grad():
        features = model.backbone(backbone_in)

        def denoise(x_t_norm, t):
            _, decoder_in = _original_padded_inputs(image, trimap, x_t_norm)
            logits = model.decoder(decoder_in, t, features)[:, :, :H, :W]
            return torch.sigmoid(logits) * 2 - 1

        expected = Sampler.from_strategy(strategy).sample(
            model.diffusion, denoise, noise, generator=torch.Generator().manual_seed(9)
        )
    assert torch.allclose(out.alpha, postprocess_alpha(expected.x0, trimap), atol=1e-6)


def test_trajectory_post_processed_per_step():
    model = _model()
    image, trimap, noise = _inputs()
    out = model.sample(image, trimap, Sampler("ddim", 4), noise=noise, return_trajectory=True)
    assert len(out.trajectory) == 4
    for step in out.trajectory:
        assert step.shape == (2, 1, H, W)
        assert torch.all(step[trimap == 0] == 0) and torch.all(step[trimap == 1] == 1)
    assert torch.allclose(out.trajectory[-1], out.alpha, atol=1e-6)


def test_generator_noise_equals_explicit_noise():
    model = _model()
    image, trimap, _ = _inputs()
    seeded = model.sample(image, trimap, generator=torch.Generator().manual_seed(8282)).alpha
    noise = torch.randn(2, 1, H, W, generator=torch.Generator().manual_seed(8282))
    explicit = model.sample(image, trimap, noise=noise).alpha
    assert torch.equal(seeded, explicit)
    other = model.sample(image, trimap, generator=torch.Generator().manual_seed(1)).alpha
    assert not torch.equal(seeded, other)


def test_inputs_are_not_modified():
    model = _model()
    image, trimap, noise = _inputs()
    copies = [image.clone(), trimap.clone(), noise.clone()]
    model.sample(image, trimap, Sampler("ddpm", 3), noise=noise)
    assert all(torch.equal(a, b) for a, b in zip(copies, [image, trimap, noise], strict=True))


def test_onehot_backbone_encoding():
    model = _model("onehot")
    image, trimap, noise = _inputs()
    model.sample(image, trimap, noise=noise)
    backbone_in, _ = _original_padded_inputs(image, trimap, noise, encoding="onehot")
    assert torch.equal(model.backbone.inputs[0], backbone_in)


def test_divisible_input_is_not_padded():
    model = _model()
    image = torch.rand(1, 3, 64, 32)
    trimap = torch.full((1, 1, 64, 32), 0.5)
    model.sample(image, trimap, noise=torch.zeros(1, 1, 64, 32))
    assert model.decoder.inputs[0].shape == (1, 7, 64, 32)


def test_bad_inputs_give_clear_errors():
    model = _model()
    image, trimap, noise = _inputs()
    with pytest.raises(ValueError, match=r"trimap values must be in \{0, 0.5, 1\}"):
        model.sample(image, trimap * 255, noise=noise)
    with pytest.raises(ValueError, match="trimap must have shape"):
        model.sample(image, trimap[:, :, :-1], noise=noise)
    with pytest.raises(ValueError, match="image must have shape"):
        model.sample(image[:, :2], trimap, noise=noise)
    with pytest.raises(ValueError, match="noise must have shape"):
        model.sample(image, trimap, noise=noise[:1])
    with pytest.raises(ValueError, match="backbone_trimap"):
        DiffMatte(
            DummyBackbone(), DummyDecoder(), GaussianDiffusion(), Sampler(), backbone_trimap="x"
        )
    with pytest.raises(ValueError, match="size_divisibility"):
        DiffMatte(
            DummyBackbone(), DummyDecoder(), GaussianDiffusion(), Sampler(), size_divisibility=24
        )


def test_state_dict_holds_backbone_and_decoder_only():
    model = _model(criterion=DummyCriterion())
    assert [name for name, _ in model.named_children()] == ["backbone", "decoder"]
    keys = list(model.state_dict())
    assert keys and all(k.startswith(("backbone.", "decoder.")) for k in keys)
    assert "pixel_mean" in dict(model.named_buffers())


def _batch(n: int = 2, seed: int = 3):
    image, trimap, _ = _inputs(n, seed)
    alpha = torch.rand(n, 1, H, W, generator=torch.Generator().manual_seed(seed))
    return {"image": image, "trimap": trimap, "alpha": alpha}


def test_forward_plain_is_one_pass_with_gradients():
    model = _model(criterion=DummyCriterion()).train()
    batch = _batch()
    generator = torch.Generator().manual_seed(4)
    losses = model(batch, generator=generator)
    assert set(losses) == {"loss_mse", "loss_unknown"}
    sum(losses.values()).backward()
    assert model.backbone.proj.weight.grad.abs().sum() > 0
    assert model.decoder.conv.weight.grad.abs().sum() > 0

    reference = torch.Generator().manual_seed(4)
    eps = torch.randn(2, 1, H, W, generator=reference)
    t = torch.rand(2, generator=reference)
    assert torch.equal(model.decoder.times[0], t)
    x_t = model.diffusion.q_sample(batch["alpha"] * 2 - 1, t, eps)
    assert torch.allclose(model.decoder.inputs[0][:, 6:, :H, :W], model.diffusion.normalize(x_t))
    assert len(model.decoder.inputs) == 1 and len(model.backbone.inputs) == 1


def test_forward_stage2_self_alignment():
    model = _model(criterion=DummyCriterion()).train()
    batch = _batch()
    tracked = model.decoder.bn.num_batches_tracked.item()
    losses = model(batch, self_align="stage2", generator=torch.Generator().manual_seed(6))
    sum(losses.values()).backward()

    assert len(model.backbone.inputs) == 1 and len(model.decoder.inputs) == 2
    # Pass (a) runs in training mode, so BatchNorm statistics update twice.
    assert model.decoder.bn.num_batches_tracked.item() == tracked + 2
    assert model.backbone.proj.weight.grad.abs().sum() > 0

    reference = torch.Generator().manual_seed(6)
    eps = torch.randn(2, 1, H, W, generator=reference)
    interval = torch.rand(2, generator=reference)
    t = torch.rand(2, generator=reference) * (1 - interval)
    t_prime = t + interval
    assert torch.equal(model.decoder.times[0], t_prime)
    assert torch.equal(model.decoder.times[1], t)
    diffusion, target = model.diffusion, batch["alpha"] * 2 - 1
    first_in = diffusion.normalize(diffusion.q_sample(target, t_prime, eps))
    assert torch.allclose(model.decoder.inputs[0][:, 6:, :H, :W], first_in, atol=1e-6)
    x0_first = torch.sigmoid(model.decoder.outputs[0][:, :, :H, :W]) * 2 - 1
    second_in = diffusion.normalize(diffusion.q_sample(x0_first, t, eps))
    assert torch.allclose(model.decoder.inputs[1][:, 6:, :H, :W], second_in, atol=1e-5)


def test_forward_stage1_starts_from_pure_noise():
    model = _model(criterion=DummyCriterion()).train()
    batch = _batch()
    model(batch, self_align="stage1", generator=torch.Generator().manual_seed(7))
    reference = torch.Generator().manual_seed(7)
    eps = torch.randn(2, 1, H, W, generator=reference)
    t = torch.rand(2, generator=reference)
    assert torch.equal(model.decoder.times[0], torch.ones(2))
    assert torch.equal(model.decoder.times[1], t)
    first_in = model.diffusion.normalize(eps)
    assert torch.allclose(model.decoder.inputs[0][:, 6:, :H, :W], first_in)


def test_forward_errors():
    with pytest.raises(RuntimeError, match="criterion"):
        _model()(_batch())
    with pytest.raises(ValueError, match="self_align"):
        _model(criterion=DummyCriterion())(_batch(), self_align="stage3")


def test_real_vit_and_dunet_end_to_end(build_tiny_model):
    model = build_tiny_model(criterion=DummyCriterion).eval()
    image, trimap, noise = _inputs(n=1, seed=5)
    image, trimap, noise = image[..., :37, :50], trimap[..., :37, :50], noise[..., :37, :50]
    calls = []
    model.backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    out = model.sample(image, trimap, Sampler.from_strategy("ddim10"), noise=noise)
    assert calls == [(1, 4, 64, 64)]
    assert out.alpha.shape == (1, 1, 37, 50)
    assert torch.all(out.alpha[trimap == 0] == 0) and torch.all(out.alpha[trimap == 1] == 1)
    assert torch.isfinite(out.alpha).all()
    again = model.sample(image, trimap, Sampler.from_strategy("ddim10"), noise=noise)
    assert torch.equal(out.alpha, again.alpha)

    model.train()
    batch = {"image": image, "trimap": trimap, "alpha": torch.rand(1, 1, 37, 50)}
    losses = model(batch, self_align="stage2", generator=torch.Generator().manual_seed(0))
    sum(losses.values()).backward()
    assert model.backbone.patch_embed.proj.weight.grad.abs().sum() > 0
    assert len(calls) == 3  # two sampling runs and one training step, one backbone pass each
