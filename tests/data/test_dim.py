"""DIM-style training set: samples, determinism, bad inputs."""

import numpy as np
import pytest
import torch

from diffmatte.data.composition1k import DatasetError
from diffmatte.data.dim import DIMDataset
from diffmatte.data.sources import bundled_backgrounds
from diffmatte.utils.image_io import ImageReadError, write_png_atomic


def _check_sample(sample: dict, crop: int) -> None:
    assert set(sample) == {"image", "alpha", "trimap", "fg", "bg"}
    for key, channels in (("image", 3), ("alpha", 1), ("trimap", 1), ("fg", 3), ("bg", 3)):
        assert sample[key].shape == (channels, crop, crop), key
        assert sample[key].dtype == torch.float32, key
        assert 0.0 <= float(sample[key].min()) and float(sample[key].max()) <= 1.0, key
    values = set(torch.unique(sample["trimap"]).tolist())
    assert values <= {0.0, 0.5, 1.0}
    assert 0.5 in values, "the crop must contain unknown pixels"
    a = sample["alpha"]
    expected = sample["fg"] * a + sample["bg"] * (1 - a)
    torch.testing.assert_close(sample["image"], expected, atol=1e-5, rtol=0)


def test_real_images(shared_data_dir):
    """The dataset on the real alphamatting.com images (photographs + alpha: Blur-Fusion fg)."""
    root = shared_data_dir / "matting" / "alphamatting_train_lowres"
    dataset = DIMDataset(root, bundled_backgrounds(), 256, seed=0, samples_per_epoch=6, cache=True)
    assert len(dataset) == 6
    assert len(dataset.foregrounds) == 20
    for index in (0, 3):
        sample = dataset[index]
        _check_sample(sample, 256)
        # Trimap foreground/background come from eroded alpha == 1 / == 0.
        alpha, trimap = sample["alpha"], sample["trimap"]
        if (trimap == 1).any():
            assert float(alpha[trimap == 1].mean()) > 0.99
        if (trimap == 0).any():
            assert float(alpha[trimap == 0].mean()) < 0.01


def test_synthetic_samples(synthetic_dataset):
    assert len(synthetic_dataset) == 3
    for index in range(4):
        _check_sample(synthetic_dataset[index], synthetic_dataset.crop_size)


def test_same_seed_same_samples(synthetic_dataset):
    sources = synthetic_dataset.foregrounds, synthetic_dataset.backgrounds
    again = DIMDataset(*sources, synthetic_dataset.crop_size, seed=7)
    other_seed = DIMDataset(*sources, synthetic_dataset.crop_size, seed=8)
    first, second = synthetic_dataset[1], again[1]
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert not torch.equal(first["image"], other_seed[1]["image"])
    # Index i + len is the same pair, freshly augmented.
    assert not torch.equal(first["image"], synthetic_dataset[1 + len(synthetic_dataset)]["image"])
    synthetic_dataset.set_epoch(1)
    try:
        assert not torch.equal(first["image"], synthetic_dataset[1]["image"])
    finally:
        synthetic_dataset.set_epoch(0)


def test_bad_inputs_are_reported(tmp_path):
    with pytest.raises(DatasetError, match="folder not found"):
        DIMDataset(tmp_path / "missing", bundled_backgrounds(), 64)
    (tmp_path / "fg").mkdir()
    write_png_atomic(tmp_path / "fg" / "a.png", np.zeros((10, 12, 3), np.uint8))
    write_png_atomic(tmp_path / "alpha" / "a.png", np.zeros((10, 10), np.uint8))
    dataset = DIMDataset(tmp_path, bundled_backgrounds(), 64)
    with pytest.raises(ImageReadError, match="a.png: size 10x10 does not match"):
        dataset[0]
    write_png_atomic(tmp_path / "alpha" / "b.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match="only one of alpha/ and fg/: b"):
        DIMDataset(tmp_path, bundled_backgrounds(), 64)
