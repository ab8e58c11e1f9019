"""Fault matrix of inference.py and run_one_image.py, run as processes as a user runs them.

Every case must end with its documented exit status, exactly one ``error:`` line naming the file,
key or value, no traceback, and nothing left behind: no output file, no output folder. The cases
run concurrently (one process each) in a module fixture; each test checks one of them. Every
process costs seconds of start-up (torch), so the default run takes the cases of known past
failures (FAST) and ``-m slow`` the whole matrix.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO_ROOT / "tests" / "configs" / "tiny_vit.py"
HUGE_SEED = "99999999999999999999999"


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _trimap(height: int, width: int) -> np.ndarray:
    trimap = np.full((height, width), 128, np.uint8)
    trimap[:4], trimap[-4:] = 0, 255
    return trimap


def _folder(root: Path, names=("a",)) -> Path:
    for name in names:
        _write(root / "merged" / f"{name}.png", np.full((24, 40, 3), 90, np.uint8))
        _write(root / "trimaps" / f"{name}.png", _trimap(24, 40))
    return root


# id: (script, arguments after the common ones, exit status, expected part of the error line).
# "{w}" is the tiny weights, "{d}" a good folder, "{t}" the case's own folder, "{o}" the output.
INFERENCE = "inference.py"
ONE = "run_one_image.py"
CASES = {
    # inference.py
    "folder-missing": (
        INFERENCE,
        ["--data-dir", "{t}/nowhere"],
        2,
        "{t}/nowhere: folder not found",
    ),
    "folder-empty": (INFERENCE, ["--data-dir", "{t}/empty"], 2, "merged: no usable images"),
    "checkpoint-missing": (
        INFERENCE,
        ["--checkpoint", "{t}/none.pth"],
        2,
        "none.pth: checkpoint file not found",
    ),
    "checkpoint-foreign": (INFERENCE, ["--checkpoint", "{t}/foreign.pth"], 2, "unknown"),
    "checkpoint-other-size": (INFERENCE, ["model.backbone.embed_dim=48"], 2, "checkpoint"),
    "strategy-unknown": (
        INFERENCE,
        ["--sample-strategy", "euler5"],
        2,
        "invalid sampling strategy 'euler5'",
    ),
    "steps-huge": (
        INFERENCE,
        ["--sample-strategy", "ddim10000000000"],
        2,
        "1 <= N <= 1000 (each step",
    ),
    "steps-1001": (INFERENCE, ["--sample-strategy", "ddpm1001"], 2, "1 <= N <= 1000"),
    "seed-huge": (
        INFERENCE,
        ["--seed", HUGE_SEED],
        2,
        f"seed {HUGE_SEED}: out of range; seeds are integers 0 <= S < 2**63",
    ),
    "seed-negative": (INFERENCE, ["--seed", "-1"], 2, "seed -1: out of range"),
    "override-not-a-number": (
        INFERENCE,
        ["model.backbone.embed_dim=abc"],
        2,
        "model.backbone.embed_dim=abc: 'model.backbone'",
    ),
    "override-negative-depth": (
        INFERENCE,
        ["model.backbone.depth=-1"],
        2,
        "model.backbone.depth=-1: 'model.backbone'",
    ),
    "override-unknown-key": (
        INFERENCE,
        ["model.backbone.nope=1"],
        2,
        "'model.backbone.nope' does not exist",
    ),
    "output-under-a-file": (
        INFERENCE,
        ["--output-dir", "{t}/file/sub"],
        2,
        "file/sub: cannot be used as an output folder",
    ),
    "output-is-input": (
        INFERENCE,
        ["--output-dir", "{d}/trimaps"],
        2,
        "trimaps: is an input folder",
    ),
    "device-unknown": (INFERENCE, ["--device", "tpu"], 2, "invalid device 'tpu'"),
    "batch-size-zero": (
        INFERENCE,
        ["--batch-size", "0"],
        2,
        "batch_size must be a positive integer",
    ),
    "precision-on-cpu": (
        INFERENCE,
        ["--precision", "fp16"],
        2,
        "precision fp16 needs a CUDA device",
    ),
    # run_one_image.py
    "one-image-missing": (ONE, ["--image", "{t}/x.png"], 2, "x.png: file not found"),
    "one-image-unreadable": (
        ONE,
        ["--image", "{t}/garbage.png"],
        2,
        "garbage.png: not a readable image",
    ),
    "one-trimap-size": (
        ONE,
        ["--trimap", "{t}/small.png"],
        2,
        "small.png: size 10x10 does not match the image a.png (40x24)",
    ),
    "one-checkpoint-missing": (
        ONE,
        ["--checkpoint", "{t}/none.pth"],
        2,
        "none.pth: checkpoint file not found",
    ),
    "one-checkpoint-foreign": (ONE, ["--checkpoint", "{t}/foreign.pth"], 2, "unknown"),
    "one-steps-huge": (ONE, ["--sample-strategy", "ddim10000000000"], 2, "1 <= N <= 1000"),
    "one-seed-huge": (ONE, ["--seed", HUGE_SEED], 2, f"seed {HUGE_SEED}: out of range"),
    "one-override-bad": (ONE, ["model.backbone.embed_dim=abc"], 2, "model.backbone.embed_dim=abc"),
    "one-output-under-a-file": (
        ONE,
        ["--output", "{t}/file/sub/a.png"],
        2,
        "sub/a.png: cannot be written",
    ),
    "one-extra-under-a-file": (
        ONE,
        ["--output-npy", "{t}/file/a.npy"],
        2,
        "a.npy: cannot be written",
    ),
    "one-output-is-input": (ONE, ["--output", "{d}/merged"], 2, "a.png: is an input file"),
    "one-output-is-folder": (
        ONE,
        ["--output", "{t}/dir.png"],
        2,
        "dir.png: is a folder, not a file",
    ),
}


FAST = {
    "folder-empty",
    "checkpoint-foreign",
    "steps-huge",
    "seed-huge",
    "override-not-a-number",
    "output-under-a-file",
    "one-trimap-size",
    "one-seed-huge",
    "one-extra-under-a-file",
}


def _argv(script, args, weights, data, case_dir):
    """The case's arguments after defaults that make the command otherwise succeed."""
    defaults = {"--config-file": TINY_CONFIG, "--checkpoint": weights, "--device": "cpu"}
    if script == INFERENCE:
        defaults.update({"--data-dir": data, "--output-dir": case_dir / "out"})
    else:
        defaults.update({"--image": data / "merged" / "a.png"})
        defaults.update(
            {"--trimap": data / "trimaps" / "a.png", "--output": case_dir / "out" / "a.png"}
        )
    flags = [arg for arg in args if arg.startswith("--")]
    argv = [
        str(item) for key, value in defaults.items() if key not in flags for item in (key, value)
    ]
    return argv + args + ["--sample-strategy", "ddim1"] * ("--sample-strategy" not in flags)


