"""A real browser for page tests: Debian's headless Chromium driven by its chromedriver
through Selenium, both found on PATH (tests/support/bootstrap.sh installs them), so
Selenium Manager never looks for a driver on the network."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

# Where screenshots go when set (CI keeps that folder); otherwise the test's tmp_path.
ARTIFACTS_ENV = "WATTFLEET_TEST_ARTIFACTS"


def artifact_dir(tmp_path: Path) -> Path:
    base = os.environ.get(ARTIFACTS_ENV)
    folder = Path(base) if base else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def chromium(width: int = 412, height: int = 915) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a phone-sized window. Fails (never skips) when the browser
    or its driver is missing: CI installs both."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail(
            "chromium and chromedriver are needed for the status page test: "
            "run tests/support/bootstrap.sh (apt-get install chromium chromium-driver)"
        )
    options = Options()
    options.binary_location = browser
    options.add_argument("--headless=new")
    options.add_argument("--no-sandbox")  # root in a container has no user namespaces
    options.add_argument("--disable-dev-shm-usage")
    options.add_argument(f"--window-size={width},{height}")
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def save_full_page(browser: webdriver.Chrome, path: Path) -> Path:
    """A screenshot of the whole page, not just the window, at the window's width."""
    width, height = browser.execute_script(
        "return [document.documentElement.clientWidth, document.documentElement.scrollHeight]"
    )
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        browser.save_screenshot(str(path))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path
