"""Tests for diffmatte.engine.training: the checks a run makes before it writes anything."""

import os
from pathlib import Path

import pytest

from diffmatte.config import ConfigError
from diffmatte.engine.training import check_output_dir, load_config

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart.py"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_iter=abc", "train.max_iter: expected an integer >= 0, got 'abc'"),
        ("train.max_iter=-3", "train.max_iter: expected an integer >= 0, got -3"),
        ("train.max_iter=2.5", "train.max_iter: expected an integer >= 0, got 2.5"),
        ("train.eval_period=True", "train.eval_period: expected an integer >= 0, got True"),
        ("train.log_period=0", "train.log_period: expected an integer >= 1, got 0"),
        ("train.checkpointer.max_to_keep=0", "train.checkpointer.max_to_keep: expected an"),
        ("train.grad_clip=0", "train.grad_clip: expected a number > 0 or None, got 0"),
        ("train.output_dir=''", "train.output_dir: expected a non-empty string"),
    ],
)
def test_bad_train_values_name_their_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CONFIG, [override])
    assert str(info.value).startswith(message)


def test_good_values_pass() -> None:
    cfg = load_config(
        CONFIG, ["train.max_iter=0", "train.grad_clip=1", "train.checkpointer.max_to_keep=None"]
    )
    assert cfg.train.max_iter == 0


def test_output_dir_checks_create_nothing(tmp_path) -> None:
    check_output_dir(tmp_path / "a" / "b")
    check_output_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"is a file, not a folder"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(ConfigError, match=r"cannot create .*/file/run: .*/file is not a folder"):
        check_output_dir(tmp_path / "file" / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            check_output_dir(locked / "run")
    finally:
        locked.chmod(0o755)
