"""The manager's page in headless Chromium: what the browser displays is the
API answers page_stack.MEANINGS pins, under the pinned labels, the charts are
drawn, the page refreshes itself in place, and a screenshot is kept as
``test-artifacts/manager-page.png``.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make browser`` installs
them); without them the test is skipped, saying so. Selenium's calls block,
so each runs in a thread while the services keep serving in the test's loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

from tests.conftest import ROOT, Stack
from tests.metrics.page_stack import (
    GOOGLE,
    PARTNERS,
    WEB,
    Answers,
    PageStack,
    Shown,
    mismatches,
    page_stack,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = ROOT / "test-artifacts" / "manager-page.png"
#: Without the background-networking flags Chromium keeps trying to reach
#: Google's services, which a closed network turns into stalls.
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
    "--window-size=1400,1000",
)
#: Every figure element as the browser has it after the page's script ran,
#: with the headings it is displayed under: its tile's label, or its table
#: cell's row heading ("" for none) and column heading.
READ_FIGURES = """
function headings(element) {
  const tile = element.closest(".tile");
  if (tile) return [tile.querySelector(".label").innerText];
  const cell = element.closest("td, th");
  if (!cell) return [];
  const row = cell.parentElement.querySelector("th[scope=row]");
  const column = cell.closest("table").tHead.rows[0].cells[cell.cellIndex];
  return [row ? row.innerText : "", column.innerText];
}
return Array.from(document.querySelectorAll("[data-figure]")).map(element => ({
  attributes: Object.fromEntries(
    element.getAttributeNames().map(name => [name, element.getAttribute(name)])),
  text: element.innerText,
  headings: headings(element),
}));
"""

_MISSING = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
# Decided at collection, so a machine without Chromium starts no stack for it.
pytestmark = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"Chromium is not installed ({' and '.join(_MISSING)} missing): run "
    "`make browser` (apt-get install chromium chromium-driver, as root)",
)

Result = TypeVar("Result")


async def run(call: Callable[..., Result], *args: Any) -> Result:
    return await asyncio.to_thread(call, *args)


@pytest.fixture(scope="module")
async def page(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PageStack]:
    async with page_stack(stack, tmp_path_factory.mktemp("page")) as built:
        yield built


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(str(CHROMEDRIVER), log_output=str(tmp_path / "driver.log"))
    driver = await run(lambda: webdriver.Chrome(options=options, service=service))
    try:
        yield driver
    finally:
        await run(driver.quit)


async def displayed(driver: webdriver.Chrome) -> dict[str, Shown]:
    elements = await run(driver.execute_script, READ_FIGURES)
    shown = {}
    for element in elements:
        attributes = element["attributes"]
        shown[attributes["data-figure"]] = Shown(
            attributes["data-figure"],
            attributes,
            element["text"],
            tuple(element["headings"]),
        )
    return shown


async def until(driver: webdriver.Chrome, script: str, what: str) -> None:
    """Waits (10 s at most) for ``script`` to return true in the page."""
    wait = WebDriverWait(driver, 10, poll_frequency=0.1)
    await run(wait.until, lambda d: d.execute_script(script), what)


async def agree_with_the_api(driver: webdriver.Chrome, page: PageStack) -> None:
    """Every figure displayed is the API answer page_stack.MEANINGS pins to
    its name, under the pinned label or headings."""
    shown = await displayed(driver)
    async with (
        httpx.AsyncClient(base_url=page.metrics.url, timeout=30) as metrics,
        httpx.AsyncClient(base_url=page.queue.url, timeout=30) as queue,
    ):
        answers = Answers(metrics, queue)
        assert await mismatches(shown, answers, page.days[-1]) == []
    assert len(shown) > 100


async def test_the_browser_shows_the_apis_figures_and_refreshes_them(
    page: PageStack, browser: webdriver.Chrome
) -> None:
    await run(browser.get, f"{page.metrics.url}/?refresh=1")
    await until(
        browser,
        "return document.querySelectorAll('.uplot canvas').length === 3",
        "the three charts drawn",
    )

    await agree_with_the_api(browser, page)
    shown = await displayed(browser)
    assert shown["as-of"].text == "Saturday 5 December 2026, 12:00"
    assert shown[f"pool-penetration:{WEB}:{page.days[0]}"].text == "77.8 %"
    assert shown["floor:agents:busy"].text == "1"
    # The whole page in one picture: the window grows to the page's height
    # plus what the window itself takes (its frame, in headless mode too).
    height, frame = await run(
        browser.execute_script,
        "return [document.documentElement.scrollHeight,"
        " window.outerHeight - window.innerHeight]",
    )
    await run(browser.set_window_size, 1400, height + frame)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert await run(browser.save_screenshot, str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 20_000

    # F, top of the below-target list, gets its call; the page picks it up
    # at its next refresh, in place (the marker survives: no reload).
    await run(browser.execute_script, "window.stillThisPage = true")
    script = page.script
    script.pool, script.source = PARTNERS, GOOGLE
    script.clock.advance(dt.timedelta(minutes=5))
    script.call(page.leads["F"], script.clock.now(), attempt=1)
    await script.apply()
    await until(
        browser,
        "return document.querySelector(\"[data-figure='as-of']\").innerText"
        " === 'Saturday 5 December 2026, 12:05'",
        "the refreshed page",
    )

    assert await run(browser.execute_script, "return window.stillThisPage === true")
    shown = await displayed(browser)
    assert shown["below-target:0:pool"].text == WEB
    assert "below-target:1:pool" not in shown
    await agree_with_the_api(browser, page)
    await until(
        browser,
        "return document.querySelectorAll('.uplot canvas').length === 3",
        "the charts drawn again",
    )
    severe = [
        entry
        for entry in await run(browser.get_log, "browser")
        if entry["level"] == "SEVERE"
    ]
    assert severe == []
