"""Image reading (bit depths, channel layouts), quantisation and atomic writing."""

import os

import cv2
import numpy as np
import pytest

from diffmatte.utils.image_io import (
    ImageReadError,
    alpha_to_uint8,
    read_gray,
    read_image,
    save_npy_atomic,
    to_uint8,
    write_image_atomic,
    write_png_atomic,
)


@pytest.fixture
def rgb8() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def test_read_image_8bit_rgb_order(tmp_path, rgb8):
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), rgb8[:, :, ::-1])  # OpenCV stores BGR
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == (5, 7, 3)
    np.testing.assert_array_equal(image, rgb8.astype(np.float32) / np.float32(255))
    assert image[0, 0, 0] == np.float32(rgb8[0, 0, 0]) / np.float32(255)


def test_read_image_grayscale_is_replicated(tmp_path, rgb8):
    path = tmp_path / "g.png"
    cv2.imwrite(str(path), rgb8[:, :, 0])
    image = read_image(path)
    assert image.shape == (5, 7, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], rgb8[:, :, 0] / np.float32(255))


def test_read_image_rgba_drops_alpha(tmp_path, rgb8):
    path = tmp_path / "a.png"
    bgra = np.dstack([rgb8[:, :, ::-1], np.full((5, 7), 17, np.uint8)])
    cv2.imwrite(str(path), bgra)
    np.testing.assert_array_equal(read_image(path), rgb8 / np.float32(255))


def test_read_image_16bit(tmp_path):
    values = np.array([[[0, 65535, 257]]], dtype=np.uint16)  # one RGB pixel
    path = tmp_path / "d.png"
    cv2.imwrite(str(path), values[:, :, ::-1])
    image = read_image(path)
    np.testing.assert_allclose(image[0, 0], [0.0, 1.0, 257 / 65535], rtol=1e-7)


def test_read_image_jpeg(tmp_path, rgb8):
    path = tmp_path / "j.jpg"
    flat = np.full((8, 8, 3), (200, 100, 50), np.uint8)
    cv2.imwrite(str(path), flat[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    image = read_image(path)
    assert image.shape == (8, 8, 3)
    # A flat colour survives JPEG to within a couple of levels, in RGB order.
    np.testing.assert_allclose(image[4, 4] * 255, [200, 100, 50], atol=3)


def test_read_gray_keeps_depth_and_equal_channels(tmp_path):
    gray16 = np.array([[0, 1000, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "t16.png"), gray16)
    out = read_gray(tmp_path / "t16.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, gray16)
    np.testing.assert_array_equal(to_uint8(out), [[0, 4, 255]])  # 1000 / 257 = 3.89

    grey_rgb = np.repeat(np.array([[0, 128, 255]], np.uint8)[:, :, None], 3, axis=2)
    cv2.imwrite(str(tmp_path / "t.png"), grey_rgb)
    np.testing.assert_array_equal(read_gray(tmp_path / "t.png"), [[0, 128, 255]])


def test_read_gray_colour_uses_luma(tmp_path):
    bgr = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)  # blue, red
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    # ITU-R 601 luma: 0.114 * 255 = 29.07, 0.299 * 255 = 76.2.
    np.testing.assert_array_equal(read_gray(tmp_path / "c.png"), [[29, 76]])


def test_errors_are_one_line_with_path(tmp_path):
    with pytest.raises(ImageReadError, match=r"nope\.png: file not found$"):
        read_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ImageReadError) as info:
        read_image(bad)
    assert str(info.value).startswith(f"{bad}: not a readable image")
    assert "\n" not in str(info.value)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty file"):
        read_gray(empty)
    with pytest.raises(ImageReadError, match="not a file"):
        read_gray(tmp_path)
    floats = tmp_path / "f.tif"
    cv2.imwrite(str(floats), np.zeros((4, 4), np.float32))
    with pytest.raises(ImageReadError, match="unsupported pixel type float32"):
        read_gray(floats)


def test_alpha_to_uint8_rounds_and_saturates():
    alpha = np.array([-0.5, 0.0, 0.5 / 255, 1.5 / 255, 0.4, 1.0, 1.2, np.nan], np.float32)
    # 0.5 and 1.5 are ties, rounded to even like OpenCV; 0.4 * 255 = 102.
    np.testing.assert_array_equal(alpha_to_uint8(alpha), [0, 0, 0, 2, 102, 255, 255, 0])


def test_alpha_to_uint8_matches_opencv_float_save(tmp_path):
    rng = np.random.default_rng(3)
    alpha = rng.uniform(-0.1, 1.1, size=(6, 9)).astype(np.float32)
    # The original saved the float map alpha * 255; OpenCV stores it as 8-bit.
    cv2.imwrite(str(tmp_path / "o.png"), cv2.cvtColor(alpha * 255, cv2.COLOR_GRAY2BGR))
    saved = cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(alpha_to_uint8(alpha), saved)


def test_write_png_atomic_creates_dirs_and_replaces(tmp_path, rgb8):
    target = tmp_path / "a" / "b" / "out.png"
    write_png_atomic(target, rgb8)
    np.testing.assert_array_equal(cv2.imread(str(target))[:, :, ::-1], rgb8)
    write_png_atomic(target, rgb8[:, :, 0])
    np.testing.assert_array_equal(cv2.imread(str(target), cv2.IMREAD_UNCHANGED), rgb8[:, :, 0])
    assert os.listdir(target.parent) == ["out.png"]  # no temporary file left behind
    umask = os.umask(0o022)
    try:
        write_png_atomic(target, rgb8)
        assert target.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
    finally:
        os.umask(umask)

    rgba = np.dstack([rgb8, np.full((5, 7), 9, np.uint8)])
    write_image_atomic(tmp_path / "c.png", rgba)
    stored = cv2.imread(str(tmp_path / "c.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(stored, np.dstack([rgb8[:, :, ::-1], rgba[:, :, 3]]))


def test_write_failure_leaves_no_partial_file(tmp_path):
    target = tmp_path / "x.png"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_png_atomic(target, np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        write_png_atomic(target, np.zeros((2, 2, 2), np.uint8))
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["x.png"]


def test_save_npy_atomic_exact_path(tmp_path):
    values = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    path = save_npy_atomic(tmp_path / "sub" / "alpha.data", values)
    assert path.name == "alpha.data" and sorted(os.listdir(path.parent)) == ["alpha.data"]
    loaded = np.load(path)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, values)
