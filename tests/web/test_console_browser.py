"""The operator console used as a person would, in a real browser: Debian's chromium driven by Selenium through
chromium-driver (scripts/browser-setup installs both), against the app served by uvicorn on a spare port with the
built-in NHS simulator behind it.

The operator logs in with the token, an EHR runs ITI-55 → ITI-38 → ITI-39, the operator opens the ITI-38 row
of the audit trail, the whole exchange, then the document (its rendering beside its conversion report), and the
same pages are checked at a phone's width. The document view's screenshot is taken every time; with
XHUMA_UPDATE_SCREENSHOTS=1 it replaces docs/console-document.png (the switch, as for golden files).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from tests.support.exchange import Exchange, full_exchange
from tests.support.servers import serve

from xhuma.app import create_app

TOKEN = "browser-" + "b" * 40
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console-document.png"
PHONE_WIDTH = 390
OUTCOME_ORDER = {"not mapped": 0, "narrative only": 1, "coded entry": 2, "supporting": 3, "warning": 4}


def chromium_options(profile: Path) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    return options


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    driver_path = shutil.which("chromedriver")
    assert driver_path and shutil.which("chromium"), "run scripts/browser-setup (Debian chromium, chromium-driver)"
    profile = tmp_path / "chromium-profile"  # a fresh profile: no state from any earlier run
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=chromium_options(profile))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, test: Any, timeout: float = 20.0) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(test)


def visible(driver: WebDriver, element_id: str) -> WebElement:
    return wait_for(driver, lambda d: (lambda e: e if e.is_displayed() else None)(d.find_element(By.ID, element_id)))


def run_exchange(port: int) -> Exchange:
    async def run() -> Exchange:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            return await full_exchange(client)

    return asyncio.run(run())


def searched(driver: WebDriver, unique_id: str) -> bool:
    """The audit table shows the search's answer: rows, each of this document, one of them ITI-38."""
    try:
        texts = [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#audit tbody tr")]
    except StaleElementReferenceException:  # redrawn while read
        return False
    return bool(texts) and all(unique_id in text for text in texts) and any("ITI-38" in text for text in texts)


def overflowing(driver: WebDriver) -> list[str]:
    """The shown elements that reach beyond the viewport's right edge (the page would scroll sideways)."""
    return list(driver.execute_script("""
        const width = document.documentElement.clientWidth;
        return Array.from(document.querySelectorAll("body *"))
          .filter((e) => e.offsetParent !== null && e.getBoundingClientRect().right > width + 1
                         && !e.closest(".table-scroll, .document-frame"))
          .slice(0, 10).map((e) => e.tagName + "#" + e.id + "." + e.className);
    """)) + ([] if driver.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1") else ["page"])


def test_operator_logs_in_opens_the_exchange_and_the_document_beside_its_report_and_it_fits_a_phone(
    make_settings: Any, browser: WebDriver, tmp_path: Path,
) -> None:
    screenshot = SCREENSHOT if os.environ.get("XHUMA_UPDATE_SCREENSHOTS") == "1" else tmp_path / SCREENSHOT.name
    app = create_app(make_settings(admin_tokens=[TOKEN]))
    with serve(app) as port:
        exchange = run_exchange(port)
        browser.get(f"http://127.0.0.1:{port}/console")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        visible(browser, "main")
        assert "Connected" in browser.find_element(By.ID, "message").text

        # The audit trail, searched by the document's id in the form, then the ITI-38 row opened.
        browser.find_element(By.ID, "f-document").send_keys(exchange.unique_id)
        browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
        wait_for(browser, lambda d: searched(d, exchange.unique_id))
        [row] = [row for row in browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr") if "ITI-38" in row.text]
        row.click()
        visible(browser, "event-card")
        fields = browser.find_element(By.ID, "event").text
        for field in ("request_id", "duration_ms", "message_id", "document_unique_id", "ssp_to"):
            assert field in fields
        assert exchange.message_ids["ITI-38"] in fields

        # The whole exchange: the ITI-38 request with the SDS and GP Connect calls it made.
        browser.find_element(By.ID, "open-exchange").click()
        visible(browser, "exchange-card")
        grouped = wait_for(browser, lambda d: d.find_element(By.ID, "exchange").text or None)
        assert "Request " in grouped and "GPC" in grouped and "SDS" in grouped and "ITI-38" in grouped

        # The document: its rendering beside its conversion report, what was not mapped or narrative only first.
        browser.find_element(By.ID, "open-document").click()
        visible(browser, "document-card")
        rendered = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#document-rendered article.cda")
                            or None)[0]
        assert "SKELLY" in rendered.text and "Allergies" in rendered.text
        outcomes = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#report tbody tr td:first-child")]
        assert outcomes and set(outcomes) <= set(OUTCOME_ORDER)
        assert outcomes == sorted(outcomes, key=OUTCOME_ORDER.__getitem__)
        assert "Not mapped" in browser.find_element(By.ID, "report-summary").text
        left, right = (element.rect for element in browser.find_elements(By.CSS_SELECTOR, ".side-by-side > div"))
        assert right["x"] > left["x"] + left["width"] - 1  # side by side on a wide screen
        # No script came with the document, and the page kept its own policy.
        assert not browser.find_elements(By.CSS_SELECTOR, "#document-rendered script")
        browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "document-card"))
        screenshot.write_bytes(browser.find_element(By.ID, "document-card").screenshot_as_png)

        # A phone: no sideways scrolling of the page, the key parts still shown, the two panes stacked.
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": PHONE_WIDTH, "height": 844, "deviceScaleFactor": 2, "mobile": True})
        wait_for(browser, lambda d: d.execute_script("return document.documentElement.clientWidth") == PHONE_WIDTH)
        assert overflowing(browser) == []
        for element_id in ("status-card", "filters", "audit", "event-card", "exchange-card", "document-card",
                           "upstreams"):
            element = browser.find_element(By.ID, element_id)
            assert element.is_displayed(), element_id
            assert 0 <= element.rect["x"] < PHONE_WIDTH / 2, element_id  # starts on screen (wide tables scroll)
        left, right = (element.rect for element in browser.find_elements(By.CSS_SELECTOR, ".side-by-side > div"))
        assert right["y"] >= left["y"] + left["height"] - 1  # stacked
        assert browser.find_element(By.ID, "document-card").size["width"] <= PHONE_WIDTH

    assert screenshot.stat().st_size > 10_000


def test_upstream_health_shows_in_the_console_after_an_exchange(make_settings: Any, browser: WebDriver) -> None:
    app = create_app(make_settings(admin_tokens=[TOKEN]))
    with serve(app) as port:
        run_exchange(port)
        browser.get(f"http://127.0.0.1:{port}/console")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        visible(browser, "main")
        table = wait_for(browser, lambda d: (lambda t: t if "gpconnect" in t else None)(
            d.find_element(By.ID, "upstreams").text))
    for service in ("pds", "sds", "gpconnect"):
        assert service in table
    assert "closed" in table
