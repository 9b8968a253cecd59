"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven through selenium.

The browser runs with the network cut off twice over: a proxy that points at a closed
port, and every background service disabled. A page that asks for anything else shows it
in the DevTools network log (``requests()``), in ``performance`` resource entries and as a
failed load.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any, Optional

import pytest

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--proxy-server=127.0.0.1:9",
         "--proxy-bypass-list=<-loopback>", "--window-size=1280,1600", "--disable-dev-shm-usage"]


_BROWSER_UI = ("chrome://", "chrome-untrusted://", "devtools://", "about:")


def chromium_paths() -> tuple[Optional[str], Optional[str]]:
    """``(browser, driver)`` executables, or None for whichever is missing."""
    candidates = ("/usr/lib/chromium/chromium", shutil.which("chromium") or "")
    browser = next((p for p in candidates if p and os.access(p, os.X_OK)), None)
    return browser, shutil.which("chromedriver")


def require_browser() -> tuple[str, str]:
    """The executables. Skips the test only when chromium or chromedriver is missing and CI is
    not "true" (CI installs both); selenium is a dev dependency, so its absence is a failure."""
    browser, driver = chromium_paths()
    missing = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {', '.join(missing)} missing (.ci/run installs chromium and chromium-driver)")
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is missing: pip install -e '.[dev]'")
    assert browser and driver
    return browser, driver


class Browser:
    """One headless Chromium session with a private profile directory."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        browser, driver = require_browser()
        self.profile = tempfile.mkdtemp(prefix="report-chromium-")
        options = Options()
        options.binary_location = browser
        for flag in FLAGS + [f"--user-data-dir={self.profile}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        self.driver.set_page_load_timeout(60)

    def open(self, path: Path) -> None:
        """Load a local file and wait for the page's script to finish its first render."""
        from selenium.webdriver.support.ui import WebDriverWait

        self.logs("performance")  # drop what earlier pages logged
        self.logs("browser")
        self.driver.get(path.resolve().as_uri())
        WebDriverWait(self.driver, 30).until(
            lambda d: d.execute_script("return document.readyState") == "complete")

    def js(self, script: str, *args: Any) -> Any:
        """Run ``script`` in the page (``return ...`` gives its value)."""
        return self.driver.execute_script(script, *args)

    def logs(self, kind: str) -> list[dict[str, Any]]:
        """The browser's ``browser`` (console) or ``performance`` (DevTools) log since the last call."""
        return self.driver.get_log(kind)

    def network(self) -> dict[str, Optional[str]]:
        """``{url: blocked reason or None}`` of every request since the page was opened, but the page file.

        Requests of the browser's own UI (``chrome://`` pages loaded for the initial tab) are
        not the page's and are left out; any other URL, whoever asked for it, is listed, also
        when the browser blocked it before sending (reason ``csp``, ...).
        """
        page = self.driver.current_url.split("#")[0]
        urls: dict[str, str] = {}
        blocked: dict[str, str] = {}
        for entry in self.logs("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message.get("method") == "Network.requestWillBeSent":
                url = params["request"]["url"]
                document = str(params.get("documentURL") or "")
                if url.split("#")[0] != page and not document.startswith(_BROWSER_UI):
                    urls[params["requestId"]] = url
            elif message.get("method") == "Network.loadingFailed" and params.get("blockedReason"):
                blocked[params["requestId"]] = params["blockedReason"]
        return {url: blocked.get(rid) for rid, url in urls.items()}

    def requests(self) -> list[str]:
        """URLs the page asked for since it was opened (see :meth:`network`), blocked or not."""
        return list(self.network())

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page."""
        height = int(self.js("return Math.min(document.documentElement.scrollHeight, 6000)"))
        self.driver.set_window_size(1280, max(800, height))
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1280, 1600)
        return path

    def close(self) -> None:
        """End the browser and remove its profile."""
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def png_colours(path: Path, sample: int = 20000) -> int:
    """How many distinct RGB(A) pixel values a PNG has (sampled), decoding it with zlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, ctype = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    channels = {2: 3, 6: 4}[ctype]
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    colours: set[bytes] = set()
    step = max(1, height // 200)
    for y in range(height):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        ftype, cur = line[0], bytearray(line[1:])
        for i in range(stride):  # undo the PNG row filter
            a = cur[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 1:
                cur[i] = (cur[i] + a) & 255
            elif ftype == 2:
                cur[i] = (cur[i] + b) & 255
            elif ftype == 3:
                cur[i] = (cur[i] + ((a + b) >> 1)) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if y % step == 0:
            for x in range(0, width, max(1, width // 100)):
                colours.add(bytes(cur[x * channels:(x + 1) * channels]))
                if len(colours) >= sample:
                    return len(colours)
        prev = cur
    return len(colours)
