"""Inference helpers: devices, config lookup, trimap thresholds, seeded noise, prediction."""

from pathlib import Path

import numpy as np
import pytest
import torch

from diffmatte.config import ConfigError
from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.checkpoint import CheckpointError, save_model_weights
from diffmatte.inference.functional import (
    DEFAULT_SEED,
    build_model,
    initial_noise,
    load_model,
    predict_alpha,
    resolve_config_file,
    resolve_device,
    seeded_generator,
    trimap_to_model,
)
from diffmatte.modeling.diffmatte import MattingOutput

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_model(build_tiny_model):
    return build_tiny_model(0).eval()


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    image = rng.random((40, 56, 3), dtype=np.float32)
    gray = np.full((40, 56), 128, np.uint8)
    gray[:6] = 0
    gray[-6:] = 255
    return image, trimap_to_model(gray)


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="invalid device 'gpu0'"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


def test_resolve_config_file_accepts_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "Mine.py").write_text("")
    assert resolve_config_file("Mine") == tmp_path / "configs" / "Mine.py"
    assert resolve_config_file("other/x.py") == Path("other/x.py")
    assert resolve_config_file("Unknown") == Path("Unknown")


def test_trimap_thresholds_on_demo_levels():
    # Grey levels of the original demo's bulb trimap (not 0/128/255).
    levels = np.array([[0, 25, 26, 32, 64, 84, 85, 128, 169, 170, 223, 229, 230, 255]], np.uint8)
    comp1k = trimap_to_model(levels, "composition1k")
    demo = trimap_to_model(levels, "demo")
    assert comp1k.shape == (1, 1, 1, 14) and comp1k.dtype == torch.float32
    assert comp1k.flatten().tolist() == [0, 0, 0, 0, 0, 0, 0.5, 0.5, 0.5, 1, 1, 1, 1, 1]
    assert demo.flatten().tolist() == [0, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1, 1]
    with pytest.raises(ValueError, match="unknown trimap thresholds"):
        trimap_to_model(levels, "otsu")
    with pytest.raises(ValueError, match="uint8"):
        trimap_to_model(levels.astype(np.uint16))


class _RecordingModel(torch.nn.Module):
    """Stands in for DiffMatte: records the arguments of ``sample``."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def sample(self, image, trimap, sampler, noise, generator, return_trajectory):
        self.calls.append({"image": image, "trimap": trimap, "noise": noise, "sampler": sampler})
        alpha = torch.full_like(trimap, 0.25)
        trajectory = [alpha * 0, alpha] if return_trajectory else None
        return MattingOutput(alpha=alpha, trajectory=trajectory)


def test_initial_noise_is_exactly_the_seeded_randn(inputs):
    image, trimap = inputs
    model = _RecordingModel()
    prediction = predict_alpha(model, image, trimap, Sampler(), seed=5, return_trajectory=True)
    expected = torch.randn(1, 1, 40, 56, generator=torch.Generator().manual_seed(5))
    assert torch.equal(model.calls[0]["noise"], expected)
    assert torch.equal(initial_noise(40, 56, seeded_generator(5)), expected)
    # The image goes in as (1, 3, H, W) with the same values.
    assert torch.equal(model.calls[0]["image"][0].permute(1, 2, 0), torch.from_numpy(image))
    assert prediction.alpha.shape == (40, 56) and prediction.alpha.dtype == np.float32
    assert [step.shape for step in prediction.trajectory] == [(40, 56), (40, 56)]
    # Noise depends on the seed and size only: a second image of the same size gets the same.
    predict_alpha(model, image[::-1].copy(), trimap, Sampler(), seed=5)
    assert torch.equal(model.calls[1]["noise"], expected)
    assert DEFAULT_SEED == 8282


def test_predict_alpha_shapes_are_checked(inputs):
    image, trimap = inputs
    with pytest.raises(ValueError, match="trimap size"):
        predict_alpha(_RecordingModel(), image[:30], trimap)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predict_alpha(_RecordingModel(), image[:, :, 0], trimap)


def test_tiny_model_prediction_is_seeded(tiny_model, inputs):
    image, trimap = inputs
    ddim = Sampler.from_strategy("ddim2")
    first = predict_alpha(tiny_model, image, trimap, ddim, seed=1, return_trajectory=True)
    again = predict_alpha(tiny_model, image, trimap, ddim, seed=1)
    other = predict_alpha(tiny_model, image, trimap, ddim, seed=2)
    np.testing.assert_array_equal(first.alpha, again.alpha)
    assert np.abs(first.alpha - other.alpha).max() > 1e-6
    assert (first.alpha[:6] == 0).all() and (first.alpha[-6:] == 1).all()
    assert 0 < first.alpha[6:-6].min() and first.alpha[6:-6].max() < 1
    # DDIM ends exactly on its last x0 prediction.
    assert len(first.trajectory) == 2
    np.testing.assert_array_equal(first.trajectory[-1], first.alpha)


def test_ddpm_stream_matches_global_seed_on_cpu(tiny_model, inputs):
    """On the CPU the seeded generator replays what torch.manual_seed(seed) gives the model."""
    image, trimap = inputs
    ddpm = Sampler.from_strategy("ddpm3")
    prediction = predict_alpha(tiny_model, image, trimap, ddpm, seed=11)
    torch.manual_seed(11)
    image_t = torch.from_numpy(image).permute(2, 0, 1)[None]
    reference = tiny_model.sample(image_t, trimap, ddpm, noise=torch.randn(1, 1, 40, 56))
    np.testing.assert_array_equal(prediction.alpha, reference.alpha[0, 0].numpy())
    # The step noise matters: a different stream after the same initial noise changes alpha.
    other = tiny_model.sample(
        image_t,
        trimap,
        ddpm,
        noise=initial_noise(40, 56, seeded_generator(11)),
        generator=torch.Generator().manual_seed(99),
    )
    assert np.abs(other.alpha[0, 0].numpy() - prediction.alpha).max() > 1e-6


def test_load_model_strict_and_errors(tmp_path, tiny_model, tiny_config):
    weights = save_model_weights(tiny_model, tmp_path / "tiny.pth")
    loaded = load_model(tiny_config, weights)
    assert not loaded.training
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    with pytest.raises(CheckpointError) as info:
        load_model(tiny_config, weights, overrides=["model.backbone.embed_dim=48"])
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError):
        build_model(tmp_path / "missing.py")
