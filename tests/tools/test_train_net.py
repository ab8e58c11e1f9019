"""End-to-end tests of tools/train_net.py on downscaled real images (CPU, tiny model).

Covers: config saving, init checkpoints, a kill after a checkpoint followed by ``--resume``
(same iterations, learning rates and losses as an uninterrupted run) and a two-process gloo run
under torchrun (parameters identical on both ranks).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from diffmatte.config import LazyConfig
from diffmatte.utils.image_io import read_gray, read_image, write_png_atomic

REPO = Path(__file__).resolve().parents[2]
TRAIN_NET = REPO / "tools" / "train_net.py"

# configs/quickstart.py shrunk to a 64-pixel, 2-block model that runs an iteration in ~0.1 s.
TINY = [
    "model.backbone.img_size=64",
    "model.backbone.embed_dim=32",
    "model.backbone.depth=2",
    "model.backbone.num_heads=2",
    "model.backbone.window_block_indexes=[0]",
    "model.backbone.residual_block_indexes=[1]",
    "model.decoder.downsample_in=[7,8,16,16]",
    "model.decoder.upsample_in=[32,16,16,8,8]",
    "dataloader.train.dataset.crop_size=64",
    "dataloader.train.dataset.samples_per_epoch=12",
    "dataloader.train.batch_size=2",
    "train.eval_period=0",
    "train.log_period=1",
    "train.image_log_period=0",
]


@pytest.fixture(scope="module")
def small_real_data(shared_data_dir, tmp_path_factory):
    """Six real alphamatting.com images with alphas (long side 128) and four backgrounds."""
    root = tmp_path_factory.mktemp("real")
    source = shared_data_dir / "matting" / "alphamatting_train_lowres"
    for name in sorted(p.name for p in (source / "alpha").iterdir())[:6]:
        image = read_image(source / "image" / name)
        alpha = read_gray(source / "alpha" / name)
        scale = 128 / max(image.shape[:2])
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
        write_png_atomic(root / "fg" / "image" / name, np.rint(image * 255).astype(np.uint8))
        write_png_atomic(root / "fg" / "alpha" / name, alpha)
    # Validation set: two other real images, flat layout (image/, trimap/, alpha/).
    for name in sorted(p.name for p in (source / "alpha").iterdir())[6:8]:
        image = read_image(source / "image" / name)
        size = (
            round(image.shape[1] * 96 / max(image.shape[:2])),
            round(image.shape[0] * 96 / max(image.shape[:2])),
        )
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        write_png_atomic(root / "test" / "image" / name, np.rint(image * 255).astype(np.uint8))
        for folder, interpolation in (("alpha", cv2.INTER_AREA), ("trimap", cv2.INTER_NEAREST)):
            values = cv2.resize(
                read_gray(source / folder / name), size, interpolation=interpolation
            )
            write_png_atomic(root / "test" / folder / name, values)
    for path in sorted((shared_data_dir / "backgrounds").glob("sk*_*"))[:4]:
        background = cv2.resize(read_image(path), (160, 160), interpolation=cv2.INTER_AREA)
        write_png_atomic(
            root / "bg" / f"{path.stem}.png", np.rint(background * 255).astype(np.uint8)
        )
    return root


# Without it, validation after the last iteration would make the quickstart's synthetic test
# set in the working directory.
NO_VALIDATION = "dataloader.test=None"


def _overrides(data: Path, output: Path, *extra: str) -> list[str]:
    return [
        f"dataloader.train.dataset.foregrounds={data / 'fg'}",
        f"dataloader.train.dataset.backgrounds={data / 'bg'}",
        f"train.output_dir={output}",
        *TINY,
        *extra,
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    return env


def _command(*args: str) -> list[str]:
    return [
        sys.executable,
        str(TRAIN_NET),
        "--config-file",
        str(REPO / "configs/quickstart.py"),
        *args,
    ]


def _run(command: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs a command with the test environment, capturing its text output."""
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=timeout)


