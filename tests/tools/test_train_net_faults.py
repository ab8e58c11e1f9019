"""Fault matrix of tools/train_net.py: every bad input ends with exactly one ``error:`` line on
stderr, exit status 2, no traceback and nothing written; the edge cases that are not errors
(``train.max_iter=0``, ``train.eval_period=0``, ``--resume`` without a checkpoint) do what
docs/training.md says.

Every command runs as a new user's would: a subprocess in a fresh working folder, on the CPU,
with configs/quickstart.py shrunk to a tiny model and tiny synthetic data.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffmatte.config import LazyConfig, instantiate
from diffmatte.utils.rng import seed_everything

REPO = Path(__file__).resolve().parents[2]
TRAIN_NET = REPO / "tools" / "train_net.py"
CONFIG = REPO / "configs" / "quickstart.py"

# configs/quickstart.py shrunk to a 64-pixel, 2-block model.
TINY_MODEL = [
    "model.backbone.img_size=64",
    "model.backbone.embed_dim=32",
    "model.backbone.depth=2",
    "model.backbone.num_heads=2",
    "model.backbone.window_block_indexes=[0]",
    "model.backbone.residual_block_indexes=[1]",
    "model.decoder.downsample_in=[7,8,16,16]",
    "model.decoder.upsample_in=[32,16,16,8,8]",
]
# Four 96-pixel training foregrounds and a two-image test set, made by the config's data nodes.
TINY_DATA = [
    "dataloader.train.dataset.foregrounds.num=4",
    "dataloader.train.dataset.foregrounds.size=96",
    "dataloader.train.dataset.crop_size=64",
    "dataloader.train.dataset.samples_per_epoch=8",
    "dataloader.train.batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.root.num_foregrounds=1",
    "dataloader.test.root.size=96",
    "train.eval_sampler.steps=1",
    "train.log_period=1",
    "train.image_log_period=0",
]


def _run(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, str(TRAIN_NET), *args]
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _train(cwd: Path, *overrides: str, **kwargs) -> subprocess.CompletedProcess:
    return _run(cwd, "--config-file", str(CONFIG), *TINY_MODEL, *overrides, **kwargs)


def _assert_one_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, exactly one stderr line, starting with 'error:', naming ``words``."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# A subprocess costs seconds (torch import): a few cases run by default, the rest with -m slow.
SLOW = pytest.mark.slow
BAD_INPUT = [
    (["--config-file", "configs/no_such.py"], ["configs/no_such.py", "not found"]),
    (["--config-file", str(CONFIG), "train.max_iter=abc"], ["train.max_iter", "'abc'"]),
    pytest.param(
        ["--config-file", str(CONFIG), "model.backbone.depth=-1"],
        ["'model.backbone'", "ViT"],
        marks=SLOW,
    ),
    pytest.param(
        ["--config-file", str(CONFIG), "train.max_iters=5"],
        ["did you mean 'train.max_iter'"],
        marks=SLOW,
    ),
    pytest.param(
        ["--config-file", str(CONFIG), "train.max_iter=-1"], ["train.max_iter", ">= 0"], marks=SLOW
    ),
    pytest.param(
        ["--config-file", str(CONFIG), "train.eval_period=-5"], ["train.eval_period"], marks=SLOW
    ),
    pytest.param(
        ["--config-file", str(CONFIG), "train.checkpointer.period=0"],
        ["checkpointer.period"],
        marks=SLOW,
    ),
    pytest.param(["--config-file", str(CONFIG), "train.seed=1.5"], ["train.seed"], marks=SLOW),
    pytest.param(
        ["--config-file", str(CONFIG), "train.grad_clip=-1"], ["train.grad_clip"], marks=SLOW
    ),
    pytest.param(
        ["--config-file", str(CONFIG), "train.resume_from=x.pth"], ["--resume"], marks=SLOW
    ),
    pytest.param(
        ["--config-file", str(CONFIG), "--eval-only"], ["train.init_checkpoint"], marks=SLOW
    ),
    pytest.param(["--config-file", str(CONFIG), "train.device=gpu7"], ["gpu7"], marks=SLOW),
    pytest.param(
        ["--config-file", str(CONFIG), "train.init_checkpoint=missing.pth"],
        ["missing.pth"],
        marks=SLOW,
    ),
    pytest.param(
        ["--config-file", str(CONFIG), "dataloader.train.dataset.foregrounds=no/folder"],
        ["no/folder"],
        marks=SLOW,
    ),
]


@pytest.mark.parametrize(("args", "words"), BAD_INPUT)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, args, words) -> None:
    result = _run(tmp_path, *args, timeout=120)
    _assert_one_error(result, *words)
    assert _files(tmp_path) == []


@SLOW
def test_num_gpus_below_one_is_a_usage_error(tmp_path: Path) -> None:
    result = _run(tmp_path, "--config-file", str(CONFIG), "--num-gpus", "0", timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "error:" in line] == [
        "train_net.py: error: --num-gpus must be at least 1"
    ]


def test_output_folder_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("not a folder\n")
    result = _train(tmp_path, "train.output_dir=a_file/run")
    _assert_one_error(result, "train.output_dir", "a_file")
    assert _files(tmp_path) == ["a_file"]


@SLOW
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_folder_not_writable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        result = _train(tmp_path, "train.output_dir=locked/run")
        _assert_one_error(result, "train.output_dir", "not writable")
    finally:
        locked.chmod(0o755)
    assert _files(tmp_path) == ["locked"]


def _state_dict(overrides: list[str], seed: int) -> dict[str, torch.Tensor]:
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), overrides)
    seed_everything(seed)
    return instantiate(cfg.model).state_dict()


def test_init_checkpoint_of_another_model_is_an_error(tmp_path: Path) -> None:
    # The full-size quickstart model given to the tiny one: mis-shaped and foreign keys.
    torch.save({"model": _state_dict([], 0)}, tmp_path / "other.pth")
    result = _train(tmp_path, "train.init_checkpoint=other.pth", "train.output_dir=run")
    line = _assert_one_error(result, "other.pth", "does not match", "with different shapes")
    assert "every key it has must be one" in line
    assert _files(tmp_path) == ["other.pth"]


def test_max_iter_zero_saves_the_initial_weights(tmp_path: Path) -> None:
    # A backbone-only file with the released "model." prefix: loaded, the rest initialised.
    donor = _state_dict(TINY_MODEL, 5)
    backbone = {f"model.{k}": v for k, v in donor.items() if k.startswith("backbone.")}
    torch.save(backbone, tmp_path / "backbone.pth")
    (tmp_path / "run").mkdir()
    stale = tmp_path / "run" / ".model_0000100.pth.0123abcd.tmp"
    stale.write_bytes(b"\0" * 1000)
    result = _train(
        tmp_path, "train.max_iter=0", "train.init_checkpoint=backbone.pth", "train.output_dir=run"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = [line for line in result.stdout.splitlines() if "initialised from" in line]
    assert len(summary) == 1
    assert f"{len(backbone)} of {len(donor)} weights loaded" in summary[0]
    assert "removed .model_0000100.pth.0123abcd.tmp" in result.stdout
    assert _files(tmp_path / "run") == ["config.yaml", "log.txt", "model_final.pth"]
    final = torch.load(tmp_path / "run" / "model_final.pth", weights_only=True)
    assert final["iteration"] == 0
    # The initial weights: the seeded initialisation, with the backbone from the file.
    expected = _state_dict(TINY_MODEL, 8282)
    for key, value in final["model"].items():
        source = donor if key.startswith("backbone.") else expected
        torch.testing.assert_close(value, source[key], rtol=0, atol=0, msg=key)
    assert not (tmp_path / "data").exists()  # no data needed, none made


@SLOW
def test_resume_without_checkpoint_starts_from_scratch(tmp_path: Path) -> None:
    result = _train(tmp_path, "--resume", "train.max_iter=0", "train.output_dir=run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no checkpoint in run: starting from scratch" in result.stdout
    assert (tmp_path / "run" / "model_final.pth").is_file()


def _fake_training_checkpoint(path: Path, iteration: int) -> None:
    state = {"model": _state_dict(TINY_MODEL, 0), "optimizer": {}, "iteration": iteration}
    torch.save(state, path)


def test_corrupt_last_checkpoint_names_the_newest_intact_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _fake_training_checkpoint(run / "model_0000002.pth", 2)
    _fake_training_checkpoint(run / "model_0000004.pth", 4)
    (run / "model_0000006.pth").write_bytes(b"PK\x03\x04 truncated")
    (run / "last_checkpoint").write_text("model_0000006.pth")
    before = _files(tmp_path)
    result = _train(tmp_path, "--resume", "train.output_dir=run")
    line = _assert_one_error(result, "model_0000006.pth")
    assert line.endswith(
        "the newest intact checkpoint is run/model_0000004.pth: resume from it with "
        "--resume train.resume_from=run/model_0000004.pth"
    )
    assert _files(tmp_path) == before


@SLOW
def test_missing_or_weights_only_resume_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _fake_training_checkpoint(run / "model_0000004.pth", 4)
    (run / "last_checkpoint").write_text("model_0000008.pth")
    line = _assert_one_error(_train(tmp_path, "--resume", "train.output_dir=run"))
    assert "model_0000008.pth, which does not exist" in line
    assert "train.resume_from=run/model_0000004.pth" in line

    # Weights only (what train.max_iter=0 writes) are a start, not a state to resume.
    torch.save({"model": _state_dict(TINY_MODEL, 0), "iteration": 0}, run / "model_final.pth")
    line = _assert_one_error(
        _train(
            tmp_path, "--resume", "train.resume_from=run/model_final.pth", "train.output_dir=run"
        )
    )
    assert (
        "holds model weights only" in line and "train.init_checkpoint=run/model_final.pth" in line
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Four iterations, checkpoints every 2, validation only at the end (eval_period=0)."""
    cwd = tmp_path_factory.mktemp("trained")
    result = _train(
        cwd,
        *TINY_DATA,
        "train.max_iter=4",
        "train.eval_period=0",
        "train.checkpointer.period=2",
        "train.output_dir=run",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd


@SLOW
def test_eval_period_zero_evaluates_once_at_the_end(trained: Path) -> None:
    run = trained / "run"
    records = [json.loads(line) for line in (run / "metrics.json").read_text().splitlines()]
    evaluated = [r["iteration"] for r in records if "eval/SAD" in r]
    assert evaluated == [4]
    assert (run / "model_best.pth").is_file()
    log = (run / "log.txt").read_text()
    assert log.count("evaluation after") == 1
    assert "CPU training: 1 compute thread(s) per process (OMP_NUM_THREADS=1)" in log
    # The data folders of the config were made, outside the run folder.
    assert (trained / "data" / "quickstart" / "train" / "alpha").is_dir()
    assert (trained / "data" / "quickstart" / "test" / "merged").is_dir()


@SLOW
def test_resume_from_a_named_checkpoint_removes_stale_temporaries(trained: Path) -> None:
    run = trained / "run"
    stale = run / ".model_0000004.pth.89abcdef.tmp"
    stale.write_bytes(b"\0" * 1000)
    result = _train(
        trained,
        *TINY_DATA,
        "--resume",
        "train.resume_from=run/model_0000002.pth",
        "train.max_iter=4",
        "train.eval_period=0",
        "train.checkpointer.period=2",
        "train.output_dir=run",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from run/model_0000002.pth (iteration 2)" in result.stdout
    assert not stale.exists()
