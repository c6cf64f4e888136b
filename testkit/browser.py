"""Headless Chromium for the dashboard's browser tests and the README's screenshots.

Debian's ``chromium`` and its matching ``chromium-driver`` (``make setup`` installs both), driven
through Selenium's WebDriver. Pages are read the way a person reads them: the text the browser
renders, waited for with WebDriverWait until an expected phrase appears, never after a fixed
pause. Streamlit renders metrics and messages as text; its data grids draw on a canvas, so the
tests read numbers from metrics.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_ENV = "CHROMIUM_BIN"
CHROMEDRIVER_ENV = "CHROMEDRIVER_BIN"
WINDOW = (1400, 2400)
TABLE_ROWS_JS = """
return Array.from(document.querySelectorAll('[data-testid="stTable"] tbody tr')).map(
  (tr) => Array.from(tr.querySelectorAll("th, td")).map((c) => c.innerText.trim()));
"""
# Streamlit's placeholder for an element whose code or data is still loading.
LOADING = '[data-testid="stSkeleton"]'


class BrowserMissing(RuntimeError):
    """Chromium or its driver is not installed."""


def _binary(env: str, *names: str) -> str:
    explicit = os.environ.get(env, "").strip()
    if explicit:
        return explicit
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserMissing(
        f"none of {', '.join(names)} on PATH (set {env}); `make setup` installs Debian's "
        "chromium and chromium-driver"
    )


@contextmanager
def chromium(window: tuple[int, int] = WINDOW) -> Iterator[Any]:
    """A headless Chromium WebDriver for the block."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary(CHROMIUM_ENV, "chromium", "chromium-browser", "google-chrome")
    for arg in (
        "--headless=new",
        # As root (CI, containers) Chromium refuses its sandbox.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={window[0]},{window[1]}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=_binary(CHROMEDRIVER_ENV, "chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def page_text(driver: Any) -> str:
    """The text the page shows."""
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.TAG_NAME, "body").text)


def open_until(driver: Any, url: str, phrases: tuple[str, ...], timeout_s: float = 60) -> str:
    """Open ``url`` and return the page's text once every one of ``phrases`` shows."""
    driver.get(url)
    return wait_text(driver, phrases, timeout_s)


def wait_text(driver: Any, phrases: tuple[str, ...], timeout_s: float = 60) -> str:
    """The page's text once every one of ``phrases`` shows; AssertionError with what the page
    showed if they do not within ``timeout_s``."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    text = ""

    def shown(d: Any) -> bool:
        nonlocal text
        text = page_text(d)
        # Charts and tables load their code on first use and show a skeleton meanwhile.
        loading = d.find_elements(By.CSS_SELECTOR, LOADING)
        return not loading and all(p in text for p in phrases)

    try:
        WebDriverWait(driver, timeout_s, poll_frequency=0.25).until(shown)
    except TimeoutException:
        missing = [p for p in phrases if p not in text]
        raise AssertionError(
            f"{driver.current_url}: {missing} not shown within {timeout_s:.0f} s; the page "
            f"showed:\n{text[:3000]}"
        ) from None
    return text


def table_rows(driver: Any) -> list[tuple[str, ...]]:
    """Every row of every static table on the page (``st.table``): its cells' text, the row's
    header cell (the index) first."""
    # One script, so a refresh that re-renders the page cannot land between two reads.
    rows = driver.execute_script(TABLE_ROWS_JS)
    return [tuple(str(cell) for cell in row) for row in rows]


def metric(text: str, label: str) -> str:
    """The value shown under a Streamlit metric's ``label`` (the line after it)."""
    lines = [line.strip() for line in text.splitlines()]
    try:
        return lines[lines.index(label) + 1]
    except (ValueError, IndexError):
        raise AssertionError(f"no metric {label!r} on the page:\n{text[:3000]}") from None


def screenshot(driver: Any, path: Path) -> Path:
    """The page as a PNG at ``path`` (its folder created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path
