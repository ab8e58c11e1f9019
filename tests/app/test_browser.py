"""The page in a real headless Chromium, used as a person would: upload the lemur and its
trimap, run ddim2, download the alpha and compare it with run_one_image.py; paint a stroke;
generate a trimap from a mask (starting from the page's lemur example).

Set DIFFMATTE_APP_SCREENSHOT=<png> to save a screenshot of the page with the result (the
README's is made with a trained checkpoint: DIFFMATTE_APP_CONFIG / DIFFMATTE_APP_CHECKPOINT).
"""

import os
import time
from pathlib import Path

import numpy as np
import pytest

from diffmatte.data.sources import bundled_lemur_dir
from diffmatte.data.trimaps import trimap_from_mask
from diffmatte.utils.image_io import read_gray, write_png_atomic

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e .[app])")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::Warning:gradio"),  # pandas deprecations in its queue
]

LEMUR_IMAGE = bundled_lemur_dir() / "image" / "lemur.png"
LEMUR_TRIMAP = bundled_lemur_dir() / "trimap" / "lemur.png"
TIMEOUT = 120


def _text(driver, selector: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, selector).text


def _wait_text(driver, selector: str, predicate) -> str:
    WebDriverWait(driver, TIMEOUT).until(lambda d: predicate(_text(d, selector)))
    return _text(driver, selector)


def _type_into(driver, selector: str, value: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, selector)
    field.click()
    field.send_keys(Keys.CONTROL + "a")
    field.send_keys(value)
    field.send_keys(Keys.ENTER)


def _upload(driver, element_id: str, path: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{element_id} input[type=file]").send_keys(str(path))


def _choose_source(driver, label: str) -> None:
    driver.find_element(By.XPATH, f"//label[contains(., '{label}')]").click()


def _paint_stroke(driver, attempts: int = 3) -> str:
    """Draws one stroke across the editor's canvas; returns the trimap line it leads to.

    The canvas takes the image a moment after it appears, and a stroke drawn before that is
    lost, so a stroke that changes nothing within 15 s is drawn again.
    """
    selector = "#paint-editor .pixi-target canvas"
    WebDriverWait(driver, TIMEOUT).until(lambda d: d.find_elements(By.CSS_SELECTOR, selector))
    for attempt in range(attempts):
        canvas = driver.find_element(By.CSS_SELECTOR, selector)
        # The brush is the editor's first tool and white (foreground) its first colour.
        stroke = ActionChains(driver).move_to_element_with_offset(canvas, -60, 0).click_and_hold()
        stroke.move_by_offset(40, 5).move_by_offset(40, 0).release().perform()
        try:
            WebDriverWait(driver, 15).until(lambda d: _text(d, "#trimap-info").startswith("Trimap"))
            return _text(driver, "#trimap-info")
        except TimeoutException:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _download(driver, name: str) -> Path:
    link = driver.find_element(By.CSS_SELECTOR, f"#downloads a[download='{name}']")
    driver.execute_script("arguments[0].click();", link)
    target = driver.download_dir / name
    WebDriverWait(driver, TIMEOUT).until(lambda _: target.is_file())
    return target


def _full_page_screenshot(driver, path: str) -> None:
    """The whole page from its top, 1400 CSS pixels wide."""
    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]["height"]
    metrics = {"width": 1400, "height": int(height), "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    time.sleep(1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(path)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_upload_run_download_equals_run_one_image(chromium, app_url, app_model, reference_alpha):
    chromium.get(app_url)
    WebDriverWait(chromium, TIMEOUT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#run"))
    _upload(chromium, "image-file", LEMUR_IMAGE)
    _upload(chromium, "trimap-file", LEMUR_TRIMAP)
    info = _wait_text(chromium, "#trimap-info", lambda text: text.startswith("Trimap"))
    assert info.startswith("Trimap 680x440: foreground"), info
    if not chromium.find_element(By.CSS_SELECTOR, "#config input").get_attribute("value"):
        _type_into(chromium, "#config input", str(Path(app_model[0]).resolve()))
    _type_into(chromium, "#strategy input", "ddim2")
    chromium.find_element(By.CSS_SELECTOR, "#run").click()
    status = _wait_text(chromium, "#status", lambda text: text.startswith(("Done", "⚠")))
    assert status == "Done: 680x440, ddim2, seed 8282.", status
    alpha_png, alpha_npy = reference_alpha
    np.testing.assert_array_equal(read_gray(_download(chromium, "lemur_alpha.png")), alpha_png)
    np.testing.assert_array_equal(np.load(_download(chromium, "lemur_alpha.npy")), alpha_npy)
    assert "predict" in _text(chromium, "#timings")
    if os.environ.get("DIFFMATTE_APP_SCREENSHOT"):
        _full_page_screenshot(chromium, os.environ["DIFFMATTE_APP_SCREENSHOT"])


def test_paint_a_stroke_then_generate_from_a_mask(chromium, app_url, tmp_path):
    chromium.get(app_url)
    WebDriverWait(chromium, TIMEOUT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#run"))
    # The bundled example loads the lemur and its trimap in one click.
    chromium.find_element(By.CSS_SELECTOR, "#lemur-example tr.tr-body").click()
    _wait_text(chromium, "#trimap-info", lambda text: text.startswith("Trimap 680x440"))
    _choose_source(chromium, "Paint over the image")
    _wait_text(chromium, "#trimap-info", lambda text: "paint foreground" in text)
    info = _paint_stroke(chromium)
    foreground = float(info.split("foreground ")[1].split("%")[0])
    assert 0.1 < foreground < 10 and "background 0.0%" in info, info

    mask = np.zeros((440, 680), np.uint8)
    mask[80:400, 150:560] = 255
    mask_file = write_png_atomic(tmp_path / "mask.png", mask)
    _choose_source(chromium, "Generate from a rough mask")
    WebDriverWait(chromium, TIMEOUT).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#mask-file input[type=file]")
    )
    _upload(chromium, "mask-file", mask_file)
    expected = trimap_from_mask(mask, 10, 10)  # the sliders' defaults
    line = f"unknown {np.mean(expected == 128):.1%}, background {np.mean(expected == 0):.1%}"
    info = _wait_text(chromium, "#trimap-info", lambda text: line in text)
    assert info.startswith("Trimap 680x440"), info
