"""Headless Chromium for the desk's browser tests (a helper module, not a test file).

Billing staff use the desk in a browser, so its end-to-end tests drive a real one: Debian's
``chromium`` with its matching ``chromium-driver`` (``scripts/bootstrap.sh`` installs both), no
driver download at test time. ::

    with browser() as driver:
        login(driver, desk_url, "clerk", password)
        open_unit(driver, encounter_uuid)
        driver.find_element(By.ID, "rerun").click()
        assert "submitted" in text_of(driver, "flash")
        screenshot(driver, tmp_path / "after-rerun.png")

The helpers rely only on the desk's UI contract: the sign-in form (``#username``, ``#password``,
``#sign-in``; the dev OpenID provider's form has the same ids, so :func:`login` works through
either), the signed-in user in ``#who``, the list ``table#units`` with rows
``tr[data-unit-uuid][data-state]`` whose first cell links to the detail, the search ``#q`` +
``#filter``, and on the detail page ``#state``, ``#held-reason``, ``table#lines`` (``tr.line``),
``#rerun`` and ``#flash``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 900)
TIMEOUT = 10.0


@contextlib.contextmanager
def browser(*, window: tuple[int, int] = WINDOW, page_load_seconds: float = 30.0) -> Iterator[WebDriver]:
    """A headless Chromium WebDriver, quit on exit (also when the test fails)."""
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not binary.exists():
            raise RuntimeError(f"{binary} not found: apt-get install {package} (scripts/bootstrap.sh does)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        # tests run as root (and in containers without user namespaces), where Chromium's sandbox
        # cannot start; the pages are the desk's own, on loopback
        "--no-sandbox",
        "--disable-dev-shm-usage",  # /dev/shm is 64 MB in containers: renderers crash on big pages
        f"--window-size={window[0]},{window[1]}",
        "--lang=en-US",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        driver.set_page_load_timeout(page_load_seconds)
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, element_id: str, timeout: float = TIMEOUT) -> WebElement:
    """The element with ``element_id`` once it is on the page (TimeoutException otherwise)."""
    found: WebElement = WebDriverWait(driver, timeout).until(
        expected_conditions.presence_of_element_located((By.ID, element_id))
    )
    return found


def text_of(driver: WebDriver, element_id: str, timeout: float = TIMEOUT) -> str:
    return wait_for(driver, element_id, timeout).text.strip()


def login(driver: WebDriver, base_url: str, user: str, password: str, *, timeout: float = TIMEOUT) -> str:
    """Sign in from the desk's front page (its own form or, redirected, the OpenID provider's);
    returns what ``#who`` shows once signed in."""
    driver.get(base_url.rstrip("/") + "/")
    name = wait_for(driver, "username", timeout)
    name.clear()
    name.send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "sign-in").click()
    return text_of(driver, "who", timeout)


def screenshot(driver: WebDriver, path: Path | str) -> Path:
    """Save what the window shows as PNG (folders made as needed); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(target)):
        raise RuntimeError(f"screenshot to {target} failed")
    return target


def unit_rows(driver: WebDriver) -> dict[str, str]:
    """The list page's units: uuid -> ledger state, in page order."""
    table = wait_for(driver, "units")
    rows = table.find_elements(By.CSS_SELECTOR, "tr[data-unit-uuid]")
    return {str(r.get_attribute("data-unit-uuid")): str(r.get_attribute("data-state")) for r in rows}


def search(driver: WebDriver, query: str) -> dict[str, str]:
    """Filter the list (``#q`` + ``#filter``); returns the rows shown afterwards."""
    box = wait_for(driver, "q")
    box.clear()
    box.send_keys(query)
    old = driver.find_element(By.ID, "units")
    driver.find_element(By.ID, "filter").click()
    with contextlib.suppress(TimeoutException):  # a form submit reloads the list; a script may not
        WebDriverWait(driver, 3).until(expected_conditions.staleness_of(old))
    return unit_rows(driver)


def open_unit(driver: WebDriver, unit_uuid: str) -> str:
    """Follow the link in the first cell of the unit's row; returns the detail page's ``#state``."""
    row = wait_for(driver, "units").find_element(By.CSS_SELECTOR, f'tr[data-unit-uuid="{unit_uuid}"]')
    row.find_element(By.CSS_SELECTOR, "td:first-child a").click()
    return text_of(driver, "state")


def detail_lines(driver: WebDriver) -> list[str]:
    """The text of each claim line on the detail page (``table#lines tr.line``)."""
    return [r.text.strip() for r in wait_for(driver, "lines").find_elements(By.CSS_SELECTOR, "tr.line")]