@pytest.fixture(scope="module")
def results(request, tmp_path_factory, run_script, tiny_weights):
    """Runs the selected cases, several processes at a time; ``{id: (result, case folder)}``."""
    root = tmp_path_factory.mktemp("faults")
    data = _folder(root / "data")
    selected = {
        item.callspec.params["case"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
    }
    jobs = {}
    for case in selected:
        script, args, _, _ = CASES[case]
        case_dir = root / case
        case_dir.mkdir()
        (case_dir / "file").write_text("a file, not a folder")
        (case_dir / "dir.png").mkdir()
        (case_dir / "empty" / "merged").mkdir(parents=True)
        (case_dir / "empty" / "trimaps").mkdir()
        (case_dir / "garbage.png").write_bytes(b"not a png")
        _write(case_dir / "small.png", _trimap(10, 10))
        torch.save({"model.backbone.unknown": torch.zeros(3)}, case_dir / "foreign.pth")
        names = {"w": tiny_weights, "d": data, "t": case_dir}
        filled = [arg.format(**{key: str(value) for key, value in names.items()}) for arg in args]
        jobs[case] = (script, _argv(script, filled, tiny_weights, data, case_dir), case_dir)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        futures = {
            case: pool.submit(run_script, script, *argv, cwd=case_dir)
            for case, (script, argv, case_dir) in jobs.items()
        }
        return {case: (future.result(), jobs[case][2]) for case, future in futures.items()}


@pytest.mark.parametrize(
    "case", [case if case in FAST else pytest.param(case, marks=pytest.mark.slow) for case in CASES]
)
def test_fault(case, results, assert_one_error, tiny_weights):
    script, args, status, expected = CASES[case]
    result, case_dir = results[case]
    expected = expected.format(t=case_dir, w=tiny_weights, d="")
    assert_one_error(result, status, expected)
    # Nothing left behind: no output folder, no file but the ones the case made.
    assert not (case_dir / "out").exists(), result.stderr
    made = {"file", "dir.png", "empty", "garbage.png", "small.png", "foreign.pth"}
    assert set(os.listdir(case_dir)) == made
    assert list((case_dir / "dir.png").iterdir()) == []
