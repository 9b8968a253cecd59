"""The browser tests skip only where chromium is missing outside CI; with CI=true they must run."""

from __future__ import annotations

import pytest

import report_browser as browser


def test_missing_chromium_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "chromium_paths", lambda: (None, None))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        browser.require_browser()


def test_missing_chromium_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "chromium_paths", lambda: ("/usr/bin/chromium", None))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromedriver"):
        browser.require_browser()
