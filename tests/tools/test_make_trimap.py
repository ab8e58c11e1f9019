"""tools/make_trimap.py: each mode writes the library's trimap; problems are one line, exit 2."""

from pathlib import Path

import numpy as np
import pytest

from diffmatte.data.trimaps import trimap_from_alpha, trimap_from_mask, trimap_from_scribbles
from diffmatte.utils.image_io import read_gray, write_png_atomic

TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_trimap.py"


@pytest.fixture(scope="module")
def tool(script_main):
    return script_main("tools/make_trimap.py")


@pytest.fixture
def square(tmp_path) -> Path:
    mask = np.zeros((40, 50), np.uint8)
    mask[10:30, 15:35] = 255
    return write_png_atomic(tmp_path / "mask.png", mask)


def test_mask_mode(tool, square, tmp_path, capsys):
    out = tmp_path / "trimap.png"
    assert tool.main(["mask", str(square), "-o", str(out), "--width", "10%"]) == 0
    expected = trimap_from_mask(read_gray(square), 2)
    np.testing.assert_array_equal(read_gray(out), expected)
    assert "50x40: foreground" in capsys.readouterr().out
    argv = ["mask", str(square), "-o", str(out), "--width", "3", "--inside-width", "0"]
    assert tool.main(argv) == 0
    np.testing.assert_array_equal(read_gray(out), trimap_from_mask(read_gray(square), 3, 0))


def test_alpha_and_scribbles_modes(tool, square, tmp_path):
    out = tmp_path / "trimap.png"
    assert tool.main(["alpha", str(square), "-o", str(out), "--radius", "4"]) == 0
    np.testing.assert_array_equal(read_gray(out), trimap_from_alpha(read_gray(square), 4))
    strokes = np.zeros((40, 50), np.uint8)
    strokes[0, :] = 255
    bg = write_png_atomic(tmp_path / "bg.png", strokes)
    argv = ["scribbles", "--foreground", str(square), "--background", str(bg), "--grow", "2"]
    assert tool.main([*argv, "-o", str(out)]) == 0
    np.testing.assert_array_equal(
        read_gray(out), trimap_from_scribbles(read_gray(square), strokes, 2)
    )


def test_check_mode_snaps(tool, tmp_path, capsys):
    gray = np.array([[0, 10, 128, 240], [0, 100, 128, 255]], np.uint8)
    path = write_png_atomic(tmp_path / "t.png", gray)
    out = tmp_path / "snapped.png"
    assert tool.main(["check", str(path), "-o", str(out)]) == 0
    assert read_gray(out).tolist() == [[0, 0, 128, 255], [0, 128, 128, 255]]
    out_text = capsys.readouterr().out
    assert "ok, 4x2" in out_text
    assert "snapped from 6 grey levels" in out_text


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d: ["check", str(d / "missing.png")], "missing.png: file not found"),
        (lambda d: ["check", str(d / "full.png")], "full.png: no unknown pixel"),
        (lambda d: ["check", str(d / "t.png"), "--image", str(d / "full.png")], "does not match"),
        (
            lambda d: ["mask", str(d / "t.png"), "-o", str(d / "o.png"), "--width", "x"],
            "band width 'x'",
        ),
    ],
)
def test_errors_are_one_line_exit_2(tool, tmp_path, capsys, make_args, message):
    write_png_atomic(tmp_path / "full.png", np.full((3, 3), 255, np.uint8))
    write_png_atomic(tmp_path / "t.png", np.full((2, 2), 128, np.uint8))
    assert tool.main(make_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o.png").exists()
