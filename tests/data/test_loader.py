"""Training loader: worker independence, resume, epochs, the sharded infinite index stream."""

from itertools import islice

import torch

from diffmatte.data.loader import ShardedInfiniteSampler, build_train_loader


def test_loader_independent_of_workers(synthetic_dataset):
    batches = []
    for workers in (0, 2):
        loader = build_train_loader(synthetic_dataset, batch_size=2, num_workers=workers, seed=3)
        batches.append([batch for batch in islice(loader, 3)])
    for single, multi in zip(*batches, strict=True):
        crop = synthetic_dataset.crop_size
        assert single["image"].shape == (2, 3, crop, crop)
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


def test_sharded_infinite_sampler_splits_and_skips():
    stream = list(islice(ShardedInfiniteSampler(10, seed=4), 25))
    assert sorted(stream[:10]) == list(range(10))
    assert sorted(stream[10:20]) == list(range(10, 20))
    assert stream[:10] != [value - 10 for value in stream[10:20]]
    ranks = [
        list(islice(ShardedInfiniteSampler(10, seed=4, rank=rank, world_size=2), 5))
        for rank in (0, 1)
    ]
    assert ranks[0] == stream[0:10:2] and ranks[1] == stream[1:10:2]
    assert list(islice(ShardedInfiniteSampler(10, seed=4, start=7), 6)) == stream[7:13]
