#!/usr/bin/env python
"""One-command CPU quickstart: make data, train a small DiffMatte, compare it with its untrained
self on a held-out composed test set.

Steps (each prints the equivalent command):

1. synthetic training foregrounds (``diffmatte.data.synthetic``) and a Composition-1k-style test
   set composed from other synthetic foregrounds and the bundled public-domain backgrounds
   (``diffmatte.data.testset``), all seeded;
2. ``tools/train_net.py --config-file configs/quickstart.py`` (300 iterations, CPU, TensorBoard
   logs in ``<output-dir>/train``), with bf16 autocast where the CPU has native bf16
   (``avx512_bf16`` or ``amx_bf16``), else float32;
3. ``inference.py --sample-strategy ddim10`` with the untrained weights (the initialisation
   training starts from) and with the trained weights;
4. SAD / MSE / Grad / Conn of both prediction folders (``diffmatte.evaluation``), as a table.

Usage:
    python tools/quickstart.py [--output-dir output/quickstart] [key=value ...]

Trailing ``key=value`` pairs are passed to training and inference as config overrides.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from diffmatte.config import LazyConfig, instantiate
from diffmatte.data.sources import bundled_backgrounds
from diffmatte.data.synthetic import write_foregrounds
from diffmatte.data.testset import compose_testset
from diffmatte.engine.checkpoint import save_model_weights
from diffmatte.evaluation.evaluator import evaluate_folders, format_means
from diffmatte.utils.cpu import bf16_support
from diffmatte.utils.rng import seed_everything

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "quickstart.py"
TRAIN_FOREGROUNDS = 64
TEST_FOREGROUNDS = 4
FOREGROUND_SIZE = 256
TEST_BGS_PER_FG = 2
SAMPLE_STRATEGY = "ddim10"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output-dir", default="output/quickstart", help="where data, run and predictions go"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    return parser.parse_args(argv)


def _step(title: str, command: list[str] | None = None) -> None:
    print(f"\n== {title}", flush=True)
    if command is not None:
        print("$ " + " ".join(command), flush=True)


def _run(command: list[str]) -> None:
    _step("running", command)
    # One compute thread (plus one data-loading process in training): on a small shared CPU,
    # OpenMP threads competing for cores are many times slower than a single thread.
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    subprocess.run(command, check=True, cwd=REPO, env=env)


def make_data(data_dir: Path) -> None:
    """Synthetic training foregrounds and a composed test set (skipped when present)."""
    _step(f"data in {data_dir}")
    train_dir, test_fg_dir, test_dir = data_dir / "train", data_dir / "test_fg", data_dir / "test"
    if not (train_dir / "alpha").is_dir():
        write_foregrounds(train_dir, TRAIN_FOREGROUNDS, size=FOREGROUND_SIZE, seed=0)
    if not (test_dir / "merged").is_dir():
        write_foregrounds(
            test_fg_dir, TEST_FOREGROUNDS, size=FOREGROUND_SIZE, seed=1, prefix="test"
        )
        compose_testset(test_fg_dir, bundled_backgrounds(), test_dir, bgs_per_fg=TEST_BGS_PER_FG)
    print(
        f"{TRAIN_FOREGROUNDS} training foregrounds, "
        f"{TEST_FOREGROUNDS * TEST_BGS_PER_FG} test composites"
    )


def save_untrained(config_overrides: list[str], path: Path) -> None:
    """The weights training starts from: the config's model built after the same seeding."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(CONFIG)), config_overrides)
    # As tools/train_net.py seeds rank 0 before building the model.
    seed_everything(int(cfg.train.seed))
    save_model_weights(instantiate(cfg.model), path)


def evaluate(pred_dir: Path, test_dir: Path) -> dict[str, float]:
    """Mean errors of a prediction folder against the test set."""
    evaluation = evaluate_folders(
        pred_dir, test_dir / "alpha_copy", test_dir / "trimaps", workers=1, progress=False
    )
    return evaluation.evaluator.summary()


def bf16_training_overrides() -> list[str]:
    """bf16 autocast for training where the CPU has native bf16 (else float32), said in one
    line; a trailing ``train.amp.enabled=False`` turns it off again."""
    support = bf16_support()
    if not support.native:
        print(f"training in float32: {support.reason}", flush=True)
        return []
    print(f"training with bf16 autocast: the CPU has {', '.join(support.flags)}", flush=True)
    return ["train.amp.enabled=True", "train.amp.precision=bf16"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.time()
    output = Path(args.output_dir).resolve()
    data_dir, run_dir = output / "data", output / "train"
    overrides = [
        f"dataloader.train.dataset.foregrounds={data_dir / 'train'}",
        f"dataloader.test.root={data_dir / 'test'}",
        f"train.output_dir={run_dir}",
        *bf16_training_overrides(),
        *args.opts,
    ]
    make_data(data_dir)

    _run([sys.executable, "tools/train_net.py", "--config-file", str(CONFIG), *overrides])

    run_dir.mkdir(parents=True, exist_ok=True)
    save_untrained(overrides, run_dir / "model_init.pth")
    rows = {}
    for name, weights in (("untrained", "model_init.pth"), ("trained", "model_final.pth")):
        pred_dir = output / f"pred_{name}"
        _run(
            [
                sys.executable,
                "inference.py",
                "--config-file",
                str(CONFIG),
                "--checkpoint",
                str(run_dir / weights),
                "--data-dir",
                str(data_dir / "test"),
                "--output-dir",
                str(pred_dir),
                "--sample-strategy",
                SAMPLE_STRATEGY,
                "--device",
                "cpu",
                "--overwrite",
                *overrides,
            ]
        )
        rows[name] = evaluate(pred_dir, data_dir / "test")

    _step(f"{SAMPLE_STRATEGY} on {data_dir / 'test'}")
    print(format_means(rows))
    print(f"\ndone in {time.time() - start:.0f} s; training curves: tensorboard --logdir {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
