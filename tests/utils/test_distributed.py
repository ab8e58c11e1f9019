"""Rank / world size from the torchrun environment and round-robin sharding."""

import pytest

from diffmatte.utils.distributed import (
    get_local_rank,
    get_rank,
    get_world_size,
    is_main_process,
    shard,
)


def test_defaults_without_launcher(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert (get_rank(), get_world_size(), get_local_rank()) == (0, 1, 0)
    assert is_main_process()


def test_torchrun_variables(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (get_rank(), get_world_size(), get_local_rank()) == (2, 3, 1)
    assert not is_main_process()
    assert shard(list(range(10))) == [2, 5, 8]


def test_bad_variables_give_clear_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(ValueError, match="RANK='two' is not an integer"):
        get_rank()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="not below WORLD_SIZE=2"):
        get_rank()
    monkeypatch.setenv("WORLD_SIZE", "0")
    with pytest.raises(ValueError, match="at least 1"):
        get_world_size()


def test_shards_are_disjoint_and_complete():
    items = [f"img{i}" for i in range(11)]
    shares = [shard(items, rank, 4) for rank in range(4)]
    assert [len(share) for share in shares] == [3, 3, 3, 2]
    assert sorted(sum(shares, [])) == sorted(items)
    with pytest.raises(ValueError):
        shard(items, 4, 4)
