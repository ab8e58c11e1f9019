"""App test fixtures: a tiny checkpoint, the page served in this process, the reference alpha
of ``run_one_image.py``."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffmatte.data.sources import bundled_lemur_dir
from diffmatte.engine.checkpoint import save_model_weights

REPO_ROOT = Path(__file__).resolve().parents[2]
LEMUR_IMAGE = bundled_lemur_dir() / "image" / "lemur.png"
LEMUR_TRIMAP = bundled_lemur_dir() / "trimap" / "lemur.png"
STRATEGY, SEED = "ddim2", 8282


@pytest.fixture(scope="session")
def app_model(tmp_path_factory, tiny_config, build_tiny_model):
    """(config, checkpoint) the app tests run: the tiny config with random weights saved to a
    file, or the pair named by DIFFMATTE_APP_CONFIG / DIFFMATTE_APP_CHECKPOINT (for a
    screenshot with a trained model)."""
    config = os.environ.get("DIFFMATTE_APP_CONFIG")
    checkpoint = os.environ.get("DIFFMATTE_APP_CHECKPOINT")
    if config and checkpoint:
        return str(config), str(checkpoint)
    folder = tmp_path_factory.mktemp("checkpoints")
    return str(tiny_config), str(save_model_weights(build_tiny_model(0), folder / "tiny.pth"))


@pytest.fixture(scope="session")
def reference_alpha(app_model, tmp_path_factory):
    """``run_one_image.py`` on the lemur (ddim2, seed 8282): (alpha PNG as uint8, float .npy)."""
    out = tmp_path_factory.mktemp("reference")
    config, checkpoint = app_model
    command = [
        sys.executable, str(REPO_ROOT / "run_one_image.py"),
        "--config-file", config, "--checkpoint", checkpoint,
        "--image", str(LEMUR_IMAGE), "--trimap", str(LEMUR_TRIMAP),
        "--output-dir", str(out / "alpha.png"), "--output-npy", str(out / "alpha.npy"),
        "--sample-strategy", STRATEGY, "--seed", str(SEED), "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    from diffmatte.utils.image_io import read_gray

    return read_gray(out / "alpha.png"), np.load(out / "alpha.npy")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def app_url(tmp_path_factory, app_model):
    """The page served on 127.0.0.1 from this process, its checkpoints folder holding the
    app model's checkpoint; closed at the end of the session."""
    pytest.importorskip("gradio", reason="the app extra is not installed (pip install -e .[app])")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from diffmatte.app.ui import launch

    checkpoints = tmp_path_factory.mktemp("app") / "checkpoints"
    checkpoints.mkdir()
    os.symlink(app_model[1], checkpoints / Path(app_model[1]).name)
    demo = launch("127.0.0.1", _free_port(), checkpoints, block=False, root=REPO_ROOT)
    yield demo.local_url.rstrip("/")
    demo.close()


CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1800",
)  # fmt: skip


def _chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) from the Debian packages ``chromium`` and ``chromium-driver``."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else None
    )
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """A headless Chromium driven by Selenium, downloading into ``chromium.download_dir``.

    Nothing is downloaded at run time: the browser and its driver are the system's (Debian's
    ``chromium`` and ``chromium-driver``), given to Selenium by path, and Selenium's driver
    manager is kept offline.
    """
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e .[app])")
    paths = _chromium_paths()
    if paths is None:
        pytest.skip("chromium / chromedriver not found (apt-get install chromium chromium-driver)")
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}")
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            # Several downloads from one page are allowed without asking.
            "profile.default_content_setting_values.automatic_downloads": 1,
        },
    )
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)
    driver.download_dir = downloads
    yield driver
    driver.quit()
