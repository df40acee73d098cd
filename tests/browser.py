"""A headless Chromium for the page tests (Selenium with Debian's chromium-driver), and what a person
would check on a page: what is visible, what the console said, where requests went.

The browser never reaches the network: host names resolve nowhere and a dead proxy catches the rest, and
the tests also assert, from the DevTools performance log, that every request the page made stayed on this
machine (``file:`` or ``data:``). Selenium Manager is never asked to download a driver: the driver is the
``chromedriver`` on PATH, or the tests skip saying what to install."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome-error:")
INSTALL = "apt-get install -y chromium chromium-driver (.ci/run does it)"


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _skip(reason: str) -> None:
    """Skip, or fail where a browser must be there (``ZOO_REQUIRE_BROWSER=1``, set by .ci/run)."""
    if os.environ.get("ZOO_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ZOO_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def start_browser() -> Any:
    """A headless Chromium driven by Selenium, or a skip naming what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _skip("browser tests need the selenium package (pip install -e '.[dev]')")
    driver_path, binary = shutil.which("chromedriver"), chromium_binary()
    if not driver_path or not binary:
        _skip(f"browser tests need Chromium and its driver; install them: {INSTALL}")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=http://127.0.0.1:9", "--allow-file-access-from-files",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        return webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    except Exception as exc:  # noqa: BLE001 - a browser that cannot start is a skip with its reason
        _skip(f"Chromium could not start ({type(exc).__name__}: {str(exc).splitlines()[0]})")


def open_page(driver: Any, path: Path) -> None:
    driver.get_log("browser")  # forget what earlier pages logged
    driver.get_log("performance")
    driver.get(path.resolve().as_uri())


def console_problems(driver: Any) -> list[str]:
    """Console messages at warning level or above (errors, CSP violations, failed loads)."""
    return [f"{m['level']}: {m['message']}" for m in driver.get_log("browser") if m["level"] in ("SEVERE", "WARNING")]


def remote_requests(driver: Any) -> list[str]:
    """URLs the page asked for that are not on this machine (anything but file:, data:, …)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return [u for u in urls if not u.startswith(LOCAL_SCHEMES)]
