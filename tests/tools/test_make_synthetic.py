"""tools/make_synthetic.py run as a process: the folders it writes, and a refused start."""

import numpy as np

from diffmatte.data.synthetic import generate_foreground
from diffmatte.utils.image_io import alpha_to_uint8, read_gray


def test_writes_foregrounds_and_a_test_folder(tmp_path, run_script):
    argv = ["--output-dir", tmp_path / "fg", "--num", "2", "--size", "24", "32", "--seed", "3"]
    argv += ["--supersample", "1", "--testset-dir", tmp_path / "test", "--bgs-per-fg", "1"]
    result = run_script("tools/make_synthetic.py", *argv, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"wrote 2 foregrounds to {tmp_path / 'fg'}",
        f"wrote 2 composites to {tmp_path / 'test'}",
    ]
    _, alpha = generate_foreground([3, 1], (24, 32), 1)
    written = read_gray(tmp_path / "fg" / "alpha" / "synthetic_0001.png")
    np.testing.assert_array_equal(written, alpha_to_uint8(alpha))
    names = sorted(path.name for path in (tmp_path / "test" / "merged").iterdir())
    assert names == ["synthetic_0000_0.png", "synthetic_0001_0.png"]


def test_refuses_to_start_without_leaving_anything(tmp_path, run_script, assert_one_error):
    (tmp_path / "file").write_text("a file, not a folder")
    for argv, expected in (
        (["--output-dir", tmp_path / "file" / "fg", "--num", "1"], "cannot be used as an output"),
        (["--output-dir", tmp_path / "fg", "--num", "1", "--seed", "-1"], "seed -1: out of range"),
    ):
        result = run_script("tools/make_synthetic.py", *argv, "--quiet", cwd=tmp_path)
        assert_one_error(result, 2, expected)
        assert [path.name for path in tmp_path.iterdir()] == ["file"]
