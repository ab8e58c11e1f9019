"""DIM-style training data: augmentation steps, dataset samples, determinism, loaders."""

from itertools import islice

import cv2
import numpy as np
import pytest
import torch

from diffmatte.data.composition1k import DatasetError
from diffmatte.data.dim import (
    DIMDataset,
    TrainingSampler,
    build_train_loader,
    composite,
    dilated_trimap,
    estimate_foreground,
    mix_foregrounds,
    random_crop,
    random_jitter,
    random_trimap,
)
from diffmatte.data.sources import bundled_backgrounds
from diffmatte.data.synthetic import generate_foregrounds
from diffmatte.utils.image_io import ImageReadError, write_png_atomic

CROP = 64


@pytest.fixture(scope="module")
def synthetic_dataset() -> DIMDataset:
    rng = np.random.default_rng(5)
    backgrounds = [rng.random((80, 120, 3)).astype(np.float32) for _ in range(3)]
    return DIMDataset(generate_foregrounds(3, 96, seed=1, supersample=2), backgrounds, CROP, seed=7)


def _disc(size: int, radius: float, soft: float) -> np.ndarray:
    """Alpha of a disc with a linear soft rim of width ``soft`` pixels."""
    ys, xs = np.mgrid[0:size, 0:size]
    distance = np.hypot(xs - size / 2, ys - size / 2)
    return np.clip((radius + soft - distance) / soft, 0.0, 1.0).astype(np.float32)


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
        _check_sample(synthetic_dataset[index], CROP)


def test_same_seed_same_samples(synthetic_dataset):
    again = DIMDataset(synthetic_dataset.foregrounds, synthetic_dataset.backgrounds, CROP, seed=7)
    other_seed = DIMDataset(
        synthetic_dataset.foregrounds, synthetic_dataset.backgrounds, CROP, seed=8
    )
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


def test_loader_independent_of_workers(synthetic_dataset):
    batches = []
    for workers in (0, 2):
        loader = build_train_loader(synthetic_dataset, batch_size=2, num_workers=workers, seed=3)
        batches.append([batch for batch in islice(loader, 3)])
    for single, multi in zip(*batches, strict=True):
        assert single["image"].shape == (2, 3, CROP, CROP)
        for key in single:
            assert torch.equal(single[key], multi[key]), key


def test_loader_resume_and_epochs(synthetic_dataset):
    state = torch.get_rng_state()
    full = list(islice(build_train_loader(synthetic_dataset, 1, 0, seed=3), 5))
    resumed = list(islice(build_train_loader(synthetic_dataset, 1, 0, seed=3, start_iter=2), 3))
    assert torch.equal(torch.get_rng_state(), state)  # loading never draws from the global RNG
    for expected, got in zip(full[2:], resumed, strict=True):
        assert torch.equal(expected["alpha"], got["alpha"])
    finite = build_train_loader(synthetic_dataset, batch_size=2, num_workers=0, infinite=False)
    assert len(list(finite)) == 1  # 3 samples, batches of 2, drop_last


def test_training_sampler_splits_and_skips():
    stream = list(islice(TrainingSampler(10, seed=4), 25))
    assert sorted(stream[:10]) == list(range(10))
    assert sorted(stream[10:20]) == list(range(10, 20))
    assert stream[:10] != [value - 10 for value in stream[10:20]]
    ranks = [list(islice(TrainingSampler(10, seed=4, rank=r, world_size=2), 5)) for r in (0, 1)]
    assert ranks[0] == stream[0:10:2] and ranks[1] == stream[1:10:2]
    assert list(islice(TrainingSampler(10, seed=4, start=7), 6)) == stream[7:13]


def test_random_trimap_erodes_definite_regions():
    alpha = _disc(640, 200, 20)
    for seed in range(3):
        trimap = random_trimap(alpha, np.random.default_rng(seed), random_interp=False)
        assert set(np.unique(trimap)) == {0, 128, 255}
        assert np.all(alpha[trimap == 255] == 1.0)
        assert np.all(alpha[trimap == 0] == 0.0)
        assert np.all(trimap[(alpha > 0) & (alpha < 1)] == 128)


def test_random_crop_centres_unknown_and_upscales():
    rng = np.random.default_rng(0)
    trimap = np.zeros((300, 400), np.uint8)
    trimap[140:160, 250:270] = 128
    fg = rng.random((300, 400, 3)).astype(np.float32)
    alpha = (trimap / 255.0).astype(np.float32)
    bg = rng.random((50, 70, 3)).astype(np.float32)
    for seed in range(5):
        out = random_crop(fg, alpha, trimap, bg, 128, np.random.default_rng(seed))
        assert [array.shape[:2] for array in out] == [(128, 128)] * 4
        assert np.count_nonzero(out[2] == 128) >= 100
    small = random_crop(fg[:90, :100], alpha[:90, :100], trimap[:90, :100], bg, 128, rng)
    assert [array.shape[:2] for array in small] == [(128, 128)] * 4


def test_mix_foregrounds():
    rng = np.random.default_rng(0)
    a1 = np.full((8, 8), 0.5, np.float32)
    a2 = np.full((8, 8), 0.5, np.float32)
    f1, f2 = np.zeros((8, 8, 3), np.float32), np.ones((8, 8, 3), np.float32)
    fg, alpha = mix_foregrounds(f1, a1, f2, a2, rng, random_interp=False)
    np.testing.assert_allclose(alpha, 0.75)
    np.testing.assert_allclose(fg, 0.5)
    ones = np.ones((8, 8), np.float32)
    fg, alpha = mix_foregrounds(f1, ones, f2, a2, rng, random_interp=False)
    assert fg is f1 and alpha is ones


def test_random_jitter_keeps_range_and_skips_empty_alpha():
    rng = np.random.default_rng(0)
    fg = rng.random((32, 32, 3)).astype(np.float32)
    assert random_jitter(fg, np.zeros((32, 32), np.float32), rng) is fg
    jittered = random_jitter(fg, np.ones((32, 32), np.float32), np.random.default_rng(1))
    assert jittered.shape == fg.shape and jittered.min() >= 0 and jittered.max() <= 1
    assert np.abs(jittered - fg).mean() > 0.01


def test_dilated_trimap_hard_edge_width():
    alpha = np.zeros((20, 100), np.uint8)
    alpha[:, 50:] = 255
    trimap = dilated_trimap(alpha, 3)
    # Unknown where a radius-3 disc sees both sides: columns 47..52.
    assert np.all(trimap[:, :47] == 0) and np.all(trimap[:, 53:] == 255)
    assert np.all(trimap[:, 47:53] == 128)
    band = alpha.copy()
    band[:, 40:50] = 100
    assert np.count_nonzero(dilated_trimap(band, 0)[0] == 128) == 10


def test_estimate_foreground_beats_the_image():
    rng = np.random.default_rng(0)
    alpha = _disc(128, 30, 25)
    fg = np.empty((128, 128, 3), np.float32)
    fg[:] = (0.9, 0.2, 0.1)
    bg = cv2.resize(rng.random((4, 4, 3)).astype(np.float32), (128, 128))
    image = composite(fg, alpha, bg)
    estimate = estimate_foreground(image, alpha)
    soft = (alpha > 0.1) & (alpha < 0.9)
    error = np.abs(estimate - fg)[soft].mean()
    assert error < 0.5 * np.abs(image - fg)[soft].mean()
    inside = alpha == 1
    np.testing.assert_allclose(estimate[inside], image[inside], atol=1e-6)


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
