"""Headless Chromium for browser tests: Debian's ``chromium`` and ``chromium-driver`` driven by Selenium.

Nothing is downloaded: the driver is the system's ``chromedriver`` given to Selenium through
``Service(executable_path=...)`` and the browser the system's ``chromium`` (so Selenium Manager has
nothing to look up). `scripts/bootstrap.sh` installs both when run as root; without them (or without
the ``selenium`` package) the browser tests skip and say how to get them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

INSTALL_HINT = "install Debian's chromium and chromium-driver (scripts/bootstrap.sh does as root: apt-get install chromium chromium-driver)"


def _find(name: str, *fallbacks: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return next((p for p in fallbacks if os.access(p, os.X_OK)), None)


def chromium_paths() -> tuple[str, str]:
    """(browser, driver), or skip the test with the reason."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]'; scripts/bootstrap.sh does it)")
    browser = _find("chromium", "/usr/bin/chromium", "/usr/lib/chromium/chromium")
    driver = _find("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
    if browser is None or driver is None:
        pytest.skip(f"no headless browser: {INSTALL_HINT}")
    return browser, driver


def start_chromium(*, width: int = 1366, height: int = 1000) -> Any:
    """A headless Chromium session (the caller quits it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--disable-extensions", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--lang=en-US"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def screenshot_dir(default: Path) -> Path:
    """Where browser tests keep their screenshots: ``PARLEY_SCREENSHOT_DIR`` or ``default``."""
    folder = Path(os.environ.get("PARLEY_SCREENSHOT_DIR") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Waits:
    """A page's elements, each waited for (bounds for a loaded machine, never a measurement):
    ``find`` a visible one, its ``text`` (read again if a refresh replaced it), ``click`` it."""

    def __init__(self, driver: Any, timeout: float = 60.0) -> None:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.wait = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def text(self, css: str) -> str:
        from selenium.webdriver.common.by import By

        return str(self.wait.until(lambda d: next(
            (e.text for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), None)))

    def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        self.wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, css)))
        self.wait.until(lambda d: d.find_element(By.CSS_SELECTOR, css).click() or True)
