"""Tests for diffmatte.engine.launch: where processes run and how many threads they use."""

import os
from pathlib import Path

import pytest
import torch

from diffmatte.engine.launch import launch, set_cpu_threads, under_torchrun


def _record_environment(folder: str) -> int:
    rank = os.environ["RANK"]
    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR")
    Path(folder, f"rank{rank}.txt").write_text(" ".join(os.environ[k] for k in keys))
    return 0


def _fail_on_rank_one(folder: str) -> int:
    return 3 if os.environ["RANK"] == "1" else 0


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_one_process_and_torchrun_run_here(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not under_torchrun()
    assert launch(lambda value: value + 1, 1, args=(4,)) == 5
    # Under torchrun the launcher started the other processes: run once, here.
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert under_torchrun()
    assert launch(lambda value: value * 2, 2, args=(4,)) == 8
    with pytest.raises(ValueError, match="at least 1"):
        launch(lambda: 0, 0)


@pytest.mark.slow
def test_spawned_processes_get_the_torchrun_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launch(_record_environment, 2, args=(str(tmp_path),)) == 0
    assert (tmp_path / "rank0.txt").read_text() == "0 0 2 2 127.0.0.1"
    assert (tmp_path / "rank1.txt").read_text() == "1 1 2 2 127.0.0.1"
    assert launch(_fail_on_rank_one, 2, args=(str(tmp_path),)) == 3


@pytest.mark.parametrize(
    ("cores", "processes", "workers", "expected"),
    [(2, 1, 1, 1), (8, 1, 1, 7), (8, 2, 2, 2), (2, 2, 1, 1), (16, 1, 0, 16)],
)
def test_cpu_threads_leave_cores_to_loader_workers(
    monkeypatch, threads, caplog, cores, processes, workers, expected
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(processes))
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(cores)), raising=False)
    with caplog.at_level("INFO", logger="diffmatte.engine.launch"):
        assert set_cpu_threads(workers) == expected
    assert torch.get_num_threads() == expected
    assert f"{expected} compute thread(s) per process ({cores} cores" in caplog.text


def test_cpu_threads_keep_omp_num_threads(monkeypatch, threads, caplog) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(3)
    with caplog.at_level("INFO", logger="diffmatte.engine.launch"):
        assert set_cpu_threads(1) == 3
    assert "(OMP_NUM_THREADS=3)" in caplog.text
