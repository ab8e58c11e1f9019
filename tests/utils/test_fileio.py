"""Atomic writing: content, umask permissions, no partial or temporary file on failure."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from diffmatte.utils.fileio import (
    atomic_torch_save,
    atomic_write,
    atomic_write_text,
    remove_temporaries,
)


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(previous)


def test_atomic_write_creates_folders_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "out.bin"
    assert atomic_write(target, lambda handle: handle.write(b"\x00\x01first")) == target
    assert target.read_bytes() == b"\x00\x01first"
    atomic_write(str(target), lambda handle: handle.write(b"second"))
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["out.bin"]


@pytest.mark.skipif(os.name != "posix", reason="permission bits are POSIX")
def test_permissions_follow_umask(tmp_path, umask_027):
    paths = [
        atomic_write(tmp_path / "a.bin", lambda handle: handle.write(b"x")),
        atomic_write_text(tmp_path / "b.txt", "x"),
        atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "c.pth"),
    ]
    assert [p.stat().st_mode & 0o777 for p in paths] == [0o640] * 3  # not mkstemp's 0600
    assert os.umask(0o027) == 0o027  # the umask itself is left alone


def test_failure_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "keep.bin"
    target.write_bytes(b"old")

    def fail_halfway(handle):
        handle.write(b"partial data")
        handle.flush()
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, fail_halfway)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["keep.bin"]

    def interrupted(handle):
        handle.write(b"abc")
        raise KeyboardInterrupt

    fresh = tmp_path / "new.bin"
    with pytest.raises(KeyboardInterrupt):
        atomic_write(fresh, interrupted)
    assert not fresh.exists()
    assert os.listdir(tmp_path) == ["keep.bin"]


def test_text_is_utf8_with_newlines_as_given(tmp_path):
    path = atomic_write_text(tmp_path / "t.csv", "name,SAD\r\nä,1.5\n")
    assert path.read_bytes() == "name,SAD\r\nä,1.5\n".encode()


def test_torch_save_round_trip_and_unpicklable_object(tmp_path):
    state = {"model.w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "iteration": 7}
    path = atomic_torch_save(state, tmp_path / "ckpt" / "model.pth")
    loaded = torch.load(path, weights_only=True)
    assert loaded["iteration"] == 7 and torch.equal(loaded["model.w"], state["model.w"])

    with pytest.raises(Exception, match="(?i)pickle|lambda"):
        atomic_torch_save({"f": lambda: 0}, path)
    assert torch.equal(torch.load(path, weights_only=True)["model.w"], state["model.w"])
    assert os.listdir(path.parent) == ["model.pth"]


def test_concurrent_writers_use_distinct_temporaries(tmp_path):
    target = tmp_path / "same.txt"
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            for _ in range(20):
                atomic_write_text(target, f"writer {index}\n" * 100)
        except BaseException as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    lines = target.read_text().splitlines()
    assert len(lines) == 100 and len(set(lines)) == 1  # one writer's whole content
    assert os.listdir(tmp_path) == ["same.txt"]


def test_remove_temporaries_of_interrupted_writes(tmp_path):
    def interrupted(handle):
        handle.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "model_0000010.pth", interrupted)
    # A killed process cannot clean up: leave a temporary as it would.
    left = tmp_path / ".model_0000010.pth.0a1b2c3d.tmp"
    left.write_bytes(b"partial")
    keep = [tmp_path / "model_0000010.tmp", tmp_path / ".hidden.tmp", tmp_path / "notes.txt"]
    for path in keep:
        path.write_text("x")
    assert remove_temporaries(tmp_path) == [left]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)
    assert remove_temporaries(tmp_path / "missing") == []
