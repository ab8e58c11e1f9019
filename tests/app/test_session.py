"""diffmatte.app.session: checkpoint scan, model cache, trimap sources and result pictures."""

import os
from pathlib import Path

import numpy as np
import pytest

from diffmatte.app import session
from diffmatte.app.session import AppInputError
from diffmatte.data.sources import bundled_lemur_dir
from diffmatte.data.trimaps import trimap_from_mask
from diffmatte.engine.checkpoint import save_model_weights
from diffmatte.inference import InferenceOptions
from diffmatte.utils.image_io import read_gray, read_image, write_png_atomic

LEMUR_IMAGE = bundled_lemur_dir() / "image" / "lemur.png"
LEMUR_TRIMAP = bundled_lemur_dir() / "trimap" / "lemur.png"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_find_checkpoints_pairs_configs_and_offers_the_quickstart(tmp_path):
    (tmp_path / "configs").mkdir()
    for name in ("ViTS.py", "res34.py", "quickstart.py"):
        (tmp_path / "configs" / name).write_text("")
    (tmp_path / "checkpoints" / "sub").mkdir(parents=True)
    for name in ("ViTS.pth", "sub/other.pt", "model_init.pth", "notes.txt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"")
    choices = session.find_checkpoints(tmp_path / "checkpoints", tmp_path)
    assert [Path(choice.checkpoint).name for choice in choices] == ["ViTS.pth", "other.pt"]
    assert [choice.label for choice in choices] == [
        "checkpoints/ViTS.pth",
        "checkpoints/sub/other.pt",
    ]
    assert Path(choices[0].config).name == "ViTS.py" and choices[1].config is None
    assert session.find_checkpoints(tmp_path / "missing", tmp_path) == []
    quickstart = tmp_path / "output" / "quickstart" / "train" / "model_final.pth"
    quickstart.parent.mkdir(parents=True)
    quickstart.write_bytes(b"")
    offered = session.find_checkpoints(tmp_path / "missing", tmp_path)
    assert len(offered) == 1 and offered[0].label.startswith("quickstart")
    assert Path(offered[0].config).name == "quickstart.py"


def test_model_cache_loads_once_and_reloads_on_change(tmp_path, tiny_config, build_tiny_model):
    checkpoint = save_model_weights(build_tiny_model(0), tmp_path / "tiny.pth")
    cache = session.ModelCache()
    first, seconds = cache.get(str(tiny_config), str(checkpoint), InferenceOptions(), "cpu")
    assert seconds > 0 and cache.loads == 1
    again, seconds = cache.get(str(tiny_config), str(checkpoint), InferenceOptions(), "cpu")
    assert again is first and seconds == 0.0 and cache.loads == 1
    cache.get(str(tiny_config), str(checkpoint), InferenceOptions(max_tile_bytes=2**20), "cpu")
    assert cache.loads == 2
    save_model_weights(build_tiny_model(1), checkpoint)
    os.utime(checkpoint, ns=(1, 1))  # a new modification time, whatever the clock
    cache.get(str(tiny_config), str(checkpoint), InferenceOptions(max_tile_bytes=2**20), "cpu")
    assert cache.loads == 3


@pytest.mark.parametrize(
    ("config", "checkpoint", "message"),
    [
        ("tiny", "", "no checkpoint chosen"),
        ("tiny", "missing.pth", "missing.pth: checkpoint file not found"),
        ("configs/ViTS.py", "tiny", "tiny.pth does not fit ViTS.py"),
        ("nowhere.py", "tiny", "nowhere.py: config file not found"),
    ],
)
def test_model_cache_errors(tmp_path, tiny_config, build_tiny_model, config, checkpoint, message):
    weights = save_model_weights(build_tiny_model(0), tmp_path / "tiny.pth")
    config = str(tiny_config) if config == "tiny" else config
    checkpoint = str(weights) if checkpoint == "tiny" else checkpoint
    with pytest.raises(AppInputError, match=message):
        session.ModelCache().get(config, checkpoint, InferenceOptions(), "cpu")


def test_read_trimap_sources(tmp_path):
    image = read_image(LEMUR_IMAGE)
    summary, gray = session.read_trimap("upload", image.shape, trimap_file=str(LEMUR_TRIMAP))
    np.testing.assert_array_equal(gray, read_gray(LEMUR_TRIMAP))
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[100:300, 200:500] = 255
    mask_file = write_png_atomic(tmp_path / "mask.png", mask)
    summary, _ = session.read_trimap(
        "mask", image.shape, mask_file=str(mask_file), band_width=7, inside_width=3
    )
    np.testing.assert_array_equal(summary.trimap, trimap_from_mask(mask, 7, 3))
    with pytest.raises(AppInputError, match="mask: size 10x10 does not match the image"):
        small = write_png_atomic(tmp_path / "small.png", np.zeros((10, 10), np.uint8))
        session.read_trimap("mask", image.shape, mask_file=str(small))
    with pytest.raises(AppInputError, match="upload trimap: no unknown pixel"):
        full = write_png_atomic(tmp_path / "full.png", np.full(image.shape[:2], 255, np.uint8))
        session.read_trimap("upload", image.shape, trimap_file=str(full))


def test_painted_strokes_by_brightness():
    layer = np.zeros((6, 8, 4), np.uint8)
    layer[1, 1] = (255, 255, 255, 255)  # foreground stroke
    layer[4, 6] = (0, 0, 0, 255)  # background stroke
    layer[2, 5] = (128, 128, 128, 255)  # unknown stroke
    layer[3, 3] = (255, 255, 255, 40)  # faint antialiasing: not painted
    trimap = session.painted_trimap(layer, (6, 8))
    assert trimap[1, 1] == 255 and trimap[4, 6] == 0 and trimap[3, 3] == 128
    assert int((trimap == 128).sum()) == 46
    grown = session.painted_trimap(layer, (6, 8), grow=1)
    assert grown[1, 2] == 255 and grown[2, 5] == 128
    # A layer at half the image size is scaled up (nearest).
    assert session.painted_trimap(layer, (12, 16))[2:4, 2:4].tolist() == [[255, 255]] * 2


def test_result_pictures():
    board = session.checkerboard(4, 40, square=16)
    assert board[0, 0, 0] == np.float32(0.8) and board[0, 16, 0] == np.float32(0.55)
    image = np.full((2, 2, 3), 1.0, np.float32)
    alpha = np.array([[1.0, 0.0], [0.5, 0.0]], np.float32)
    out = session.over_background(image, alpha, session.parse_colour("#000000"))
    assert out[:, :, 0].tolist() == [[255, 0], [128, 0]]
    np.testing.assert_array_equal(session.parse_colour("rgb(255, 0, 51)") * 255, [255, 0, 51])
    with pytest.raises(AppInputError, match="colour"):
        session.parse_colour("green")