def _metrics(output: Path) -> dict[int, dict]:
    records = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    return {r["iteration"]: r for r in records}


def test_kill_then_resume_matches_uninterrupted_run(small_real_data, tmp_path):
    common = (
        "train.max_iter=12",
        "train.checkpointer.period=4",
        "train.checkpointer.max_to_keep=1",
        "train.self_align_stage2_step=6",
        NO_VALIDATION,
    )
    reference = tmp_path / "reference"
    result = _run(_command(*_overrides(small_real_data, reference, *common)))
    assert result.returncode == 0, result.stderr[-2000:]
    expected = _metrics(reference)
    assert sorted(expected) == list(range(1, 13))
    assert (reference / "model_final.pth").is_file()
    assert (reference / "config.yaml").is_file()
    # Periodic checkpoints after 4 and 8 iterations, max_to_keep=1 keeps the newer.
    assert [p.name for p in reference.glob("model_00*.pth")] == ["model_0000008.pth"]

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        _command(*_overrides(small_real_data, interrupted, *common)),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not (interrupted / "last_checkpoint").exists():
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "model_final.pth").exists(), "killed too late"
    checkpoint = (interrupted / "last_checkpoint").read_text().strip()
    done = int(checkpoint[len("model_") : -len(".pth")])
    assert done in (4, 8)

    result = _run(_command("--resume", *_overrides(small_real_data, interrupted, *common)))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming from {interrupted / checkpoint} (iteration {done})" in result.stdout
    resumed = _metrics(interrupted)
    assert max(resumed) == 12
    for iteration in range(done + 1, 13):
        for key in ("lr", "total_loss", "loss_mse", "loss_unknown_l1", "loss_laplacian"):
            assert resumed[iteration][key] == pytest.approx(expected[iteration][key], rel=1e-5), (
                iteration,
                key,
            )
    reference_final = torch.load(reference / "model_final.pth", weights_only=True)["model"]
    resumed_final = torch.load(interrupted / "model_final.pth", weights_only=True)["model"]
    for key, value in reference_final.items():
        torch.testing.assert_close(resumed_final[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_init_checkpoint_validation_and_eval_only(small_real_data, tmp_path):
    # A backbone-only file (as tools/convert_pretrained.py writes) initialises the backbone.
    from diffmatte.config import instantiate

    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(REPO / "configs/quickstart.py")), TINY)
    torch.manual_seed(5)
    donor = instantiate(cfg.model)
    init = {f"model.backbone.{k}": v for k, v in donor.backbone.state_dict().items()}
    torch.save(init, tmp_path / "init.pth")
    output = tmp_path / "run"
    validation = [
        f"dataloader.test.root={small_real_data / 'test'}",
        "dataloader.test.image_dir=image",
        "dataloader.test.trimap_dir=trimap",
        "dataloader.test.alpha_dir=alpha",
        "train.eval_sampler.method=ddim",
        "train.eval_sampler.steps=2",
    ]
    result = _run(
        _command(
            *_overrides(small_real_data, output, "train.max_iter=4", "optimizer.lr=0.0"),
            *validation,
            "train.eval_period=2",
            f"train.init_checkpoint={tmp_path / 'init.pth'}",
        )
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "decoder keys, trained from scratch" in result.stdout
    final = torch.load(output / "model_final.pth", weights_only=True)["model"]
    torch.testing.assert_close(final["backbone.pos_embed"], init["model.backbone.pos_embed"])
    saved = LazyConfig.load(output / "config.yaml")
    assert saved.train.max_iter == 4 and saved.model.backbone.embed_dim == 32
    # Validation after iterations 2 and 4, logged with the metrics; best weights kept.
    metrics = _metrics(output)
    assert {"eval/SAD", "eval/MSE", "eval/Grad", "eval/Conn"} <= set(metrics[2]) & set(metrics[4])
    assert metrics[2]["eval/SAD"] > 0
    assert (output / "model_best.pth").is_file()

    result = _run(
        _command(
            "--eval-only",
            *_overrides(small_real_data, output),
            *validation,
            f"train.init_checkpoint={output / 'model_final.pth'}",
        )
    )
    assert result.returncode == 0, result.stderr[-2000:]
    row = result.stdout.strip().splitlines()[-1].split()
    # Same weights, sampler and seeds as the last validation during training.
    assert float(row[-4]) == pytest.approx(metrics[4]["eval/SAD"], abs=5e-4)  # 3 decimals


def test_bad_override_is_one_line(tmp_path):
    result = _run(_command(f"train.output_dir={tmp_path}", "train.no_such_key=1"), timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "no_such_key" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _model_parameter_names(output: Path):
    from diffmatte.config import instantiate

    return instantiate(LazyConfig.load(output / "config.yaml").model).named_parameters()


_WORKER = """
import sys, torch
from diffmatte.engine import training
from diffmatte.utils.distributed import get_rank
cfg = training.load_config(sys.argv[2], sys.argv[3:])
trainer = training.run(cfg)
state = trainer.unwrapped_model.state_dict()
torch.save(state, f"{cfg.train.output_dir}/rank{get_rank()}.pth")
"""


def test_two_process_gloo_keeps_ranks_identical(small_real_data, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(_WORKER)
    output = tmp_path / "ddp"
    result = _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",
            str(worker),
            "--config-file",
            str(REPO / "configs/quickstart.py"),
            *_overrides(
                small_real_data,
                output,
                "train.max_iter=4",
                "train.self_align_stage2_step=2",
                NO_VALIDATION,
            ),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(output / "rank0.pth", weights_only=True)
    rank1 = torch.load(output / "rank1.pth", weights_only=True)
    final = torch.load(output / "model_final.pth", weights_only=True)["model"]
    assert rank0.keys() == rank1.keys() == final.keys()
    parameters = {name for name, _ in _model_parameter_names(output)}
    assert parameters and parameters < set(rank0)
    for key in rank0:
        torch.testing.assert_close(final[key], rank0[key], rtol=0, atol=0, msg=key)
        if key in parameters:
            torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
    # The ranks trained on different data: their last BatchNorm statistics differ (rank 0's are
    # broadcast before every forward, as in the original).
    assert not torch.equal(
        rank0["decoder.down_blks.0.bn1.running_mean"], rank1["decoder.down_blks.0.bn1.running_mean"]
    )
    # Both ranks logged to separate files, only rank 0 wrote metrics.
    assert (output / "log.txt").is_file() and (output / "log.txt.rank1").is_file()
    assert sorted(_metrics(output)) == [1, 2, 3, 4]


@pytest.mark.slow
def test_num_gpus_spawns_processes_on_cpu(small_real_data, tmp_path):
    output = tmp_path / "spawned"
    result = _run(
        _command(
            "--num-gpus",
            "2",
            *_overrides(small_real_data, output, "train.max_iter=3", NO_VALIDATION),
        ),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1 of 2" in (output / "log.txt.rank1").read_text()
    assert sorted(_metrics(output)) == [1, 2, 3]
    assert (output / "model_final.pth").is_file()


@pytest.mark.slow
def test_quickstart_flow(tmp_path):
    result = _run(
        [
            sys.executable,
            str(REPO / "tools" / "quickstart.py"),
            "--output-dir",
            str(tmp_path),
            *TINY,
            "train.max_iter=6",
            "train.eval_period=3",
        ],
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    table = [line.split() for line in lines if line.startswith(("untrained", "trained"))]
    assert [row[0] for row in table] == ["untrained", "trained"]
    assert all(float(value) >= 0 for row in table for value in row[1:])
    assert len(list((tmp_path / "pred_trained").glob("*.png"))) == 8
