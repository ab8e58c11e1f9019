#!/usr/bin/env python
"""One-command CPU quickstart: make data, train a small DiffMatte, compare it with its untrained
self on a held-out composed test set.

Steps (each prints the equivalent command):

1. synthetic training foregrounds and a Composition-1k-style test set composed from other
   synthetic foregrounds and the bundled public-domain backgrounds, all seeded, in
   ``<output-dir>/data`` (the data nodes of ``configs/quickstart.py``,
   ``diffmatte.data.synthetic_folders``);
2. ``tools/train_net.py --config-file configs/quickstart.py`` (300 iterations, CPU, TensorBoard
   logs in ``<output-dir>/train``), with bf16 autocast where the CPU has native bf16, else fp32;
3. the untrained weights (the initialisation training starts from: the same command with
   ``train.max_iter=0``, in ``<output-dir>/init``), then ``inference.py --sample-strategy ddim10``
   with them and with the trained weights;
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
from diffmatte.engine.training import bf16_training_overrides
from diffmatte.evaluation.evaluator import evaluate_folders, format_means

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "quickstart.py"
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


def make_data(config_overrides: list[str]) -> None:
    """The config's synthetic training and test folders (made when missing)."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(CONFIG)), config_overrides)
    folders = (cfg.dataloader.train.dataset.foregrounds, cfg.dataloader.test.root)
    _step("data in " + ", ".join(node.folder for node in folders))
    for node in folders:
        instantiate(node)


def evaluate(pred_dir: Path, test_dir: Path) -> dict[str, float]:
    """Mean errors of a prediction folder against the test set."""
    evaluation = evaluate_folders(
        pred_dir, test_dir / "alpha_copy", test_dir / "trimaps", workers=1, progress=False
    )
    return evaluation.evaluator.summary()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.time()
    output = Path(args.output_dir).resolve()
    data_dir, run_dir = output / "data", output / "train"
    overrides = [
        f"dataloader.train.dataset.foregrounds.folder={data_dir / 'train'}",
        f"dataloader.test.root.folder={data_dir / 'test'}",
        f"train.output_dir={run_dir}",
        *bf16_training_overrides(),
        *args.opts,
    ]
    make_data(overrides)

    train_net = [sys.executable, "tools/train_net.py", "--config-file", str(CONFIG), *overrides]
    _run(train_net)
    # The weights training started from: the same run with no iteration.
    init_dir = output / "init"
    _run([*train_net, "train.max_iter=0", f"train.output_dir={init_dir}"])
    rows = {}
    for name, weights in (
        ("untrained", init_dir / "model_final.pth"),
        ("trained", run_dir / "model_final.pth"),
    ):
        pred_dir = output / f"pred_{name}"
        _run(
            [
                sys.executable,
                "inference.py",
                "--config-file",
                str(CONFIG),
                "--checkpoint",
                str(weights),
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
