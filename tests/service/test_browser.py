"""The web page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Signs in with the API key, uploads the example model and data through the file inputs, runs a
compare, watches it finish, opens the HTML report and checks its table and plots; then checks the
page at 375 px width and keyboard focus.  No browser is downloaded: the system's Chromium and
chromedriver are used (``.ci/run`` installs them when missing).  Outside CI, a machine without
them skips this test; in CI (CI=true) that is a failure.  With EDGEQUANT_SCREENSHOT=path the page
is also saved there (docs/service-ui.png in the README comes from this).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import Server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)

if not (CHROMIUM and DRIVER):
    if os.environ.get("CI"):
        raise RuntimeError(
            "CI needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
    pytest.skip("chromium / chromedriver are not installed (.ci/run installs them)", allow_module_level=True)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(DRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_compare_from_the_web_page(browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser  # selenium.webdriver.Chrome
    srv = Server(tmp_path / "store", "--workers", "1", "--api-key", "browser-key").start()
    try:
        wait = WebDriverWait(d, 60)
        d.get(srv.url + "/")  # type: ignore[attr-defined]
        assert d.current_url.endswith("/login")  # type: ignore[attr-defined]
        d.find_element(By.ID, "api_key").send_keys("browser-key", Keys.ENTER)  # type: ignore[attr-defined]
        wait.until(ec.presence_of_element_located((By.ID, "upload-model")))
        cookie = d.get_cookie("eq_session")  # type: ignore[attr-defined]
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"

        d.find_element(By.ID, "model-file").send_keys(str(EXAMPLES / "shapes_cnn.onnx"))  # type: ignore[attr-defined]
        d.find_element(By.ID, "model-upload").click()  # type: ignore[attr-defined]
        wait.until(ec.text_to_be_present_in_element((By.ID, "models"), "shapes_cnn"))
        d.find_element(By.ID, "dataset-file").send_keys(str(EXAMPLES / "shapes_eval.npz"))  # type: ignore[attr-defined]
        d.find_element(By.ID, "dataset-upload").click()  # type: ignore[attr-defined]
        wait.until(ec.text_to_be_present_in_element((By.ID, "datasets"), "shapes_eval"))

        Select(d.find_element(By.ID, "run-model")).select_by_value("shapes_cnn")  # type: ignore[attr-defined]
        Select(d.find_element(By.ID, "run-dataset")).select_by_value("shapes_eval")  # type: ignore[attr-defined]
        Select(d.find_element(By.ID, "run-kind")).select_by_value("compare")  # type: ignore[attr-defined]
        d.find_element(By.ID, "run-methods").send_keys("float,fp16,dynamic-int8,int8-static")  # type: ignore[attr-defined]
        d.find_element(By.ID, "run-drop").send_keys("1")  # type: ignore[attr-defined]
        d.find_element(By.ID, "run-start").click()  # type: ignore[attr-defined]
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#jobs tr[data-job]")))
        row = d.find_element(By.CSS_SELECTOR, "#jobs tr[data-job]")  # type: ignore[attr-defined]
        assert row.get_attribute("data-status") in ("queued", "running", "succeeded")
        assert row.find_element(By.TAG_NAME, "progress") is not None
        WebDriverWait(d, 600).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#jobs a.report")))
        row = d.find_element(By.CSS_SELECTOR, "#jobs tr[data-job]")  # type: ignore[attr-defined]
        assert row.get_attribute("data-status") == "succeeded", row.text
        assert "recommended:" in row.text
        links = [a.get_attribute("href") for a in row.find_elements(By.CSS_SELECTOR, "ul.files a")]
        assert any(h.endswith("/report.html") for h in links) and any(h.endswith("_int8.onnx") for h in links)
        if os.environ.get("EDGEQUANT_SCREENSHOT"):
            d.set_window_size(1100, 1900)  # type: ignore[attr-defined]
            d.save_screenshot(os.environ["EDGEQUANT_SCREENSHOT"])  # type: ignore[attr-defined]

        report = row.find_element(By.CSS_SELECTOR, "a.report").get_attribute("href")
        d.get(report)  # type: ignore[attr-defined]
        assert "EdgeQuant comparison" in d.title  # type: ignore[attr-defined]
        methods = [r.text for r in d.find_elements(By.CSS_SELECTOR, "table tr td:first-child")]  # type: ignore[attr-defined]
        for method in ("float", "fp16", "dynamic-int8", "int8-static"):
            assert any(m.startswith(method) for m in methods), methods
        plots = d.find_elements(By.CSS_SELECTOR, "svg")  # type: ignore[attr-defined]
        assert len(plots) >= 2 and all(p.size["width"] > 100 for p in plots[:2])
        assert len(d.find_elements(By.CSS_SELECTOR, "svg circle")) >= 4  # type: ignore[attr-defined]

        d.set_window_size(375, 812)  # type: ignore[attr-defined]
        d.get(srv.url + "/")  # type: ignore[attr-defined]
        width = d.execute_script("return document.documentElement.scrollWidth")  # type: ignore[attr-defined]
        inner = d.execute_script("return window.innerWidth")  # type: ignore[attr-defined]
        assert width <= inner, (width, inner)  # nothing wider than the phone screen
        from selenium.webdriver.common.action_chains import ActionChains

        d.find_element(By.TAG_NAME, "h1").click()  # type: ignore[attr-defined]
        focused = []
        for _ in range(4):  # Tab moves through the controls in order
            ActionChains(d).send_keys(Keys.TAB).perform()  # type: ignore[arg-type]
            active = d.switch_to.active_element  # type: ignore[attr-defined]
            focused.append(active.get_attribute("id") or active.tag_name)
        assert len(set(focused)) == 4 and "model-file" in focused, focused
        for field in d.find_elements(By.CSS_SELECTOR, "main input:not([type=hidden]), main select"):  # type: ignore[attr-defined]
            fid = field.get_attribute("id")
            assert d.find_elements(By.CSS_SELECTOR, f'label[for="{fid}"]') or field.find_elements(  # type: ignore[attr-defined]
                By.XPATH, "ancestor::label"
            ), fid
    finally:
        srv.stop()
