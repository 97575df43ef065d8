"""Headless Debian Chromium for browser tests, and small helpers for servers started by tests."""

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Where screenshots are also copied when set (e.g. for a closing note); tests always keep one in tmp_path.
SCREENSHOT_DIR_ENV = "MADEF_SCREENSHOT_DIR"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answering(url: str, server: subprocess.Popen, log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, f"server exited early:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"server did not answer within {timeout_s}s:\n{log.read_text()[-3000:]}")


def headless_chromium(profile_dir: Path):
    """Debian's Chromium and chromedriver by explicit path, so Selenium Manager never downloads anything;
    skips the test when either (or selenium) is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[test]')")
    from selenium.webdriver.chrome.service import Service

    for required in (CHROMIUM, CHROMEDRIVER):
        if not required.exists():
            pytest.skip(
                f"{required} is missing (scripts/install_test_tools.sh: apt-get install chromium chromium-driver)"
            )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile_dir}",
        "--window-size=1600,1200",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def save_screenshot(driver, path: Path) -> bytes:
    """A PNG of the page in tmp_path, copied to $MADEF_SCREENSHOT_DIR when that is set."""
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    if os.environ.get(SCREENSHOT_DIR_ENV):
        target = Path(os.environ[SCREENSHOT_DIR_ENV])
        target.mkdir(parents=True, exist_ok=True)
        (target / path.name).write_bytes(data)
    return data
