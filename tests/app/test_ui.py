"""The page through its API (gradio_client) against an app served in the test: the main flow
gives run_one_image.py's alpha, and each bad input is a message while the app keeps serving."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from diffmatte.data.sources import bundled_lemur_dir
from diffmatte.data.trimaps import trimap_from_mask
from diffmatte.utils.image_io import read_gray, read_image, write_png_atomic

pytest.importorskip("gradio_client", reason="the app extra is not installed")
from gradio_client import Client, handle_file  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
LEMUR_IMAGE = bundled_lemur_dir() / "image" / "lemur.png"
LEMUR_TRIMAP = bundled_lemur_dir() / "trimap" / "lemur.png"

# Gradio's queue calls pandas in ways newer pandas warns about; not this project's concern.
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::Warning:gradio"),
]


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def _run(client, app_model, image=LEMUR_IMAGE, trimap=LEMUR_TRIMAP, source="upload", mask=None,
         config=None, checkpoint=None, strategy="ddim2", seed=8282, background=None):  # fmt: skip
    return client.predict(
        handle_file(str(image)), source, handle_file(str(trimap)) if trimap else None, None,
        handle_file(str(mask)) if mask else None, 12, 4, 0,
        app_model[1] if checkpoint is None else checkpoint, "",
        app_model[0] if config is None else config,
        "cpu", "fp32", 128, strategy, seed, "#2e7d32",
        handle_file(str(background)) if background else None, api_name="/run",
    )  # fmt: skip


def test_main_flow_equals_run_one_image(client, app_model, reference_alpha):
    status, alpha, checker, over, gallery, timings, files = _run(client, app_model)
    assert status == "Done: 680x440, ddim2, seed 8282.", status
    alpha_png, alpha_npy = reference_alpha
    names = {Path(path).name: path for path in files}
    assert sorted(names) == ["lemur_alpha.npy", "lemur_alpha.png", "lemur_rgba.png"]
    np.testing.assert_array_equal(np.load(names["lemur_alpha.npy"]), alpha_npy)
    np.testing.assert_array_equal(read_gray(names["lemur_alpha.png"]), alpha_png)
    np.testing.assert_array_equal(read_gray(alpha), alpha_png)  # the picture in the page
    rgba = cv2.imread(names["lemur_rgba.png"], cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(rgba[:, :, 3], alpha_png)
    np.testing.assert_array_equal(rgba[:, :, :3], cv2.imread(str(LEMUR_IMAGE)))  # both BGR
    assert read_image(checker).shape == read_image(over).shape == (440, 680, 3)
    assert [item["caption"] for item in gallery] == ["x̂0 after step 1/2", "x̂0 after step 2/2"]
    assert "predict" in timings and "load model" in timings


def test_trimap_from_mask_and_preview(client, app_model, tmp_path):
    image = read_image(LEMUR_IMAGE)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[80:400, 150:560] = 255
    mask_file = write_png_atomic(tmp_path / "mask.png", mask)
    overlay, info = client.predict(
        handle_file(str(LEMUR_IMAGE)), "mask", None, None, handle_file(str(mask_file)), 12, 4, 0,
        api_name="/preview",
    )  # fmt: skip
    expected = trimap_from_mask(mask, 12, 4)
    assert info.startswith("Trimap 680x440: foreground")
    assert f"unknown {np.mean(expected == 128):.1%}" in info
    assert read_image(overlay).shape == (440, 680, 3)
    status, *_ = _run(client, app_model, trimap=None, source="mask", mask=mask_file)
    assert status.startswith("Done"), status


@pytest.fixture
def bad_files(tmp_path):
    write_png_atomic(tmp_path / "small.png", np.full((40, 60), 128, np.uint8))
    write_png_atomic(tmp_path / "full.png", np.full((440, 680), 255, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    return tmp_path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("size", "upload trimap: size 60x40 does not match the image (680x440)"),
        ("unreadable_image", "image: "),
        ("unreadable_trimap", "trimap: "),
        ("no_unknown", "upload trimap: no unknown pixel"),
        ("other_config", "does not fit ViTS.py (a checkpoint of another config?)"),
        ("no_checkpoint", "no checkpoint chosen"),
        ("bad_strategy", "strategy: "),
        ("unreadable_background", "background image: "),
    ],
)
def test_bad_inputs_are_messages_and_the_app_keeps_serving(
    client, app_model, bad_files, case, message
):
    kwargs = {
        "size": {"trimap": bad_files / "small.png"},
        "unreadable_image": {"image": bad_files / "broken.png"},
        "unreadable_trimap": {"trimap": bad_files / "broken.png"},
        "no_unknown": {"trimap": bad_files / "full.png"},
        "other_config": {"config": str(REPO_ROOT / "configs" / "ViTS.py")},
        "no_checkpoint": {"checkpoint": ""},
        "bad_strategy": {"strategy": "euler3"},
        "unreadable_background": {"background": bad_files / "broken.png"},
    }[case]
    status, alpha, *_, files = _run(client, app_model, **kwargs)
    assert status.startswith("⚠ ") and message in status, status
    assert "\n" not in status and alpha is None and files is None
    if case == "unreadable_image":
        assert "not a readable image" in status
    assert _run(client, app_model, strategy="ddim1")[0].startswith("Done")


def test_page_says_plainly_when_no_checkpoint_is_found(tmp_path):
    from diffmatte.app.ui import build_app

    demo = build_app(tmp_path / "checkpoints", tmp_path)
    notes = [block for block in demo.blocks.values() if block.elem_id == "no-checkpoint"]
    assert len(notes) == 1 and "No trained checkpoint found" in notes[0].value
    with_checkpoint = tmp_path / "with"
    (with_checkpoint / "checkpoints").mkdir(parents=True)
    (with_checkpoint / "checkpoints" / "ViTS.pth").write_bytes(b"")
    demo = build_app(with_checkpoint / "checkpoints", with_checkpoint)
    assert not [block for block in demo.blocks.values() if block.elem_id == "no-checkpoint"]
