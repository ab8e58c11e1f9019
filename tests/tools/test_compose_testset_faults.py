"""Fault matrix of tools/compose_testset.py, run as a process: exit status 2, one ``error:`` line
naming the folder or value, no traceback, and no output folder created."""

from pathlib import Path

import pytest

from diffmatte.data.synthetic import write_foregrounds

HUGE_SEED = "99999999999999999999999"
# id: (arguments replacing the good ones, expected part of the error line); "{t}" is the case's
# folder. A good run composes the one synthetic foreground of "{t}/fg" onto the bundled
# backgrounds into "{t}/out".
CASES = {
    "foregrounds-missing": (["--foregrounds", "{t}/nowhere"], "nowhere: folder not found"),
    "foregrounds-empty": (["--foregrounds", "{t}/empty"], "empty"),
    "backgrounds-missing": (["--backgrounds", "{t}/nowhere"], "nowhere"),
    "bgs-per-fg-zero": (["--bgs-per-fg", "0"], "bgs_per_fg must be positive, got 0"),
    "trimap-radius-reversed": (["--trimap-radius", "5", "2"], "trimap_radius"),
    "seed-negative": (["--seed", "-1"], "seed -1: out of range"),
    "seed-huge": (["--seed", HUGE_SEED], f"seed {HUGE_SEED}: out of range"),
    "output-under-a-file": (["--output-dir", "{t}/file/out"], "cannot be used as an output"),
}
FAST = {"foregrounds-missing", "seed-huge", "output-under-a-file"}


@pytest.fixture(scope="module")
def foreground(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fg")
    write_foregrounds(root, 1, (32, 48), seed=0, supersample=1)
    return root


@pytest.mark.parametrize(
    "case", [case if case in FAST else pytest.param(case, marks=pytest.mark.slow) for case in CASES]
)
def test_fault(case, foreground, tmp_path, run_script, assert_one_error):
    (tmp_path / "file").write_text("a file, not a folder")
    (tmp_path / "empty").mkdir()
    changed, expected = CASES[case]
    changed = [arg.format(t=tmp_path) for arg in changed]
    args = {"--foregrounds": str(foreground), "--output-dir": str(tmp_path / "out")}
    flags = [arg for arg in changed if arg.startswith("--")]
    argv = [item for key, value in args.items() if key not in flags for item in (key, value)]
    result = run_script("tools/compose_testset.py", *argv, *changed, "--quiet", cwd=tmp_path)
    assert_one_error(result, 2, expected)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty", "file"]
